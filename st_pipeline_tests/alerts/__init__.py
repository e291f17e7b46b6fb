"""Alerting: real HTTP and SMTP receivers on 127.0.0.1, incidents in SQLite."""
