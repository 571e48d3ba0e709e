"""`mercury send`: send DICOM files to a C-STORE SCP (a PACS, or mercury itself)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from mercury.send.files import find_dicom_files
from mercury.send.report import (
    NOT_SENT,
    FileResult,
    SendProgress,
    SendReport,
    Timeouts,
    describe_status,
)
from mercury.send.sender import DEFAULT_CALLING_AE, send_dicom_files

EXIT_FAILED_FILES = 1
EXIT_NOT_SENT = 2
_AE_TITLE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # default repertoire, no backslash
_MAX_LISTED = 10


def _parse_destination(value: str) -> tuple[str, int]:
    """HOST:PORT, with [v6 address]:PORT for IPv6."""
    match = re.fullmatch(
        r"\[(?P<v6>[^\]]+)\]:(?P<port>\d+)|(?P<host>[^:\[\]]+):(?P<port2>\d+)", value
    )
    if not match:
        raise typer.BadParameter(
            f"'{value}' is not HOST:PORT (for IPv6: [ADDRESS]:PORT)", param_hint="--to"
        )
    host = match.group("v6") or match.group("host")
    port = int(match.group("port") or match.group("port2"))
    if not 0 < port < 65536:
        raise typer.BadParameter(f"port {port} is not between 1 and 65535", param_hint="--to")
    return host, port


def _check_ae_title(value: str, option: str) -> str:
    if not _AE_TITLE.fullmatch(value) or not value.strip():
        raise typer.BadParameter(
            f"'{value}' is not an AE title: 1 to 16 characters, letters, digits, spaces "
            "and punctuation, no backslash",
            param_hint=option,
        )
    return value


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def _report_json(report: SendReport, host: str, port: int, called_ae: str) -> dict[str, Any]:
    def entry(result: FileResult) -> dict[str, Any]:
        return {
            "path": str(result.path),
            "sop_instance_uid": result.sop_instance_uid,
            "bytes": result.size,
            "outcome": result.outcome,
            "status": result.status,
            "status_text": describe_status(result.status) if result.status is not None else None,
            "comment": result.comment,
        }

    return {
        "destination": {"host": host, "port": port, "called_ae": called_ae},
        "ok": report.ok,
        "error": report.error,
        "sent": len(report.succeeded),
        "warnings": len(report.warnings),
        "failed": len(report.failed),
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in report.skipped],
        "bytes_sent": report.bytes_sent,
        "seconds": round(report.elapsed, 3),
        "associations": report.associations,
        "files": [entry(result) for result in report.results],
    }


def _print_skipped(console: Console, report: SendReport) -> None:
    if not report.skipped:
        return
    console.print(
        f"[yellow]Warning:[/] skipped {len(report.skipped)} path(s) that are not DICOM files:"
    )
    for skipped in report.skipped[:_MAX_LISTED]:
        console.print(f"  {escape(str(skipped.path))}: {escape(skipped.reason)}")
    if len(report.skipped) > _MAX_LISTED:
        console.print(f"  ... and {len(report.skipped) - _MAX_LISTED} more")


def _results_table(title: str, results: list[FileResult]) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("File", overflow="fold")
    table.add_column("Status")
    table.add_column("Comment", overflow="fold")
    for result in results[:_MAX_LISTED]:
        status = describe_status(result.status) if result.status is not None else "not sent"
        table.add_row(escape(str(result.path)), status, escape(result.comment))
    if len(results) > _MAX_LISTED:
        table.add_row(f"... and {len(results) - _MAX_LISTED} more", "", "")
    return table


def _print_summary(console: Console, report: SendReport, destination: str) -> None:
    seconds = max(report.elapsed, 1e-6)
    sent = len(report.succeeded) + len(report.warnings)
    console.print(
        f"Sent {sent} of {len(report.results)} file(s), {_megabytes(report.bytes_sent)}, "
        f"to {escape(destination)} in {report.elapsed:.1f} s "
        f"({report.bytes_sent / seconds / 1_000_000:.1f} MB/s, {sent / seconds:.0f} files/s)"
    )
    if report.warnings:
        console.print(
            _results_table(f"{len(report.warnings)} stored with a warning", report.warnings)
        )
    failed = [result for result in report.failed if result.comment != NOT_SENT]
    if failed:
        console.print(_results_table(f"{len(report.failed)} failed", failed))


Paths = Annotated[
    list[Path],
    typer.Argument(help="DICOM files and folders (folders are searched, non-DICOM files skipped)."),
]
Destination = Annotated[str, typer.Option("--to", help="Destination as HOST:PORT.")]
CalledAE = Annotated[str, typer.Option("--aec", help="Called AE title (the destination's).")]
CallingAE = Annotated[str, typer.Option("--aet", help="Calling AE title (ours).")]
Recursive = Annotated[
    bool, typer.Option("--recursive/--no-recursive", "-r", help="Search folders recursively.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the report as JSON, no progress.")]
ConnectTimeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for the TCP connection.")
]
AcseTimeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for association replies.")
]
DimseTimeout = Annotated[
    float, typer.Option(min=0.1, help="Seconds to wait for each C-STORE response.")
]
NetworkTimeout = Annotated[float, typer.Option(min=0.1, help="Seconds an idle connection is kept.")]


def send(
    paths: Paths,
    *,
    to: Destination,
    called_ae: CalledAE,
    calling_ae: CallingAE = DEFAULT_CALLING_AE,
    recursive: Recursive = True,
    as_json: AsJson = False,
    connect_timeout: ConnectTimeout = 10.0,
    acse_timeout: AcseTimeout = 30.0,
    dimse_timeout: DimseTimeout = 60.0,
    network_timeout: NetworkTimeout = 120.0,
) -> None:
    """Send DICOM files to a C-STORE SCP (see SEND_HELP)."""
    host, port = _parse_destination(to)
    _check_ae_title(called_ae, "--aec")
    _check_ae_title(calling_ae, "--aet")
    timeouts = Timeouts(connect_timeout, acse_timeout, dimse_timeout, network_timeout)
    destination = f"{called_ae} at {host}:{port}"
    out = Console(highlight=False)
    err = Console(stderr=True, highlight=False)

    files, skipped = find_dicom_files(paths, recursive=recursive)
    if as_json:
        report = send_dicom_files(
            files, host, port, called_ae, calling_ae, timeouts=timeouts, skipped=skipped
        )
        typer.echo(json.dumps(_report_json(report, host, port, called_ae), indent=2))
    else:
        if skipped:
            _print_skipped(err, SendReport(skipped=skipped))
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[files]}"),
            DownloadColumn(binary_units=False),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        task: TaskID | None = None

        def update(state: SendProgress) -> None:
            nonlocal task
            files_text = f"{state.files_done}/{state.files_total} files"
            if task is None:
                task = progress.add_task("Sending", total=state.bytes_total, files=files_text)
            progress.update(task, completed=state.bytes_done, files=files_text)

        with progress:
            report = send_dicom_files(
                files,
                host,
                port,
                called_ae,
                calling_ae,
                update,
                timeouts=timeouts,
                skipped=skipped,
            )
        if report.succeeded or report.warnings or (report.failed and not report.error):
            _print_summary(out, report, destination)
        if report.error:
            err.print(f"[red]Error:[/] {escape(report.error)}")
    if report.error:
        raise typer.Exit(EXIT_NOT_SENT)
    if report.failed:
        raise typer.Exit(EXIT_FAILED_FILES)


SEND_HELP = (
    "Send DICOM files to a DICOM receiver (a PACS, or mercury) over one association.\n\n"
    "Folders are searched (recursively unless --no-recursive); files that are not DICOM "
    "are skipped with a warning. Files go as stored when the receiver accepts their "
    "transfer syntax, else converted to an uncompressed one. Every response is checked.\n\n"
    "Exit status: 0 if every file was stored (warnings included), 1 if the receiver "
    "refused some files, 2 if nothing could be sent (no DICOM files, no connection, "
    "association rejected)."
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `mercury` command."""
    app.command("send", help=SEND_HELP)(send)
