"""Dispatch: send what routing and processing decided to send, to every kind of target."""
