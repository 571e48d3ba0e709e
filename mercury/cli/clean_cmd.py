"""`mercury clean`: apply retention now, or run the emergency clean; --dry-run shows what
would go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit, print_error

if TYPE_CHECKING:
    from mercury.clean.report import Candidate, Cleaned, CleanReport, EmergencyReport


def register(app: typer.Typer) -> None:
    app.command("clean")(clean)


def clean(
    config: Path = CONFIG_OPTION,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be removed; remove nothing."
    ),
    emergency: bool = typer.Option(
        False,
        "--emergency",
        help="Only the emergency clean: remove finished series before their retention "
        "(success, then discard, then error; oldest first) until the spool's disk use is "
        "below --below. Pending data is never removed.",
    ),
    below: float | None = typer.Option(
        None,
        "--below",
        min=0,
        max=100,
        help="Disk use (percent) the emergency clean brings the spool under; default "
        "timings.emergency_clean_percentage.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Remove the images of finished series whose retention has passed (whatever the
    off-peak window), finish interrupted cleans, run the emergency clean when the disk is
    too full, and remove index rows past retention.index_rows. Every series removed is
    journaled as series.cleaned."""
    from mercury.clean.cleaner import Cleaner
    from mercury.cli.index_access import open_index
    from mercury.store.spool import Spool

    cfg = load_or_exit(config)
    spool = Spool(cfg.storage.spool)
    if not spool.root.is_dir():
        print_error(f"the spool folder {spool.root} does not exist; nothing to clean")
        raise typer.Exit(2)
    with open_index(cfg) as engine:
        cleaner = Cleaner(engine, cfg, spool)
        usage = cleaner.usage()
        threshold = cleaner.threshold if below is None else below
        if dry_run:
            if emergency:
                planned = cleaner.emergency_preview(below=threshold)
            else:
                planned = cleaner.preview(below=threshold)
            _show_plan(planned, usage.percent, threshold, as_json)
            return
        with _Bar(enabled=not as_json) as bar:
            if emergency:
                report = _emergency_only(cleaner, threshold, bar)
            else:
                report = cleaner.scan(anytime=True, listener=bar)
    _show_report(report, usage.percent, cleaner.usage().percent, threshold, as_json)


def _emergency_only(cleaner: Any, threshold: float, bar: _Bar) -> CleanReport:
    from mercury.clean.report import CleanReport

    report = CleanReport()
    report.emergency = cleaner.emergency(below=threshold, report=report, listener=bar)
    return report


class _Bar:
    """A progress bar per pass of the clean (a Listener)."""

    def __init__(self, *, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.task: Any = None

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.progress.stop()

    def planned(self, what: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, visible=False)
        self.task = self.progress.add_task(f"{what:>9}", total=total, last="")

    def cleaned(self, item: Cleaned) -> None:
        if self.task is None:
            self.planned("resuming", 0)
        self.progress.update(self.task, advance=1, last=item.description[:40])


def _size(value: int) -> str:
    from mercury.clean.record import human_bytes

    return human_bytes(value)


def _candidate_dict(candidate: Candidate) -> dict[str, Any]:
    since = candidate.outcome.since
    return {
        "series_uid": candidate.info.series_uid,
        "study_uid": candidate.info.study_uid,
        "description": candidate.info.description,
        "outcome": candidate.outcome.kind,
        "since": since.isoformat() if since else None,
        "reason": candidate.reason,
        "instances": candidate.info.instances,
        "bytes": candidate.info.bytes,
    }


def _show_plan(planned: list[Candidate], percent: float, threshold: float, as_json: bool) -> None:
    rows = [_candidate_dict(c) for c in planned]
    if as_json:
        typer.echo(
            json.dumps(
                {"dry_run": True, "disk_percent": round(percent, 2), "threshold": threshold}
                | {"series": rows},
                indent=2,
            )
        )
        return
    console.print(f"Spool disk {percent:.1f}% used (emergency clean above {threshold:g}%).")
    if not rows:
        console.print("Nothing would be removed.")
        return
    table = Table("Series", "Outcome", "Since", "Reason", "Images", "Size", title="Would remove")
    for row in rows:
        table.add_row(
            Text(row["description"] or row["series_uid"]),
            row["outcome"],
            (row["since"] or "")[:19].replace("T", " "),
            row["reason"],
            str(row["instances"]),
            _size(row["bytes"]),
        )
    console.print(table)
    total = sum(r["bytes"] for r in rows)
    console.print(
        f"Would remove {len(rows)} series, {sum(r['instances'] for r in rows)} images, "
        f"{_size(total)}. Run without --dry-run to remove them."
    )


def _cleaned_dict(item: Cleaned) -> dict[str, Any]:
    return {
        "series_uid": item.series_uid,
        "study_uid": item.study_uid,
        "description": item.description,
        "outcome": item.outcome,
        "reason": item.reason,
        "files": item.files,
        "bytes": item.bytes,
        "kept": item.kept,
        "folders": item.folders,
        "resumed": item.resumed,
    }


def _emergency_dict(emergency: EmergencyReport | None) -> dict[str, Any] | None:
    if emergency is None:
        return None
    return {
        "threshold": emergency.threshold,
        "before": round(emergency.before, 2),
        "after": round(emergency.after, 2),
        "removed": emergency.removed,
        "relieved": emergency.relieved,
    }


def _show_report(
    report: CleanReport, before: float, after: float, threshold: float, as_json: bool
) -> None:
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "cleaned": [_cleaned_dict(item) for item in report.cleaned],
                    "resumed": report.resumed,
                    "files": report.files,
                    "bytes": report.bytes,
                    "emergency": _emergency_dict(report.emergency),
                    "index": {"series": report.index.series, "rows": report.index.rows}
                    if report.index
                    else None,
                    "folders": report.folders,
                    "disk_percent": {"before": round(before, 2), "after": round(after, 2)},
                },
                indent=2,
            )
        )
    else:
        _print_report(report, before, after)
    if report.emergency and not report.emergency.relieved:
        print_error(
            f"the spool's disk is still above {threshold:g}%: everything left is pending "
            "(receiving, routing, processing or waiting to be sent) and is never removed"
        )
        raise typer.Exit(1)


def _print_report(report: CleanReport, before: float, after: float) -> None:
    if report.cleaned:
        table = Table("Outcome", "Reason", "Series", "Images", "Size")
        groups: dict[tuple[str, str], list[Cleaned]] = {}
        for item in report.cleaned:
            groups.setdefault((item.outcome, item.reason), []).append(item)
        for (outcome, reason), items in sorted(groups.items()):
            table.add_row(
                outcome,
                reason,
                str(len(items)),
                str(sum(i.files for i in items)),
                _size(sum(i.bytes for i in items)),
            )
        console.print(table)
    resumed = f" ({report.resumed} interrupted clean(s) finished)" if report.resumed else ""
    console.print(
        f"Removed {len(report.cleaned)} series, {report.files} images, "
        f"{_size(report.bytes)}{resumed}."
    )
    if report.index and report.index.series:
        console.print(
            f"Removed the index rows of {report.index.series} series cleaned long ago "
            f"({sum(report.index.rows.values())} rows)."
        )
    if report.folders:
        console.print(f"Removed {len(report.folders)} job folder(s) nothing needed any more.")
    console.print(f"Spool disk {before:.1f}% used before, {after:.1f}% now.")
