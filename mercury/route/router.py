"""The router: finds complete series and studies, evaluates the rules and commits, in one
transaction each, the decision, its journal entries and the jobs it creates."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, sessionmaker

from mercury.config.rules import Rule
from mercury.route.completion import (
    SeriesState,
    StudyState,
    series_completion,
    study_completion,
)
from mercury.route.planner import plan_jobs
from mercury.route.ruleset import RuleSet
from mercury.rules import Selection
from mercury.store.jobs import JobSpec, create_jobs
from mercury.store.journal import record
from mercury.store.models import (
    AssociationRow,
    DecisionRow,
    InstanceRow,
    SeriesRow,
    SeriesVariantRow,
    StudyRow,
    utcnow,
)

log = logging.getLogger("mercury.route")

FORCE_REQUESTED = "force_requested"
"""A study's completion_reason while a user's request to complete it now waits for the
next scan (POST /api/studies/{uid}/force-complete): its pending rules proceed at once."""

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Variant:
    """One distinct tag set of a series and the first image that carried it."""

    digest: str
    sop_instance_uid: str
    tags: dict[str, str]


def load_variants(session: Session, series_uid: str) -> list[Variant]:
    """The series' distinct tag sets, in the order they arrived."""
    rows = session.execute(
        select(SeriesVariantRow.digest, SeriesVariantRow.sop_instance_uid, SeriesVariantRow.tags)
        .where(SeriesVariantRow.series_uid == series_uid)
        .order_by(SeriesVariantRow.received_at, SeriesVariantRow.digest)
    )
    return [Variant(digest, uid, dict(tags)) for digest, uid, tags in rows]


def decision_details(
    selection: Selection, variants: Sequence[Variant] = ()
) -> dict[str, dict[str, Any]]:
    """Per rule evaluated: whether it fired, the tags it read, what was missing, its error,
    and for an every_instance rule that fired, the tag set (variant) that made it fire."""
    rules: dict[str, dict[str, Any]] = {}
    for name, outcome in selection.outcomes.items():
        entry: dict[str, Any] = {
            "fired": name in selection.triggered,
            "tags_read": list(outcome.tags_read),
            "missing": list(outcome.missing),
            "error": outcome.error,
        }
        index = selection.matched_variants.get(name)
        if index is not None and index < len(variants):
            variant = variants[index]
            entry["variant"] = {
                "index": index + 1,
                "of": len(variants),
                "digest": variant.digest,
                "sop_instance_uid": variant.sop_instance_uid,
                "values": {tag: variant.tags.get(tag) for tag in outcome.tags_read},
            }
        rules[name] = entry
    return rules


@dataclass
class ScanReport:
    series_routed: list[str] = field(default_factory=list)
    studies_routed: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)


