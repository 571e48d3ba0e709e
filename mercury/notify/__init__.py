"""Notifications: mercure's RECEIVED, COMPLETED and ERROR events per rule, delivered by
webhook and e-mail with retries, every attempt journaled."""
