"""Dynamic providers where no Pulumi provider covers the resource."""