class Router:
    """One pass at a time (:meth:`scan`); the service calls it on a timer."""

    def __init__(self, engine: Engine, rules: RuleSet, *, clock: Clock = utcnow) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.rules = rules
        self.clock = clock
        # series -> (first image's tags, variant digests, selection): evaluated again only
        # when either changes while the series waits for completion.
        self._selections: dict[str, tuple[dict[str, str], tuple[str, ...], Selection]] = {}

    # -- series ----------------------------------------------------------------------------

    def scan(self, limit: int = 500) -> ScanReport:
        report = ScanReport()
        now = self.clock()
        for series_uid in self._series_candidates(limit):
            self._consider_series(series_uid, now, report)
        for study_uid in self._study_candidates(limit):
            self._consider_study(study_uid, now, report)
        return report

    def _series_candidates(self, limit: int) -> list[str]:
        with self._sessions() as session:
            unrouted = (
                select(InstanceRow.series_uid)
                .where(InstanceRow.route_round == 0)
                .distinct()
                .limit(limit)
            )
            return list(session.scalars(unrouted))

    def _selection(
        self, series_uid: str, tags: dict[str, str], variants: list[Variant]
    ) -> Selection:
        digests = tuple(v.digest for v in variants)
        cached = self._selections.get(series_uid)
        if cached is not None and cached[0] == tags and cached[1] == digests:
            return cached[2]
        selection = self.rules.select(tags, [v.tags for v in variants])
        self._selections[series_uid] = (tags, digests, selection)
        return selection

    def _consider_series(self, series_uid: str, now: datetime, report: ScanReport) -> None:
        with self._sessions() as session:
            row = session.get(SeriesRow, series_uid)
            if row is None:  # instance committed, series row in the same transaction: rare
                return
            released = False
            if row.last_association_id:
                association = session.get(AssociationRow, row.last_association_id)
                released = bool(
                    association
                    and association.ended_at is not None
                    and association.close_reason == "released"
                )
            variants = load_variants(session, series_uid) if self.rules.uses_variants else []
            selection = self._selection(series_uid, dict(row.tags), variants)
            state = SeriesState(
                last_received_at=row.last_received_at,
                instance_count=row.instance_count,
                expected_count=row.expected_count,
                association_released=released,
            )
            conditions = self.rules.completion_conditions(selection)
            if row.state != "receiving":
                # Late images: the expected count was reached before, so it says nothing now.
                conditions = conditions - {"expected_count"}
            reason = series_completion(
                state,
                conditions,
                now=now,
                quiet=timedelta(seconds=self.rules.config.timings.series_complete_trigger),
            )
            if reason is None:
                return
            observed = row.last_received_at
        with self._sessions() as session, session.begin():
            row = session.get(SeriesRow, series_uid, with_for_update=True)
            if row is None or row.last_received_at != observed:
                return  # more arrived meanwhile: look again next scan
            self._route_series(session, row, selection, variants, reason, now, report)
        self._selections.pop(series_uid, None)

    def _route_series(
        self,
        session: Session,
        row: SeriesRow,
        selection: Selection,
        variants: Sequence[Variant],
        reason: str,
        now: datetime,
        report: ScanReport,
    ) -> None:
        late = row.state != "receiving"
        new_round = row.route_round + 1
        # Take the unrouted instances into this round; exactly these are "new" (late or first).
        fresh = list(
            session.scalars(
                select(InstanceRow.sop_instance_uid).where(
                    InstanceRow.series_uid == row.series_uid, InstanceRow.route_round == 0
                )
            )
        )
        session.execute(
            update(InstanceRow)
            .where(InstanceRow.series_uid == row.series_uid, InstanceRow.route_round == 0)
            .values(route_round=new_round)
            .execution_options(synchronize_session=False)
        )
        everything: list[str] | None = None

        def all_instances() -> list[str]:
            nonlocal everything
            if everything is None:
                everything = list(
                    session.scalars(
                        select(InstanceRow.sop_instance_uid).where(
                            InstanceRow.series_uid == row.series_uid
                        )
                    )
                )
            return everything

        series_rules: list[tuple[str, Rule]] = []
        study_rules: list[str] = []
        for name in selection.triggered:
            rule = self.rules.rule(name)
            if rule.action == "discard":
                continue
            if rule.action_trigger == "study":
                study_rules.append(name)
            else:
                series_rules.append((name, rule))

        specs: list[JobSpec] = []
        ignored: list[str] = []
        if not selection.discarded:
            groups: dict[str, list[tuple[str, Rule]]] = {}
            for name, rule in series_rules:
                policy: str = rule.late_arrivals if late else "first"
                groups.setdefault(policy, []).append((name, rule))
            for group, members in groups.items():
                if group == "ignore":
                    ignored.extend(name for name, _ in members)
                    continue
                instances = all_instances() if group == "rerun" else fresh
                specs.extend(
                    plan_jobs(
                        members,
                        scope="series",
                        study_uid=row.study_uid,
                        series_uid=row.series_uid,
                        instances=instances,
                    )
                )
            if study_rules:
                self._await_study(session, row.study_uid, study_rules, now)

        details: dict[str, Any] = {
            "rules": decision_details(selection, variants),
            "instances": len(fresh),
            "late": late,
            "late_ignored_rules": ignored,
            "study_rules": study_rules,
        }
        if variants:
            details["variants"] = len(variants)
        decision = DecisionRow(
            decided_at=now,
            scope="series",
            series_uid=row.series_uid,
            study_uid=row.study_uid,
            round=new_round,
            reason=reason,
            triggered=list(selection.triggered),
            discarded=selection.discarded,
            jobs=[],
            details=details,
        )
        session.add(decision)
        session.flush()
        job_ids = create_jobs(session, specs, now=now, decision_id=decision.id)
        decision.jobs = job_ids
        row.route_round = new_round
        row.completed_at = now
        row.completion_reason = reason
        row.state = "discarded" if selection.discarded else "routed"
        self._journal_series(session, row, selection, reason, late, fresh, specs, ignored)
        report.series_routed.append(row.series_uid)
        report.jobs.extend(job_ids)

    def _journal_series(
        self,
        session: Session,
        row: SeriesRow,
        selection: Selection,
        reason: str,
        late: bool,
        fresh: Sequence[str],
        specs: Sequence[JobSpec],
        ignored: Sequence[str],
    ) -> None:
        what = f"{len(fresh)} late instance(s) of series" if late else "series"
        description = row.tags.get("SeriesDescription", "")
        record(
            session,
            stage="route",
            kind="series.completed",
            message=f"{what} {description!r} complete ({reason})",
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            details={"reason": reason, "instances": len(fresh), "late": late},
        )
        if selection.discarded:
            why = (
                f"discarded by rule {selection.discarded_by!r}"
                if selection.discarded_by
                else "discarded: no rule fired"
            )
            record(
                session,
                stage="route",
                kind="series.discarded",
                message=f"series {description!r} {why}",
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={"rule": selection.discarded_by},
            )
            return
        if ignored:
            record(
                session,
                stage="route",
                kind="series.late_ignored",
                severity="warning",
                message=(
                    f"{len(fresh)} late instance(s) of series {description!r} ignored by "
                    f"rule(s) {', '.join(ignored)}"
                ),
                study_uid=row.study_uid,
                series_uid=row.series_uid,
                details={"rules": list(ignored), "instances": list(fresh)[:1000]},
            )
        kinds = ", ".join(
            f"{spec.kind}{' to ' + spec.target if spec.target else ''}" for spec in specs
        )
        record(
            session,
            stage="route",
            kind="series.routed",
            message=(
                f"series {description!r}: rules {', '.join(selection.triggered)} fired; "
                f"{len(specs)} job(s){': ' + kinds if kinds else ''}"
            ),
            study_uid=row.study_uid,
            series_uid=row.series_uid,
            details={"triggered": list(selection.triggered), "errors": dict(selection.errors)},
        )

    # -- studies ---------------------------------------------------------------------------

    def _await_study(
        self, session: Session, study_uid: str, rule_names: list[str], now: datetime
    ) -> None:
        study = session.get(StudyRow, study_uid, with_for_update=True)
        if study is None:
            return
        pending = list(study.pending_rules)
        for name in rule_names:
            if name not in pending:
                pending.append(name)
        study.pending_rules = pending
        if study.state != "receiving":
            study.state = "receiving"  # a late series re-opens a routed study
        if study.completion_reason != FORCE_REQUESTED:
            study.completion_reason = None

    @staticmethod
    def _settle_study(session: Session, study: StudyRow) -> None:
        """A study no rule waits for is routed (or discarded) once every series of it is,
        so it leaves the candidates: hundreds of such studies must not crowd out the
        studies a study rule waits for. A new series re-opens it (the index writer sets it
        receiving again)."""
        states = set(
            session.scalars(select(SeriesRow.state).where(SeriesRow.study_uid == study.study_uid))
        )
        unrouted = session.scalar(
            select(InstanceRow.sop_instance_uid)
            .where(InstanceRow.study_uid == study.study_uid, InstanceRow.route_round == 0)
            .limit(1)
        )
        if not states or "receiving" in states or unrouted is not None:
            return
        study.state = "discarded" if states == {"discarded"} else "routed"

    def _study_candidates(self, limit: int) -> list[str]:
        with self._sessions() as session:
            return list(
                session.scalars(
                    select(StudyRow.study_uid).where(StudyRow.state == "receiving").limit(limit)
                )
            )

    def _consider_study(self, study_uid: str, now: datetime, report: ScanReport) -> None:
        timings = self.rules.config.timings
        with self._sessions() as session, session.begin():
            study = session.get(StudyRow, study_uid, with_for_update=True)
            if study is None or study.state != "receiving":
                return
            if not study.pending_rules:
                self._settle_study(session, study)
                return
            series = list(
                session.execute(
                    select(
                        SeriesRow.series_uid, SeriesRow.series_description, SeriesRow.state
                    ).where(SeriesRow.study_uid == study_uid)
                )
            )
            unrouted = set(
                session.scalars(
                    select(InstanceRow.series_uid)
                    .where(InstanceRow.study_uid == study_uid, InstanceRow.route_round == 0)
                    .distinct()
                )
            )
            state = StudyState(
                first_received_at=study.first_received_at,
                last_received_at=study.last_received_at,
                series_descriptions=tuple(s.series_description for s in series),
                series_pending=sum(
                    1 for s in series if s.state == "receiving" or s.series_uid in unrouted
                ),
            )
            ready: list[tuple[str, Rule]] = []
            forced: dict[str, str] = {}
            for name in study.pending_rules:
                rule = self.rules.config.rules.get(name)
                if rule is None:
                    forced[name] = "removed"
                    continue
                reason = study_completion(
                    state,
                    condition=rule.study_trigger_condition,
                    expression=self.rules.series_expressions.get(name),
                    now=now,
                    quiet=timedelta(seconds=timings.study_complete_trigger),
                    force_after=timedelta(seconds=timings.study_forcecomplete_trigger),
                )
                if reason is None and study.completion_reason == FORCE_REQUESTED:
                    reason = "manual"
                if reason is None:
                    continue
                if reason == "force":
                    action = rule.study_force_completion_action
                    if action == "proceed":
                        ready.append((name, rule))
                    forced[name] = action
                else:
                    ready.append((name, rule))
            if not ready and not forced:
                return
            self._route_study(session, study, ready, forced, now, report)

    def _route_study(
        self,
        session: Session,
        study: StudyRow,
        ready: list[tuple[str, Rule]],
        forced: dict[str, str],
        now: datetime,
        report: ScanReport,
    ) -> None:
        instances = list(
            session.scalars(
                select(InstanceRow.sop_instance_uid).where(InstanceRow.study_uid == study.study_uid)
            )
        )
        specs = plan_jobs(
            ready, scope="study", study_uid=study.study_uid, series_uid=None, instances=instances
        )
        done = {name for name, _ in ready} | set(forced)
        study.pending_rules = [n for n in study.pending_rules if n not in done]
        manual = study.completion_reason == FORCE_REQUESTED
        reason = "force" if forced else ("manual" if manual else "complete")
        discarded = bool(forced) and not ready and "discard" in forced.values()
        decision = DecisionRow(
            decided_at=now,
            scope="study",
            series_uid=None,
            study_uid=study.study_uid,
            round=0,
            reason=reason,
            triggered=[name for name, _ in ready],
            discarded=discarded,
            jobs=[],
            details={"forced": forced, "instances": len(instances)},
        )
        session.add(decision)
        session.flush()
        job_ids = create_jobs(session, specs, now=now, decision_id=decision.id)
        decision.jobs = job_ids
        if not study.pending_rules:
            study.state = "discarded" if discarded else "routed"
            study.completed_at = now
            study.completion_reason = reason
        for name, action in forced.items():
            record(
                session,
                stage="route",
                kind="study.force_completed",
                severity="warning",
                message=(
                    f"study {study.study_uid} not complete for rule {name!r} after the force "
                    f"timeout: {action}"
                ),
                study_uid=study.study_uid,
                details={"rule": name, "action": action},
            )
        if ready:
            record(
                session,
                stage="route",
                kind="study.routed",
                message=(
                    f"study {study.study_uid} complete: rules "
                    f"{', '.join(n for n, _ in ready)}; {len(job_ids)} job(s)"
                ),
                study_uid=study.study_uid,
                details={"rules": [n for n, _ in ready], "jobs": job_ids},
            )
        report.studies_routed.append(study.study_uid)
        report.jobs.extend(job_ids)
