"""GET /metrics: Prometheus metrics read from the index at scrape time.

A custom collector queries the index on every scrape, so any number of mercury processes
(receivers, dispatchers, web services on several machines) are described by one scrape
of any web service, without shared memory. Counters are totals over the rows the index
still holds: when retention removes old rows they drop, which Prometheus treats as a
counter reset. Latency distributions cover the last hour (WINDOW) and are exposed as
gauge histograms (they describe a window, they are not cumulative).
"""

from __future__ import annotations

import bisect
import math
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mercury.store.delivery_models import JobAttemptRow, TargetStateRow
from mercury.store.models import EventRow, InstanceRow, JobRow, SeriesRow
from mercury.store.process_models import ModuleRunRow
from mercury.store.web_models import ConfigVersionRow
from mercury.web.context import WebContext
from mercury.web.timeutil import aware

WINDOW = timedelta(hours=1)
BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
MAX_SAMPLES = 20000


def _histogram(
    family: GaugeHistogramMetricFamily, labels: list[str], values: Sequence[float]
) -> None:
    counts = [0] * (len(BUCKETS) + 1)
    for value in values:
        counts[bisect.bisect_left(BUCKETS, value)] += 1
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip([*BUCKETS, math.inf], counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
    family.add_metric(labels, cumulative, gsum_value=sum(values))


class IndexCollector(Collector):
    def __init__(self, context: WebContext) -> None:
        self.context = context

    def describe(self) -> Iterable[Metric]:
        return []  # unknown until scraped; keeps registration from querying the index

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("mercury_index_up", "1 when the index answered this scrape.")
        try:
            with self.context.sessions() as session:
                families = list(self._families(session, self.context.clock()))
        except Exception:
            families = []
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield up
        yield from families
        yield from self._spool()
        took = GaugeMetricFamily("mercury_scrape_seconds", "Time taken to read these metrics.")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _spool(self) -> Iterator[Metric]:
        storage = self.context.config.storage
        free = GaugeMetricFamily("mercury_spool_free_bytes", "Free bytes on the spool's disk.")
        try:
            free.add_metric([], shutil.disk_usage(storage.spool).free)
        except OSError:
            return
        yield free
        reserve = GaugeMetricFamily(
            "mercury_spool_reserve_bytes", "Free space the receiver keeps (storage.reserve_mb)."
        )
        reserve.add_metric([], storage.reserve_mb * 2**20)
        yield reserve

    def _families(self, session: Session, now: datetime) -> Iterator[Metric]:
        yield from self._received(session)
        yield from self._jobs(session, now)
        yield from self._targets(session)
        yield from self._modules(session, now)
        yield from self._latencies(session, now)
        version = session.scalar(select(func.max(ConfigVersionRow.version)))
        config = GaugeMetricFamily(
            "mercury_config_version", "Newest configuration version in the index."
        )
        config.add_metric([], int(version or 0))
        yield config

    def _received(self, session: Session) -> Iterator[Metric]:
        instances, size, duplicates, completed = session.execute(
            select(
                func.coalesce(func.sum(SeriesRow.instance_count), 0),
                func.coalesce(func.sum(SeriesRow.bytes), 0),
                func.coalesce(func.sum(SeriesRow.duplicate_count), 0),
                func.count(SeriesRow.completed_at),
            )
        ).one()
        for name, doc, value in (
            ("mercury_instances_received", "Instances received (in the index).", instances),
            ("mercury_received_bytes", "Bytes of instances received.", size),
            ("mercury_duplicates_received", "Instances received again.", duplicates),
            ("mercury_series_completed", "Series found complete by the router.", completed),
        ):
            counter = CounterMetricFamily(name, doc)
            counter.add_metric([], float(value))
            yield counter
        by_state = GaugeMetricFamily("mercury_series", "Series by state.", labels=["state"])
        for state, count in session.execute(
            select(SeriesRow.state, func.count()).group_by(SeriesRow.state)
        ):
            by_state.add_metric([state], count)
        yield by_state
        backlog = GaugeMetricFamily(
            "mercury_router_backlog_instances", "Instances not yet taken into a routing decision."
        )
        backlog.add_metric(
            [],
            session.scalar(
                select(func.count()).select_from(InstanceRow).where(InstanceRow.route_round == 0)
            )
            or 0,
        )
        yield backlog

    def _jobs(self, session: Session, now: datetime) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "mercury_jobs", "Jobs by kind and state.", labels=["kind", "state"]
        )
        for kind, state, count in session.execute(
            select(JobRow.kind, JobRow.state, func.count()).group_by(JobRow.kind, JobRow.state)
        ):
            jobs.add_metric([kind, state], count)
        yield jobs
        depth = GaugeMetricFamily(
            "mercury_queue_depth",
            "Queued jobs due now, by kind (waiting for a worker).",
            labels=["kind"],
        )
        for kind, count in session.execute(
            select(JobRow.kind, func.count())
            .where(JobRow.state == "queued", JobRow.next_attempt_at <= now)
            .group_by(JobRow.kind)
        ):
            depth.add_metric([kind], count)
        yield depth

    def _targets(self, session: Session) -> Iterator[Metric]:
        sent = CounterMetricFamily(
            "mercury_target_instances_sent", "Instances a target accepted.", labels=["target"]
        )
        failed = CounterMetricFamily(
            "mercury_target_instances_failed",
            "Instances a target refused or that failed.",
            labels=["target"],
        )
        for target, ok, bad in session.execute(
            select(
                JobAttemptRow.target,
                func.coalesce(func.sum(JobAttemptRow.sent + JobAttemptRow.warnings), 0),
                func.coalesce(func.sum(JobAttemptRow.failed), 0),
            ).group_by(JobAttemptRow.target)
        ):
            sent.add_metric([target], float(ok))
            failed.add_metric([target], float(bad))
        yield sent
        yield failed
        attempts = CounterMetricFamily(
            "mercury_target_attempts",
            "Send attempts by target and outcome.",
            labels=["target", "outcome"],
        )
        for target, outcome, count in session.execute(
            select(JobAttemptRow.target, JobAttemptRow.outcome, func.count()).group_by(
                JobAttemptRow.target, JobAttemptRow.outcome
            )
        ):
            attempts.add_metric([target, outcome], count)
        yield attempts
        states = {row.name: row for row in session.scalars(select(TargetStateRow))}
        names = sorted(set(self.context.config.targets) | set(states))
        down = GaugeMetricFamily(
            "mercury_target_down", "1 when the target's circuit is open.", labels=["target"]
        )
        held = GaugeMetricFamily("mercury_target_held", "1 when held by hand.", labels=["target"])
        failures = GaugeMetricFamily(
            "mercury_target_consecutive_failures", "Failures in a row.", labels=["target"]
        )
        for name in names:
            row = states.get(name)
            down.add_metric([name], 1 if row and row.circuit == "open" else 0)
            held.add_metric([name], 1 if row and row.held else 0)
            failures.add_metric([name], row.consecutive_failures if row else 0)
        yield down
        yield held
        yield failures

    def _modules(self, session: Session, now: datetime) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "mercury_module_runs", "Module runs by module and status.", labels=["module", "status"]
        )
        for module, status, count in session.execute(
            select(ModuleRunRow.module, ModuleRunRow.status, func.count()).group_by(
                ModuleRunRow.module, ModuleRunRow.status
            )
        ):
            runs.add_metric([module, status], count)
        yield runs
        seconds: dict[str, list[float]] = {}
        for module, began, ended in session.execute(
            select(ModuleRunRow.module, ModuleRunRow.started_at, ModuleRunRow.ended_at)
            .where(ModuleRunRow.ended_at >= now - WINDOW)
            .limit(MAX_SAMPLES)
        ):
            if ended is not None:
                seconds.setdefault(module, []).append((aware(ended) - aware(began)).total_seconds())
        family = GaugeHistogramMetricFamily(
            "mercury_module_run_seconds",
            "Run time of module runs that ended in the last hour.",
            labels=["module"],
        )
        for module, values in sorted(seconds.items()):
            _histogram(family, [module], values)
        yield family

    def _latencies(self, session: Session, now: datetime) -> Iterator[Metric]:
        since = now - WINDOW
        stages: dict[str, list[float]] = {
            "completion": [],
            "processing": [],
            "dispatch": [],
            "end_to_end": [],
        }
        for completed, last in session.execute(
            select(SeriesRow.completed_at, SeriesRow.last_received_at)
            .where(SeriesRow.completed_at >= since)
            .limit(MAX_SAMPLES)
        ):
            if completed is None:
                continue
            stages["completion"].append(max(0.0, (aware(completed) - aware(last)).total_seconds()))
        finished = list(
            session.execute(
                select(EventRow.time, EventRow.stage, EventRow.series_uid, EventRow.details)
                .where(
                    EventRow.time >= since,
                    EventRow.kind == "job.succeeded",
                    EventRow.stage.in_(("process", "dispatch")),
                )
                .limit(MAX_SAMPLES)
            )
        )
        job_ids = [
            str(d.get("job")) for _, _, _, d in finished if isinstance(d, dict) and d.get("job")
        ]
        created = _created(session, job_ids)
        first = _first_received(
            session, [s for _, stage, s, _ in finished if s and stage == "dispatch"]
        )
        for moment, stage, series_uid, details in finished:
            job = details.get("job") if isinstance(details, dict) else None
            when = aware(moment)
            if job in created:
                name = "processing" if stage == "process" else "dispatch"
                stages[name].append(max(0.0, (when - created[job]).total_seconds()))
            if stage == "dispatch" and series_uid in first:
                stages["end_to_end"].append(max(0.0, (when - first[series_uid]).total_seconds()))
        family = GaugeHistogramMetricFamily(
            "mercury_stage_latency_seconds",
            "Seconds per stage over the last hour: completion (last image to complete), "
            "processing and dispatch (job created to succeeded), end_to_end (first image "
            "received to delivered).",
            labels=["stage"],
        )
        for stage, values in stages.items():
            _histogram(family, [stage], values)
        yield family
        recent = GaugeMetricFamily(
            "mercury_events_last_hour",
            "Journal entries of the last hour by severity.",
            labels=["severity"],
        )
        for severity, count in session.execute(
            select(EventRow.severity, func.count())
            .where(EventRow.time >= since)
            .group_by(EventRow.severity)
        ):
            recent.add_metric([severity], count)
        yield recent


def _created(session: Session, job_ids: list[str]) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        for job_id, created in session.execute(
            select(JobRow.id, JobRow.created_at).where(JobRow.id.in_(chunk))
        ):
            found[job_id] = aware(created)
    return found


def _first_received(session: Session, series: list[str]) -> dict[str, datetime]:
    unique = sorted(set(series))
    found: dict[str, datetime] = {}
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        for uid, first in session.execute(
            select(SeriesRow.series_uid, SeriesRow.first_received_at).where(
                SeriesRow.series_uid.in_(chunk)
            )
        ):
            found[uid] = aware(first)
    return found


router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (no authentication)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    registry = request.app.state.metrics
    assert isinstance(registry, CollectorRegistry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def make_registry(context: WebContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(context))
    return registry
