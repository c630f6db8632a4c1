"""The Pulumi program of mnist-platform: one component per target."""
