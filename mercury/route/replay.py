"""Replay: what a configuration's rules would decide for series already in the index,
compared with what was decided when they were routed. Reads the index, never writes it.

For each series received in the window the rules are evaluated as the router evaluates
them (the first image's tags, every distinct tag set for every_instance rules) and the jobs
planned as the router plans them; the series' first decision and the jobs it created (and,
for study rules, the jobs of the study decisions they led to) are what happened before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, select
from sqlalchemy.engine import make_url

from mercury.config.rules import Rule
from mercury.route.completion import aware
from mercury.route.planner import plan_jobs
from mercury.route.ruleset import RuleSet
from mercury.store.jobs import JobSpec
from mercury.store.models import DecisionRow, JobRow, SeriesRow, SeriesVariantRow

_RELATIVE = re.compile(r"^\s*(\d+)\s*([wdhm])\s*$", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_CHUNK = 500  # identifiers per IN (...) query


class ReplayError(Exception):
    """The replay cannot run; the message says why and what to do."""


# -- the time window -------------------------------------------------------------------------


def parse_moment(text: str, *, now: datetime, end_of_day: bool = False) -> datetime:
    """A point in time, in UTC, from ``YYYY-MM-DD``, an ISO date and time (local time unless
    it carries an offset) or a relative ``7d`` / ``24h`` / ``30m`` / ``2w`` before ``now``.
    A bare date is the start of that day, or its end with ``end_of_day``."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        return (now - timedelta(**{_UNITS[unit]: amount})).astimezone(UTC)
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        moment = datetime.combine(day, time.max if end_of_day else time.min)
        return moment.astimezone().astimezone(UTC)  # a naive moment is local time
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date: use YYYY-MM-DD, an ISO date and time such as "
            "2026-11-25T08:00 or 2026-11-25T08:00+01:00, or a relative time such as 7d, "
            "24h or 30m"
        ) from None
    return (parsed if parsed.tzinfo else parsed.astimezone()).astimezone(UTC)


# -- opening the index without changing it ---------------------------------------------------


def check_database_exists(url: str) -> None:
    """For SQLite, refuse a missing file (opening it would create an empty one)."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise ReplayError(
            f"the index database {database} does not exist: has mercury received anything "
            "with this configuration? Check storage.database."
        )


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection that the database itself keeps from writing (SQLite query_only, a
    PostgreSQL read-only transaction), rolled back at the end."""
    try:
        conn = engine.connect()
    except Exception as exc:
        raise ReplayError(
            f"cannot open the index database {engine.url.render_as_string()}: {exc}. "
            "Check storage.database and that the database server is running."
        ) from exc
    sqlite = engine.dialect.name == "sqlite"
    try:
        if sqlite:
            conn.exec_driver_sql("PRAGMA query_only = ON")
        else:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        yield conn
    finally:
        try:
            conn.rollback()
            if sqlite:
                conn.exec_driver_sql("PRAGMA query_only = OFF")
        finally:
            conn.close()


def _tables(conn: Connection) -> set[str]:
    tables = set(inspect(conn).get_table_names())
    missing = {"series", "decisions", "jobs"} - tables
    if missing:
        raise ReplayError(
            "the index database is not initialised (no "
            f"{', '.join(sorted(missing))} table): start mercury serve with this "
            "configuration once, or run mercury init"
        )
    return tables


# -- outcomes ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class JobOutcome:
    """A job as compared: what it does, not which rule the router credited it to (a target
    named by several rules is one dispatch job)."""

    scope: str
    kind: str
    target: str = ""
    rule: str = ""  # process and notify jobs are one per rule
    modules: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        *,
        kind: str,
        scope: str,
        rule: str,
        target: str | None,
        modules: Sequence[str],
        targets: Sequence[str],
    ) -> JobOutcome:
        if kind == "dispatch":
            return cls(scope, kind, target=target or "")
        if kind == "process":
            return cls(scope, kind, rule=rule, modules=tuple(modules), targets=tuple(targets))
        return cls(scope, kind, rule=rule)

    def describe(self) -> str:
        where = " (study)" if self.scope == "study" else ""
        if self.kind == "dispatch":
            return f"dispatch to {self.target}{where}"
        if self.kind == "process":
            then = f", then to {', '.join(self.targets)}" if self.targets else ""
            return f"process by {self.rule}: {' > '.join(self.modules)}{then}{where}"
        return f"{self.kind} by {self.rule}{where}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "scope": self.scope}
        if self.kind == "dispatch":
            data["target"] = self.target
        else:
            data["rule"] = self.rule
        if self.kind == "process":
            data["modules"] = list(self.modules)
            data["targets"] = list(self.targets)
        return data


