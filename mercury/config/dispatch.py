"""How the dispatcher sends: workers, per-target parallelism, retries, circuit breaker."""

from __future__ import annotations

from pydantic import Field

from mercury.config.base import Seconds, Section


class RetryPolicy(Section):
    """Exponential backoff with jitter. Unset fields fall back to the global policy, and
    the global ``cap`` and ``max_retries`` to mercure's ``retry_delay`` and ``retry_max``."""

    base: Seconds | None = Field(
        default=None, gt=0, description="Wait before the first retry (default 10 s)."
    )
    factor: float | None = Field(
        default=None, ge=1, description="Each retry waits this much longer (default 2)."
    )
    cap: Seconds | None = Field(
        default=None,
        gt=0,
        description="Longest wait between attempts; null uses timings.retry_delay (mercure).",
    )
    jitter: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Random spread of each wait, as a fraction (default 0.2: +-20%).",
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        description="Retries after the first attempt before the job fails; null uses "
        "timings.retry_max (mercure).",
    )
    max_age: Seconds | None = Field(
        default=None,
        gt=0,
        description="Give up retrying once the job is this old, whatever the retry count; "
        "null means no age limit.",
    )


class DispatchConfig(Section):
    """The dispatcher: how many jobs at once, how it retries, when it stops trying a target."""

    workers: int = Field(default=8, ge=1, description="Jobs sent at the same time, in all.")
    max_parallel_per_target: int = Field(
        default=2,
        ge=1,
        description="Jobs sent to one target at the same time (each on its own association "
        "or connection); a target's own max_parallel overrides it.",
    )
    lease: Seconds = Field(
        default=60,
        ge=1,
        description="A job's lease; renewed while it is sent. A dispatcher that dies holds its "
        "jobs at most this long before another takes them over.",
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Retry policy of every target."
    )
    circuit_failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed attempts to reach a target after which it is marked "
        "down; its jobs then wait without using up their retries.",
    )
    circuit_probe_interval: Seconds = Field(
        default=30, gt=0, description="How often a target marked down is tested again."
    )
    storage_commitment_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port where mercury takes storage commitment results from peers that answer "
        "on a new association (Orthanc does): declare it, with our AE title, in the peer; 0 "
        "picks a free port per send, which only works for peers answering on the same "
        "association.",
    )
