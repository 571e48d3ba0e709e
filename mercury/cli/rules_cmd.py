"""`mercury rules test`: which rules fire for a file, a folder or a tag set, and why;
`mercury rules replay`: what a configuration would change for series already received."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit, print_error

rules_app = typer.Typer(
    help="Test routing rules against images or tags, or replay them over received series.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")


def _tags_from_file(path: Path) -> dict[str, str]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    from mercury.dicom.file_meta import split_file
    from mercury.dicom.tags import HeaderError, read_header

    try:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        header = read_header(split_file(path.read_bytes())[1], str(meta.TransferSyntaxUID))
    except (HeaderError, InvalidDicomError, ValueError, AttributeError, OSError) as exc:
        raise typer.BadParameter(f"{path} is not a readable DICOM file: {exc}") from exc
    return dict(header.tags)


@rules_app.command("test")
def run_rule_test(
    config: Path = CONFIG_OPTION,
    file: Path | None = typer.Option(None, "--file", help="A DICOM file (its series' tags)."),
    directory: Path | None = typer.Option(
        None, "--dir", help="A folder: the first file of each series is tested."
    ),
    tags: Path | None = typer.Option(
        None, "--tags", help="A JSON object of tag names to string values (a .tags file)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show which rules fire, the tags each read, and the jobs that would result."""
    from mercury.route.planner import preview
    from mercury.route.ruleset import RuleSet

    cfg = load_or_exit(config)
    sources = [s for s in (file, directory, tags) if s is not None]
    if len(sources) != 1:
        print_error("give exactly one of --file, --dir or --tags")
        raise typer.Exit(2)
    cases: list[tuple[str, dict[str, str]]] = []
    if tags is not None:
        try:
            loaded = json.loads(tags.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print_error(f"cannot read {tags}: {exc}")
            raise typer.Exit(2) from exc
        if not isinstance(loaded, dict):
            print_error(f"{tags} must hold a JSON object of tag names to values")
            raise typer.Exit(2)
        cases.append((str(tags), {str(k): str(v) for k, v in loaded.items()}))
    elif file is not None:
        try:
            cases.append((str(file), _tags_from_file(file)))
        except typer.BadParameter as exc:
            print_error(str(exc.message))
            raise typer.Exit(2) from exc
    else:
        assert directory is not None
        seen: set[str] = set()
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            try:
                found = _tags_from_file(path)
            except typer.BadParameter:
                continue
            series = found.get("SeriesInstanceUID", str(path))
            if series not in seen:
                seen.add(series)
                cases.append((str(path), found))
        if not cases:
            print_error(f"no DICOM files found under {directory}")
            raise typer.Exit(2)
    ruleset = RuleSet.from_config(cfg)
    results: list[dict[str, Any]] = []
    for source, values in cases:
        selection = ruleset.select(values)
        planned = preview(ruleset, selection, values)
        results.append(
            {
                "source": source,
                "series_uid": values.get("SeriesInstanceUID"),
                "triggered": list(selection.triggered),
                "discarded": selection.discarded,
                "discarded_by": selection.discarded_by,
                "rules": {
                    name: {
                        "fired": name in selection.triggered,
                        "tags_read": list(outcome.tags_read),
                        "missing": list(outcome.missing),
                        "error": outcome.error,
                    }
                    for name, outcome in selection.outcomes.items()
                },
                "study_rules": planned.study_rules,
                "jobs": [
                    {"kind": j.kind, "rule": j.rule, "target": j.target, "modules": list(j.modules)}
                    for j in planned.jobs
                ],
            }
        )
    if as_json:
        typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))
        return
    for result in results:
        _print(result)