@dataclass(frozen=True)
class Outcome:
    """What routing decided (or would decide) for one series."""

    triggered: tuple[str, ...]
    discarded: bool
    discarded_by: str | None
    jobs: tuple[JobOutcome, ...]
    study_rules: tuple[str, ...] = ()
    # Before only: study rules whose study decision is not known (the study is still
    # waiting, or was force-completed without jobs); their jobs are left out on both sides.
    study_unresolved: tuple[str, ...] = ()
    variant_rules: tuple[str, ...] = ()  # every_instance rules fired by a later image

    def to_dict(self) -> dict[str, Any]:
        return {
            "triggered": list(self.triggered),
            "discarded": self.discarded,
            "discarded_by": self.discarded_by,
            "jobs": [job.to_dict() for job in self.jobs],
            "study_rules": list(self.study_rules),
            "study_unresolved": list(self.study_unresolved),
        }


@dataclass(frozen=True)
class SeriesReplay:
    series_uid: str
    study_uid: str
    description: str
    modality: str
    last_received_at: datetime
    before: Outcome | None
    after: Outcome
    changes: tuple[str, ...]

    @property
    def status(self) -> str:
        if self.before is None:
            return "not yet routed"
        return "changed" if self.changes else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "series_uid": self.series_uid,
            "study_uid": self.study_uid,
            "description": self.description,
            "modality": self.modality,
            "last_received_at": aware(self.last_received_at).isoformat(),
            "status": self.status,
            "before": self.before.to_dict() if self.before is not None else None,
            "after": self.after.to_dict(),
            "changes": list(self.changes),
        }


@dataclass
class ReplayReport:
    since: datetime
    until: datetime | None
    series: list[SeriesReplay] = field(default_factory=list)

    @property
    def changed(self) -> list[SeriesReplay]:
        return [s for s in self.series if s.status == "changed"]

    @property
    def not_routed(self) -> list[SeriesReplay]:
        return [s for s in self.series if s.status == "not yet routed"]

    def summary(self) -> dict[str, Any]:
        changed = len(self.changed)
        not_routed = len(self.not_routed)
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "replayed": len(self.series),
            "changed": changed,
            "unchanged": len(self.series) - changed - not_routed,
            "not_yet_routed": not_routed,
        }

    def summary_line(self) -> str:
        s = self.summary()
        line = (
            f"{s['replayed']} series replayed, {s['changed']} would change, "
            f"{s['unchanged']} unchanged"
        )
        if s["not_yet_routed"]:
            line += f", {s['not_yet_routed']} not yet routed"
        return line


# -- the replay ------------------------------------------------------------------------------


