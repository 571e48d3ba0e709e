"""Sections for running mercury day to day: the web server and API, retention."""

from __future__ import annotations

from pydantic import Field

from mercury.config.base import Seconds, Secret, Section


class WebConfig(Section):
    """The web interface and REST API (`mercury serve` runs them as the `web` service)."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port.")
    session_secret: Secret | None = Field(
        default=None,
        description="Key that signs session cookies; null: a random key kept in the index "
        "(sessions then survive restarts of this installation).",
    )
    session_lifetime: Seconds = Field(
        default=8 * 3600, gt=0, description="Seconds a login stays valid without activity."
    )
    secure_cookies: bool = Field(
        default=False,
        description="Mark cookies Secure (only sent over https); turn on behind a TLS proxy.",
    )
    login_attempts: int = Field(
        default=5, ge=1, description="Failed logins per user and address before a pause."
    )
    login_pause: Seconds = Field(
        default=300, gt=0, description="Seconds logins are refused after too many failures."
    )


class RetentionConfig(Section):
    """How long finished work is kept, by outcome; an emergency clean when the disk fills."""

    success: Seconds | None = Field(
        default=None,
        ge=0,
        description="Seconds the images of fully delivered/processed series are kept; null "
        "uses timings.retention (mercure's, 3 days).",
    )
    discard: Seconds = Field(
        default=86400, ge=0, description="Seconds the images of discarded series are kept."
    )
    error: Seconds = Field(
        default=14 * 86400,
        ge=0,
        description="Seconds the images of series with a failed job are kept (for a retry).",
    )
    index_rows: Seconds = Field(
        default=90 * 86400,
        ge=0,
        description="Seconds index rows and the journal of cleaned series are kept after their "
        "images are gone.",
    )
    offpeak_only: bool = Field(
        default=False,
        description="Clean only in the off-peak window (the emergency clean runs whenever needed).",
    )
