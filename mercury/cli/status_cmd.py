"""`mercury status`: what is stored, per series, straight from the index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy import func, select

from mercury.cli.common import CONFIG_OPTION, console, load_or_exit


def register(app: typer.Typer) -> None:
    app.command("status")(status)


def status(
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    limit: int = typer.Option(50, "--limit", min=1, help="Most recent series to list."),
) -> None:
    """Show what is stored: totals, then each series with its instance count."""
    from mercury.store.db import make_engine, upgrade
    from mercury.store.models import InstanceRow, SeriesRow, StudyRow

    cfg = load_or_exit(config)
    engine = make_engine(cfg.storage.database)
    upgrade(engine)
    with engine.connect() as conn:
        instances, total_bytes = conn.execute(
            select(func.count(), func.coalesce(func.sum(InstanceRow.size), 0))
        ).one()
        studies = conn.execute(select(func.count()).select_from(StudyRow)).scalar_one()
        series_total = conn.execute(select(func.count()).select_from(SeriesRow)).scalar_one()
        rows = conn.execute(
            select(SeriesRow, StudyRow.patient_id, StudyRow.accession_number)
            .join(StudyRow, StudyRow.study_uid == SeriesRow.study_uid, isouter=True)
            .order_by(SeriesRow.last_received_at.desc())
            .limit(limit)
        ).all()
    engine.dispose()
    series: list[dict[str, Any]] = [
        {
            "series_uid": row.series_uid,
            "study_uid": row.study_uid,
            "patient_id": row.patient_id or "",
            "accession_number": row.accession_number or "",
            "modality": row.modality,
            "series_description": row.series_description,
            "instances": row.instance_count,
            "duplicates": row.duplicate_count,
            "bytes": row.bytes,
            "first_received_at": row.first_received_at.isoformat(),
            "last_received_at": row.last_received_at.isoformat(),
        }
        for row in rows
    ]
    totals = {
        "instances": instances,
        "bytes": int(total_bytes),
        "series": series_total,
        "studies": studies,
    }
    if as_json:
        typer.echo(json.dumps({"totals": totals, "series": series}, indent=2))
        return
    console.print(
        f"{studies} studies, {series_total} series, {instances} instances, "
        f"{int(total_bytes) / 1e6:.1f} MB in {cfg.storage.spool}"
    )
    if not series:
        console.print("Nothing received yet.")
        return
    table = Table(
        "Last received", "Modality", "Description", "Instances", "Patient ID", "Series UID"
    )
    for item in series:
        # DICOM-derived text is data, never markup.
        table.add_row(
            *(
                Text(str(value))
                for value in (
                    item["last_received_at"][:19].replace("T", " "),
                    item["modality"],
                    item["series_description"],
                    item["instances"],
                    item["patient_id"],
                    item["series_uid"],
                )
            )
        )
    console.print(table)
