"""Retention and the emergency clean: what finished work is removed from the spool, when."""
