"""The retry policy: exponential growth, cap, jitter bounds, max retries and max age, and
how mercure's retry_delay/retry_max and per-target overrides resolve."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from mercury.config.load import config_from_data
from mercury.dispatch.retry import Backoff, resolve

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def backoff(**overrides: object) -> Backoff:
    values: dict[str, object] = {
        "base": 10.0,
        "factor": 2.0,
        "cap": 100.0,
        "jitter": 0.0,
        "max_retries": 3,
        "max_age": None,
    }
    values.update(overrides)
    return Backoff(**values)  # type: ignore[arg-type]


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = backoff()
    assert [policy.delay(n) for n in range(1, 7)] == [10, 20, 40, 80, 100, 100]


def test_jitter_spreads_delays_within_its_bounds() -> None:
    policy = backoff(jitter=0.2)
    rng = random.Random(7)
    delays = [policy.delay(2, rng) for _ in range(500)]
    assert min(delays) >= 16
    assert max(delays) <= 24
    assert len({round(d, 3) for d in delays}) > 100  # really spread, not constant


def test_gives_up_after_max_retries_or_max_age() -> None:
    policy = backoff(max_retries=2, max_age=3600)
    assert not policy.gives_up(1, T0, T0)
    assert not policy.gives_up(2, T0, T0)
    assert policy.gives_up(3, T0, T0)  # first attempt + 2 retries used
    assert policy.gives_up(1, T0, T0 + timedelta(hours=1))


def _config(**extra: object) -> object:
    data: dict[str, object] = {
        "storage": {"spool": "/tmp/unused", "database": "sqlite://"},
        "targets": {
            "pacs": {"target_type": "dummy"},
            "slow": {"target_type": "dummy", "retry": {"base": 60, "max_retries": 9}},
        },
    }
    data.update(extra)
    return config_from_data(data, source="test.yaml")


def test_mercure_timings_are_the_default_cap_and_retry_count() -> None:
    config = _config(timings={"retry_delay": 300, "retry_max": 4})
    policy = resolve(config, config.targets["pacs"])  # type: ignore[attr-defined]
    assert (policy.base, policy.factor, policy.cap, policy.max_retries) == (10, 2, 300, 4)
    assert policy.max_age is None


def test_target_overrides_global_which_overrides_defaults() -> None:
    config = _config(dispatch={"retry": {"factor": 3, "cap": 50, "max_age": 7200, "jitter": 0}})
    slow = resolve(config, config.targets["slow"])  # type: ignore[attr-defined]
    assert (slow.base, slow.factor, slow.cap, slow.max_retries, slow.max_age) == (
        60,
        3,
        50,
        9,
        7200,
    )
    assert slow.jitter == 0
    pacs = resolve(config, config.targets["pacs"])  # type: ignore[attr-defined]
    assert (pacs.base, pacs.max_retries) == (10, 5)
