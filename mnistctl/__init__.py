"""mnistctl: the command line and the endpoint clients of mnist-platform."""