def replay(
    engine: Engine, rules: RuleSet, *, since: datetime, until: datetime | None = None
) -> ReplayReport:
    """Replay ``rules`` over the series last received in [since, until]; read-only."""
    report = ReplayReport(since=since, until=until)
    with read_only(engine) as conn:
        tables = _tables(conn)
        query = select(SeriesRow).where(SeriesRow.last_received_at >= since.astimezone(UTC))
        if until is not None:
            query = query.where(SeriesRow.last_received_at <= until.astimezone(UTC))
        series = list(conn.execute(query.order_by(SeriesRow.last_received_at)))
        uids = [row.series_uid for row in series]
        variants = (
            _variants(conn, uids) if rules.uses_variants and "series_variants" in tables else {}
        )
        before = _before(conn, series)
    for row in series:
        earlier = before.get(row.series_uid)
        after = _after(rules, row, variants.get(row.series_uid, []), earlier)
        changes = _changes(rules, earlier, after) if earlier is not None else ()
        report.series.append(
            SeriesReplay(
                series_uid=row.series_uid,
                study_uid=row.study_uid,
                description=row.series_description,
                modality=row.modality,
                last_received_at=row.last_received_at,
                before=earlier,
                after=after,
                changes=tuple(changes),
            )
        )
    return report


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _variants(conn: Connection, uids: Sequence[str]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {}
    for chunk in _chunks(uids):
        rows = conn.execute(
            select(SeriesVariantRow.series_uid, SeriesVariantRow.tags)
            .where(SeriesVariantRow.series_uid.in_(chunk))
            .order_by(SeriesVariantRow.received_at, SeriesVariantRow.digest)
        )
        for series_uid, tags in rows:
            found.setdefault(series_uid, []).append(dict(tags))
    return found


def _before(conn: Connection, series: Sequence[Any]) -> dict[str, Outcome]:
    """Each series' first decision and the jobs that came of it."""
    uids = [row.series_uid for row in series]
    first: dict[str, Any] = {}
    for chunk in _chunks(uids):
        rows = conn.execute(
            select(DecisionRow)
            .where(DecisionRow.scope == "series", DecisionRow.series_uid.in_(chunk))
            .order_by(DecisionRow.round, DecisionRow.id)
        )
        for decision in rows:
            first.setdefault(decision.series_uid, decision)
    studies = sorted({d.study_uid for d in first.values() if d.details.get("study_rules")})
    study_decisions: dict[str, list[Any]] = {}
    for chunk in _chunks(studies):
        rows = conn.execute(
            select(DecisionRow)
            .where(DecisionRow.scope == "study", DecisionRow.study_uid.in_(chunk))
            .order_by(DecisionRow.id)
        )
        for decision in rows:
            study_decisions.setdefault(decision.study_uid, []).append(decision)
    decision_ids = [d.id for d in first.values()]
    decision_ids += [d.id for ds in study_decisions.values() for d in ds]
    jobs: dict[int, list[Any]] = {}
    for start in range(0, len(decision_ids), _CHUNK):
        rows = conn.execute(
            select(JobRow).where(JobRow.decision_id.in_(decision_ids[start : start + _CHUNK]))
        )
        for job in rows:
            jobs.setdefault(job.decision_id, []).append(job)

    def outcomes(rows: Iterable[Any]) -> list[JobOutcome]:
        return [
            JobOutcome.of(
                kind=job.kind,
                scope=job.scope,
                rule=job.rule,
                target=job.target,
                modules=job.modules,
                targets=job.targets,
            )
            for job in rows
        ]

    result: dict[str, Outcome] = {}
    for series_uid, decision in first.items():
        triggered = tuple(decision.triggered)
        found = outcomes(jobs.get(decision.id, []))
        study_rules = tuple(decision.details.get("study_rules", []))
        unresolved: list[str] = []
        for name in study_rules:
            resolved = [
                d
                for d in study_decisions.get(decision.study_uid, [])
                if name in d.triggered and aware(d.decided_at) >= aware(decision.decided_at)
            ]
            if not resolved:
                unresolved.append(name)
                continue
            found.extend(
                outcomes(job for job in jobs.get(resolved[0].id, []) if job.rule in study_rules)
            )
        result[series_uid] = Outcome(
            triggered=triggered,
            discarded=decision.discarded,
            discarded_by=triggered[0] if decision.discarded and triggered else None,
            jobs=tuple(sorted(set(found))),
            study_rules=study_rules,
            study_unresolved=tuple(unresolved),
            variant_rules=tuple(
                name
                for name, info in decision.details.get("rules", {}).items()
                if info.get("variant", {}).get("index", 1) > 1
            ),
        )
    return result


def _after(
    rules: RuleSet, row: Any, variants: Sequence[dict[str, str]], before: Outcome | None
) -> Outcome:
    """What the router would decide now, for the same series."""
    selection = rules.select(dict(row.tags), variants)
    fired: list[tuple[str, Rule]] = [
        (name, rules.rule(name))
        for name in selection.triggered
        if rules.rule(name).action != "discard"
    ]
    specs: list[JobSpec] = []
    study_rules: list[str] = []
    if not selection.discarded:
        common = {"study_uid": row.study_uid, "series_uid": row.series_uid, "instances": ()}
        specs += plan_jobs(
            [(n, r) for n, r in fired if r.action_trigger == "series"], scope="series", **common
        )
        study_rules = [n for n, r in fired if r.action_trigger == "study"]
        unknown = set(before.study_unresolved) if before is not None else set()
        specs += plan_jobs(
            [(n, r) for n, r in fired if r.action_trigger == "study" and n not in unknown],
            scope="study",
            **common,
        )
    jobs = {
        JobOutcome.of(
            kind=spec.kind,
            scope=spec.scope,
            rule=spec.rule,
            target=spec.target,
            modules=spec.modules,
            targets=spec.targets,
        )
        for spec in specs
    }
    return Outcome(
        triggered=selection.triggered,
        discarded=selection.discarded,
        discarded_by=selection.discarded_by,
        jobs=tuple(sorted(jobs)),
        study_rules=tuple(study_rules),
        variant_rules=tuple(name for name, i in selection.matched_variants.items() if i > 0),
    )


def _changes(rules: RuleSet, before: Outcome, after: Outcome) -> list[str]:
    """What would be different, in words; empty when the outcome is the same."""
    changes: list[str] = []
    for name in after.triggered:
        if name not in before.triggered:
            how = " (on a later image: every_instance)" if name in after.variant_rules else ""
            study = " (waits for the study)" if name in after.study_rules else ""
            changes.append(f"rule {name} would fire{how}{study}")
    for name in before.triggered:
        if name not in after.triggered:
            gone = "" if name in rules.config.rules else " (no longer in the configuration)"
            changes.append(f"rule {name} would no longer fire{gone}")
    if after.discarded and not before.discarded:
        why = f"by rule {after.discarded_by}" if after.discarded_by else "no rule would fire"
        changes.append(f"would be discarded ({why})")
    elif before.discarded and not after.discarded:
        changes.append("would no longer be discarded")
    elif after.discarded and before.discarded and after.discarded_by != before.discarded_by:
        changes.append(
            f"discarded by {after.discarded_by or 'no rule firing'} instead of "
            f"{before.discarded_by or 'no rule firing'}"
        )
    for job in after.jobs:
        if job not in before.jobs:
            changes.append(f"new job: {job.describe()}")
    for job in before.jobs:
        if job not in after.jobs:
            changes.append(f"no job: {job.describe()}")
    for name in after.study_rules:
        if name in before.triggered and name not in before.study_rules:
            changes.append(f"rule {name} would wait for the study")
    for name in before.study_rules:
        if name in after.triggered and name not in after.study_rules:
            changes.append(f"rule {name} would act on the series, not the study")
    return changes
