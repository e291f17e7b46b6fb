"""The Dagster layer: partitions, resources and assets built from the plain-Python layers."""
