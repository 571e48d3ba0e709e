"""`mercury rules replay`: a real index built by the router from received instances, then a
changed configuration replayed over it. The replay function on SQLite and PostgreSQL, the
command (text, JSON, errors) on SQLite; the index is never written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from mercury.cli import app
from mercury.config.load import config_from_data
from mercury.route.replay import ReplayReport, SeriesReplay, parse_moment, replay
from mercury.route.router import Router
from mercury.route.ruleset import RuleSet
from mercury.store.db import make_engine, upgrade
from mercury.store.models import Base
from tests.route.support import BASE, T0, Clock, Index, ruleset

BEFORE: dict[str, Any] = {
    "scouts": {"rule": "'scout' in tags.SeriesDescription.lower()", "action": "discard"},
    "ct": {"rule": "tags.Modality == 'CT'", "target": "pacs"},
    "mr": {"rule": "tags.Modality == 'MR'", "action": "notification"},
    "mr_study": {
        "rule": "tags.Modality == 'MR'",
        "target": "archive",
        "action_trigger": "study",
    },
    "contrast": {"rule": "'CONTRAST' in tags.ImageComments", "target": "archive"},
}
AFTER: dict[str, Any] = {
    # the condition changed: 'Axial' no longer selected; a new target for the rest
    "ct": {
        "rule": "tags.Modality == 'CT' and tags.SeriesDescription != 'Axial'",
        "target": ["pacs", "backup"],
    },
    # "scouts" removed
    "mr": BEFORE["mr"],
    "mr_study": BEFORE["mr_study"],
    "contrast": {**BEFORE["contrast"], "evaluate_on": "every_instance"},
}
TARGETS = {"backup": {"target_type": "dummy"}}


def after_rules() -> RuleSet:
    data = {**BASE, "targets": {**BASE["targets"], **TARGETS}, "rules": AFTER}
    return RuleSet.from_config(config_from_data(data, source="after.yaml"))


def build_index(engine: Engine) -> dict[str, str]:
    """Series received and routed with BEFORE; one still receiving; one received long ago.
    Returns the series UIDs by name."""
    clock = Clock()
    clock.now = T0 - timedelta(days=10)
    index = Index(engine, clock)
    index.association("a1")
    router = Router(engine, ruleset(BEFORE), clock=clock)
    try:
        index.add("1.2.1", 2, study="1.2.100", SeriesDescription="Old")
        clock.advance(60)
        router.scan()
        clock.now = T0
        index.add("1.2.2", 3, SeriesDescription="Axial")
        index.add("1.2.3", 2, SeriesDescription="Scout")
        index.add("1.2.4", 3, SeriesDescription="Thin")
        index.add("1.2.5", 2, study="1.2.200", Modality="MR", SeriesDescription="T2")
        index.add("1.2.6", 1, study="1.2.300", Modality="US", SeriesDescription="Echo")
        clock.advance(1)
        index.add("1.2.6", 1, study="1.2.300", Modality="US", ImageComments="CONTRAST")
        clock.advance(60)
        router.scan()
        clock.advance(900)
        router.scan()  # the MR study completes: its study job
        index.add("1.2.7", 1, study="1.2.400", SeriesDescription="Arriving")
    finally:
        index.close()
    return {"axial": "1.2.2", "scout": "1.2.3", "thin": "1.2.4", "mr": "1.2.5", "us": "1.2.6"}


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    upgrade(engine)
    build_index(engine)
    yield engine
    engine.dispose()


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with engine.connect() as conn:
        return {
            table.name: sorted(
                (tuple(repr(v) for v in row) for row in conn.execute(table.select())),
            )
            for table in Base.metadata.sorted_tables
        }


def by_uid(report: ReplayReport) -> dict[str, SeriesReplay]:
    return {item.series_uid: item for item in report.series}


def test_replay_reports_what_would_change(engine: Engine) -> None:
    before = snapshot(engine)
    report = replay(engine, after_rules(), since=T0 - timedelta(days=1))
    assert snapshot(engine) == before  # read-only

    items = by_uid(report)
    assert "1.2.1" not in items  # received before --since
    assert report.summary() | {"since": None, "until": None} == {
        "since": None,
        "until": None,
        "replayed": 6,
        "changed": 4,
        "unchanged": 1,
        "not_yet_routed": 1,
    }
    assert report.summary_line() == (
        "6 series replayed, 4 would change, 1 unchanged, 1 not yet routed"
    )

    axial = items["1.2.2"]  # the condition changed: nothing fires, discarded
    assert axial.status == "changed"
    assert axial.before is not None
    assert axial.before.triggered == ("ct",)
    assert (axial.after.triggered, axial.after.discarded) == ((), True)
    assert axial.changes == (
        "rule ct would no longer fire",
        "would be discarded (no rule would fire)",
        "no job: dispatch to pacs",
    )

    scout = items["1.2.3"]  # its discard rule was removed
    assert scout.before is not None
    assert (scout.before.discarded, scout.before.discarded_by) == (True, "scouts")
    assert scout.changes == (
        "rule ct would fire",
        "rule scouts would no longer fire (no longer in the configuration)",
        "would no longer be discarded",
        "new job: dispatch to backup",
        "new job: dispatch to pacs",
    )

    thin = items["1.2.4"]  # the same rule fires, with a new target
    assert thin.changes == ("new job: dispatch to backup",)
    assert [j.to_dict() for j in thin.after.jobs] == [
        {"kind": "dispatch", "scope": "series", "target": "backup"},
        {"kind": "dispatch", "scope": "series", "target": "pacs"},
    ]

    mr = items["1.2.5"]  # study-triggered rule, unchanged: compared with the study's job
    assert mr.status == "unchanged"
    assert mr.after.study_rules == ("mr_study",)
    assert {j.describe() for j in mr.after.jobs} == {
        "notify by mr",
        "dispatch to archive (study)",
    }

    us = items["1.2.6"]  # only its second image matches, and the rule now reads every image
    assert us.changes == (
        "rule contrast would fire (on a later image: every_instance)",
        "would no longer be discarded",
        "new job: dispatch to archive",
    )

    arriving = items["1.2.7"]
    assert (arriving.status, arriving.before) == ("not yet routed", None)
    assert arriving.after.triggered == ("ct",)


def test_same_configuration_changes_nothing(engine: Engine) -> None:
    report = replay(engine, ruleset(BEFORE), since=T0 - timedelta(days=30))
    assert report.summary()["changed"] == 0
    assert report.summary()["unchanged"] == 6  # the old series too
    assert report.summary()["not_yet_routed"] == 1


def test_until_and_study_rule_changes(engine: Engine) -> None:
    changed = {**BEFORE, "mr_study": {**BEFORE["mr_study"], "target": "pacs"}}
    report = replay(
        engine, ruleset(changed), since=T0 - timedelta(minutes=1), until=T0 + timedelta(minutes=10)
    )
    items = by_uid(report)
    assert "1.2.7" not in items  # received after --until
    assert items["1.2.5"].changes == (
        "new job: dispatch to pacs (study)",
        "no job: dispatch to archive (study)",
    )
    as_series = {**BEFORE, "mr_study": {**BEFORE["mr_study"], "action_trigger": "series"}}
    mr = by_uid(replay(engine, ruleset(as_series), since=T0))["1.2.5"]
    assert "rule mr_study would act on the series, not the study" in mr.changes
    assert "new job: dispatch to archive" in mr.changes


def test_a_study_still_waiting_is_not_a_difference(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    clock = Clock()
    index = Index(engine, clock)
    index.association("a1")
    try:
        index.add("1.2.5", 2, Modality="MR")
        clock.advance(60)
        Router(engine, ruleset(BEFORE), clock=clock).scan()  # series routed, study waits
    finally:
        index.close()
    changed = {**BEFORE, "mr_study": {**BEFORE["mr_study"], "target": "pacs"}}
    [item] = replay(engine, ruleset(changed), since=T0).series
    engine.dispose()
    assert item.status == "unchanged"
    assert item.before is not None
    assert item.before.study_unresolved == ("mr_study",)


def test_parse_moment() -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert parse_moment("7d", now=now) == now - timedelta(days=7)
    assert parse_moment(" 24H ", now=now) == now - timedelta(hours=24)
    assert parse_moment("30m", now=now) == now - timedelta(minutes=30)
    assert parse_moment("2026-11-20T08:00+01:00", now=now) == datetime(
        2026, 11, 20, 7, 0, tzinfo=UTC
    )
    local = datetime(2026, 11, 20).astimezone().astimezone(UTC)
    assert parse_moment("2026-11-20", now=now) == local
    end = parse_moment("2026-11-20", now=now, end_of_day=True)
    assert end - local == timedelta(days=1, microseconds=-1)
    for bad in ("yesterday", "2026-13-01", "7 days", "-1d", ""):
        with pytest.raises(ValueError, match="not a date"):
            parse_moment(bad, now=now)


# -- the command -----------------------------------------------------------------------------


def write_config(folder: Path, rules: dict[str, Any], database: str | None = None) -> Path:
    data = {
        **BASE,
        "storage": {
            "spool": str(folder / "spool"),
            "database": database or f"sqlite:///{folder / 'mercury.db'}",
        },
        "targets": {**BASE["targets"], **TARGETS},
        "rules": rules,
    }
    path = folder / "mercury.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Outcome:
    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = output
        self.words = " ".join(output.split())  # the console wraps long lines


def invoke(*args: str) -> Outcome:
    result = CliRunner().invoke(app, ["rules", "replay", *args])
    return Outcome(result.exit_code, result.output)


@pytest.fixture
def sqlite_index(tmp_path: Path) -> Path:
    engine = make_engine(f"sqlite:///{tmp_path / 'mercury.db'}")
    upgrade(engine)
    build_index(engine)
    engine.dispose()
    return tmp_path


def test_command_json_and_text(sqlite_index: Path) -> None:
    config = write_config(sqlite_index, AFTER)
    result = invoke("--config", str(config), "--since", "2026-11-24T12:00Z", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["summary"]["replayed"] == 6
    assert data["summary"]["changed"] == 4
    shown = {item["series_uid"]: item for item in data["series"]}
    assert set(shown) == {"1.2.2", "1.2.3", "1.2.4", "1.2.6", "1.2.7"}  # not the unchanged
    thin = shown["1.2.4"]
    assert thin["description"] == "Thin"
    assert thin["study_uid"] == "1.2.9"
    assert thin["before"]["jobs"] == [{"kind": "dispatch", "scope": "series", "target": "pacs"}]
    assert thin["after"]["triggered"] == ["ct"]
    assert shown["1.2.7"]["status"] == "not yet routed"
    assert shown["1.2.7"]["before"] is None

    text_result = invoke("--config", str(config), "--since", "2026-11-24T12:00Z")
    assert text_result.exit_code == 0, text_result.output
    assert "6 series replayed, 4 would change, 1 unchanged, 1 not yet routed" in (text_result.words)
    assert "backup" in text_result.words
    assert "not yet routed" in text_result.words


def test_command_leaves_the_index_untouched(sqlite_index: Path) -> None:
    database = sqlite_index / "mercury.db"
    engine = make_engine(f"sqlite:///{database}")
    before = snapshot(engine)
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    config = write_config(sqlite_index, AFTER)
    assert invoke("--config", str(config), "--since", "30d").exit_code == 0
    engine = make_engine(f"sqlite:///{database}")
    assert snapshot(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == (
            version
        )
        # the connection the replay used is back to normal for whoever reuses it
        assert conn.execute(text("PRAGMA query_only")).scalar_one() == 0
    engine.dispose()


def test_command_errors(tmp_path: Path, sqlite_index: Path) -> None:
    config = write_config(sqlite_index, AFTER)
    bad_date = invoke("--config", str(config), "--since", "last tuesday")
    assert bad_date.exit_code == 2
    assert "'last tuesday' is not a date" in bad_date.words
    backwards = invoke("--config", str(config), "--since", "2026-11-25", "--until", "2026-11-01")
    assert backwards.exit_code == 2
    assert "is before --since" in backwards.words

    missing = tmp_path / "missing"
    missing.mkdir()
    result = invoke("--config", str(write_config(missing, AFTER)), "--since", "7d")
    assert result.exit_code == 2
    assert "does not exist" in result.words
    assert not (missing / "mercury.db").exists()  # not created by looking

    empty = tmp_path / "empty"
    empty.mkdir()
    make_engine(f"sqlite:///{empty / 'mercury.db'}").connect().close()
    result = invoke("--config", str(write_config(empty, AFTER)), "--since", "7d")
    assert result.exit_code == 2
    assert "not initialised" in result.words

    invalid = tmp_path / "invalid"
    invalid.mkdir()
    broken = write_config(invalid, {"x": {"rule": "tags.Modality ==", "target": "pacs"}})
    result = invoke("--config", str(broken), "--since", "7d")
    assert result.exit_code == 2
    assert "rules.x.rule" in result.words

    unreachable = tmp_path / "unreachable"
    unreachable.mkdir()
    pg = write_config(unreachable, AFTER, database="postgresql://nobody@127.0.0.1:1/none")
    result = invoke("--config", str(pg), "--since", "7d")
    assert result.exit_code == 2
    assert "cannot open the index database" in result.words
