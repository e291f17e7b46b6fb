"""Tenant registry and encrypted credential store."""
