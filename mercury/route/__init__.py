"""Routing: decide when a series or study is complete and what happens to it."""
