"""The training package: datasets, format converters and one trainer per framework."""
