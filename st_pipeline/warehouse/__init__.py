"""The warehouse: raw tables, the bulk upsert loader, and (later) hub tables and sync state."""