def _print(result: dict[str, Any]) -> None:
    console.print(Text(f"{result['source']}", style="bold"))
    table = Table("Rule", "Fired", "Tags read", "Note")
    for name, info in result["rules"].items():
        note = info["error"] or (
            f"missing: {', '.join(info['missing'])}" if info["missing"] else ""
        )
        table.add_row(
            Text(name),
            Text("yes" if info["fired"] else "no", style="green" if info["fired"] else ""),
            Text(", ".join(info["tags_read"])),
            Text(note),
        )
    console.print(table)
    if result["discarded"]:
        why = f"rule {result['discarded_by']}" if result["discarded_by"] else "no rule fired"
        console.print(Text(f"Discarded ({why}).", style="yellow"))
        return
    for job in result["jobs"]:
        where = job["target"] or ", ".join(job["modules"]) or ""
        console.print(Text(f"  job: {job['kind']} {where} (rule {job['rule']})"))
    for name in result["study_rules"]:
        console.print(Text(f"  waits for the study to complete: rule {name}"))


REPLAY_HELP = (
    "Dry-run the configuration's rules over the series already in the index and show those "
    "that would be routed differently from what was decided: rules fired, discarded, jobs "
    "(dispatch targets, processing modules, notifications).\n\n"
    "Read-only: nothing is written to the index and no job is created. Series received in "
    "the window but not routed yet are listed as 'not yet routed'."
)


@rules_app.command(
    "replay",
    help=REPLAY_HELP,
    short_help="Dry-run the rules over received series; show what would be routed differently.",
)
def run_replay(
    config: Path = CONFIG_OPTION,
    since: str = typer.Option(
        ...,
        "--since",
        metavar="DATE",
        help="Replay series last received at or after this: YYYY-MM-DD, an ISO date and time "
        "(local time unless it has an offset), or 7d / 24h / 30m ago.",
    ),
    until: str | None = typer.Option(
        None,
        "--until",
        metavar="DATE",
        help="...and at or before this (same forms; a bare date includes that day). Default: now.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Dry-run the rules over received series; show those that would be routed differently."""
    from datetime import UTC, datetime

    from sqlalchemy import Engine

    from mercury.route.replay import ReplayError, check_database_exists, parse_moment, replay
    from mercury.route.ruleset import RuleSet
    from mercury.store.db import make_engine

    cfg = load_or_exit(config)
    now = datetime.now(UTC)
    try:
        start = parse_moment(since, now=now)
        end = parse_moment(until, now=now, end_of_day=True) if until else None
    except ValueError as exc:
        print_error(f"--since/--until: {exc}")
        raise typer.Exit(2) from exc
    if end is not None and end < start:
        print_error(f"--until ({until}) is before --since ({since})")
        raise typer.Exit(2)
    engine: Engine | None = None
    try:
        check_database_exists(cfg.storage.database)
        engine = make_engine(cfg.storage.database)
        report = replay(engine, RuleSet.from_config(cfg), since=start, until=end)
    except ReplayError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from exc
    finally:
        if engine is not None:
            engine.dispose()
    shown = [s for s in report.series if s.status != "unchanged"]
    if as_json:
        payload = {
            "series": [item.to_dict() for item in shown],
            "summary": report.summary(),
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    _print_replay(shown)
    console.print(Text(report.summary_line() + ".", style="bold"), highlight=False)


def _describe_outcome(outcome: Any) -> Text:
    """One cell: the rules that fired, discarding, the jobs."""
    if outcome is None:
        return Text("not yet routed", style="dim")
    lines: list[str] = []
    if outcome.discarded:
        by = f"by {outcome.discarded_by}" if outcome.discarded_by else "no rule fired"
        lines.append(f"discarded ({by})")
    else:
        lines.append(f"fired: {', '.join(outcome.triggered)}")
    lines.extend(job.describe() for job in outcome.jobs)
    for name in outcome.study_rules:
        pending = " (study not decided yet)" if name in outcome.study_unresolved else ""
        lines.append(f"{name}: study-triggered{pending}")
    return Text("\n".join(lines))


def _print_replay(items: list[Any]) -> None:
    if not items:
        return
    table = Table("Series", "Before", "After", "What would change")
    for item in items:
        received = item.last_received_at.isoformat()[:19].replace("T", " ")
        series = (
            f"{item.description or '(no description)'} [{item.modality}]\n"
            f"{item.series_uid}\nlast image {received}"
        )
        changes = "\n".join(item.changes) if item.before is not None else "not yet routed"
        table.add_row(
            Text(series),
            _describe_outcome(item.before),
            _describe_outcome(item.after),
            Text(changes),
        )
    console.print(table)
