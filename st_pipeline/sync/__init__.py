"""Extraction runs: read a tenant's datasets from ServiceTitan and load them into raw tables."""
