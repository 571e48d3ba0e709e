"""Durable state: the spool (image files) and the index (the database)."""
