"""Exponential backoff with jitter, and when to give up. mercure retries every
``retry_delay`` seconds up to ``retry_max`` times; here those two are the cap and the retry
count of an exponential policy, so an imported configuration keeps its limits."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from mercury.config.dispatch import RetryPolicy
from mercury.config.models import MercuryConfig
from mercury.config.targets import TargetBase

DEFAULT_BASE = 10.0
DEFAULT_FACTOR = 2.0
DEFAULT_JITTER = 0.2


@dataclass(frozen=True)
class Backoff:
    """A fully resolved retry policy for one target."""

    base: float
    factor: float
    cap: float
    jitter: float
    max_retries: int
    max_age: float | None

    def delay(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after attempt number ``failed_attempt`` (1 = the first) failed."""
        raw = min(self.cap, self.base * self.factor ** max(0, failed_attempt - 1))
        if not self.jitter:
            return raw
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return min(self.cap * (1 + self.jitter), raw * spread)

    def gives_up(self, attempts: int, created_at: datetime, now: datetime) -> bool:
        """Whether a job that has made ``attempts`` attempts gets no further one."""
        if attempts > self.max_retries:
            return True
        return self.max_age is not None and now - created_at >= timedelta(seconds=self.max_age)


def resolve(config: MercuryConfig, target: TargetBase | None) -> Backoff:
    """The target's own fields, then dispatch.retry, then the defaults and mercure's timings."""
    layers: list[RetryPolicy] = [config.dispatch.retry]
    if target is not None and target.retry is not None:
        layers.insert(0, target.retry)

    def pick(name: str) -> float | int | None:
        for layer in layers:
            value = getattr(layer, name)
            if value is not None:
                return value  # type: ignore[no-any-return]
        return None

    timings = config.timings
    return Backoff(
        base=float(pick("base") or DEFAULT_BASE),
        factor=float(pick("factor") or DEFAULT_FACTOR),
        cap=float(pick("cap") or timings.retry_delay or DEFAULT_BASE),
        jitter=float(j if (j := pick("jitter")) is not None else DEFAULT_JITTER),
        max_retries=int(r if (r := pick("max_retries")) is not None else timings.retry_max),
        max_age=float(a) if (a := pick("max_age")) is not None else None,
    )
