"""Routing benchmark: the cost of routing one series with 100 mercure-style rules.

Three measurements, each as p50/p99 per series:

1. rule selection alone: evaluating the 100 rules on one series' tags (what decides);
2. the router's transaction on SQLite: state read, selection, decision, journal and jobs
   committed (synchronous=FULL, as mercury runs);
3. end to end: storescu sends a series (one association) to `mercury serve`; from the
   end of the association (storescu has exited) to the job being visible in the index.

As reference, in the same run: the time DCMTK storescu takes to send the same series to
DCMTK storescp, and the ratio of the end-to-end routing latency to it.

Run from the repository root:  .venv/bin/python -m bench.route [--quick]
Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from bench.receive import storescp
from mercury.config.load import config_from_data
from mercury.route.router import Router, ScanReport
from mercury.route.ruleset import RuleSet
from mercury.store.db import make_engine, upgrade
from mercury.store.index_writer import IndexWriter, ReceivedInstance
from mercury.store.models import AssociationRow, JobRow, utcnow
from tests.helpers import dcmtk_env, free_port, make_small_images, port_open, wait_for

WORK_ROOT = Path(__file__).resolve().parent / "results"

# -- a realistic rule set --------------------------------------------------------------------

TARGETS = ["pacs", "archive", "research", "ai_lung", "ai_brain", "teaching", "qa", "cloud"]
MODULES = ["lung_nodules", "brain_volumetry", "anonymize", "bone_age"]
CT_WORDS = ["thorax", "abdomen", "head", "angio", "cardiac", "spine", "pelvis", "neck", "lung"]
MR_WORDS = ["t1", "t2", "flair", "dwi", "swi", "mprage", "tof", "perfusion", "cine", "lge"]
SOURCES = ["CT_SCANNER1", "CT_SCANNER2", "MR_3T", "MR_15T", "CR_ROOM1", "US_CARDIO", "PET_CT"]


def rules_config() -> dict[str, Any]:
    """100 rules as sites write them for mercure: modality and description tests, the
    legacy @Tag@ syntax, numeric conversions, a few discard, fallback and study rules."""
    rules: dict[str, Any] = {}

    def add(name: str, rule: str, **extra: Any) -> None:
        target = extra.pop("target", TARGETS[len(rules) % len(TARGETS)])
        action = extra.get("action", "route")
        entry: dict[str, Any] = {"rule": rule, **extra}
        if action in ("route", "both"):
            entry["target"] = target
        if action in ("process", "both"):
            entry["processing_module"] = MODULES[len(rules) % len(MODULES)]
        rules[name] = entry

    add("scouts", "'scout' in tags.SeriesDescription.lower()", action="discard")
    add("localizers", "@ImageType@.find('LOCALIZER') >= 0", action="discard")
    for word in CT_WORDS:  # 9
        add(f"ct_{word}", f"tags.Modality == 'CT' and '{word}' in tags.SeriesDescription.lower()")
    for word in MR_WORDS:  # 10
        add(f"mr_{word}", f"@Modality@ == 'MR' and '{word}' in @SeriesDescription@.lower()")
    for word in CT_WORDS:  # 9
        add(
            f"ct_thin_{word}",
            f"tags.Modality == 'CT' and '{word}' in tags.SeriesDescription.lower() "
            "and float(tags.SliceThickness) <= 1.25",
            action="process",
        )
    for word in MR_WORDS[:6]:  # 6
        add(
            f"mr_3t_{word}",
            f"tags.Modality == 'MR' and float(tags.MagneticFieldStrength) > 2.5 "
            f"and tags.SeriesDescription.upper().startswith('{word.upper()}')",
            action="both",
        )
    for source in SOURCES:  # 7
        add(f"from_{source.lower()}", f"tags.SenderAET == '{source}'")
    for index, body in enumerate(["CHEST", "HEAD", "ABDOMEN", "KNEE", "HAND", "SPINE"]):  # 6
        add(f"body_{index}", f"tags.BodyPartExamined == '{body}' and tags.Modality in ('CR', 'DX')")
    for index, maker in enumerate(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "Canon"]):  # 4
        add(f"vendor_{index}", f"@Manufacturer@ == '{maker}' and @Modality@ == 'CT'")
    for index, station in enumerate(["ER-CT", "ONCO-MR", "CARDIO-US", "NEURO-MR"]):  # 4
        add(f"station_{index}", f"tags.StationName.lower() == '{station.lower()}'")
    for word in ["contrast", "arterial", "venous", "delayed", "native"]:  # 5
        add(
            f"phase_{word}",
            f"any(w in tags.SeriesDescription.lower() for w in ['{word}', '{word[:3]}'])",
        )
    for index in range(5):  # 5
        add(
            f"protocol_{index}",
            f"'Protocol{index}' in tags.ProtocolName and tags.Modality != 'SR'",
            action="notification",
        )
    for index, word in enumerate(["research", "trial", "study", "anon", "teach"]):  # 5
        add(
            f"comments_{index}",
            f"'ImageComments' in tags and '{word}' in tags.ImageComments.lower()",
        )
    for index in range(6):  # 6
        add(
            f"series_no_{index}",
            f"tags.Modality == 'CT' and int(tags.SeriesNumber) == {index + 900}",
        )
    for word in ["mammo", "tomo", "dental"]:  # 3
        add(f"study_{word}", f"'{word}' in tags.StudyDescription.lower()", action_trigger="study")
    add(
        "study_mr_brain",
        "tags.Modality == 'MR' and 'brain' in tags.StudyDescription.lower()",
        action_trigger="study",
        study_trigger_condition="received_series",
        study_trigger_series="'T1' and ('T2' or 'FLAIR')",
    )
    add("derived", "'DERIVED' in tags.ImageType.split('\\\\')", action="discard")
    add("everything_small", "tags.Modality == 'OT'")  # the end-to-end series
    for modality in ["CT", "MR", "US", "PT", "NM"]:  # 5
        add(f"fallback_{modality.lower()}", f"tags.Modality == '{modality}'", fallback=True)
    add("fallback_all", "True", fallback=True, target="archive")
    while len(rules) < 100:
        index = len(rules)
        add(f"age_{index}", f"'PatientBirthDate' in tags and tags.PatientBirthDate < '19{index}'")
    return rules


def config_data(spool: Path, database: str, port: int = 11112) -> dict[str, Any]:
    return {
        "receiver": {"host": "127.0.0.1", "port": port, "ae_titles": ["MERCURY"]},
        "web": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"spool": str(spool), "database": database, "reserve_mb": 0},
        "timings": {"series_complete_on": ["association_end", "quiet"]},
        "targets": {name: {"target_type": "dummy"} for name in TARGETS},
        "modules": {name: {"docker_tag": f"example/{name}:1"} for name in MODULES},
        "rules": rules_config(),
    }


def series_tags(rng: random.Random, index: int) -> dict[str, str]:
    """One series' tags as the receiver extracts them (mercure's tag set)."""
    modality = rng.choice(["CT", "CT", "CT", "MR", "MR", "CR", "US", "PT"])
    words = CT_WORDS if modality in ("CT", "PT") else MR_WORDS
    description = f"{rng.choice(words).upper()} {rng.choice(['AX', 'COR', 'SAG'])} {index}"
    if rng.random() < 0.05:
        description = "Scout " + description
    tags = {
        "SpecificCharacterSet": "ISO_IR 100",
        "SeriesInstanceUID": f"1.2.826.0.1.3680043.9.{index}.2",
        "SOPInstanceUID": f"1.2.826.0.1.3680043.9.{index}.3.1",
        "StudyInstanceUID": f"1.2.826.0.1.3680043.9.{index // 4}.1",
        "Modality": modality,
        "BodyPartExamined": rng.choice(["CHEST", "HEAD", "ABDOMEN", "KNEE"]),
        "ProtocolName": f"Protocol{rng.randrange(20)}",
        "StationAETitle": rng.choice(SOURCES),
        "Manufacturer": rng.choice(["SIEMENS", "GE MEDICAL SYSTEMS", "Philips", "Canon"]),
        "ManufacturerModelName": "Model X",
        "StudyDescription": rng.choice(["CT Thorax", "MR Brain", "Mammo screening", "US Heart"]),
        "SeriesDescription": description,
        "PatientName": "Doe^Jane",
        "PatientID": f"MRN{index:06d}",
        "PatientBirthDate": f"19{rng.randrange(30, 99)}0101",
        "PatientSex": rng.choice(["F", "M"]),
        "AccessionNumber": f"ACC{index:06d}",
        "StudyID": str(index),
        "SeriesNumber": str(rng.randrange(1, 1000)),
        "SeriesDate": "20261125",
        "SeriesTime": "120000",
        "AcquisitionDate": "20261125",
        "AcquisitionTime": "120001",
        "StationName": rng.choice(["ER-CT", "ONCO-MR", "CARDIO-US", "NEURO-MR", "CT2"]),
        "SoftwareVersions": "VA10",
        "SliceThickness": rng.choice(["0.625", "1.0", "1.25", "2.5", "5.0"]),
        "MagneticFieldStrength": rng.choice(["1.5", "3"]),
        "InstanceNumber": "1",
        "AcquisitionNumber": "1",
        "InstitutionName": "General Hospital",
        "ImageType": rng.choice(["ORIGINAL\\PRIMARY\\AXIAL", "DERIVED\\SECONDARY"]),
        "MediaStorageSOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
        "SenderAddress": "10.0.0.5",
        "SenderAET": rng.choice(SOURCES),
        "ReceiverAET": "MERCURY",
    }
    if rng.random() < 0.2:
        tags["ImageComments"] = rng.choice(["research cohort", "teaching file", "QA"])
    return tags


# -- statistics and context ------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def p50_p99(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values)}


def ms(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50'] * 1e3:8.3f} ms   p99 {stats['p99'] * 1e3:8.3f} ms   (n={stats['n']})"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dcmtk = subprocess.run(["storescu", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "dcmtk": (dcmtk.stdout.splitlines() or ["?"])[0].strip("$ ").removeprefix("dcmtk: "),
        "load": os.getloadavg()[0],
    }


# -- 1 and 2: selection and the router transaction -------------------------------------------


def bench_selection(rules: RuleSet, count: int) -> dict[str, float]:
    rng = random.Random(7)
    samples = [series_tags(rng, i) for i in range(count)]
    for tags in samples[:50]:  # warm up
        rules.select(tags)
    times = []
    for tags in samples:
        start = time.perf_counter()
        rules.select(tags)
        times.append(time.perf_counter() - start)
    return p50_p99(times)


def bench_router(work: Path, series: int, per_series: int) -> tuple[dict[str, Any], int]:
    """Index ``series`` series through the index writer, then route each and time it."""
    database = f"sqlite:///{work / 'route.db'}"
    data = config_data(work / "spool", database)
    rules = RuleSet.from_config(config_from_data(data, source="bench.yaml"))
    engine = make_engine(database)
    upgrade(engine)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            AssociationRow.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "id": "bench",
                    "receiver_id": "bench",
                    "calling_ae": "SCU",
                    "called_ae": "MERCURY",
                    "peer_host": "127.0.0.1",
                    "peer_port": 1,
                    "started_at": now,
                    "instances": 0,
                    "bytes": 0,
                    "failures": 0,
                }
            ],
        )
    writer = IndexWriter(engine)
    writer.start()
    rng = random.Random(11)
    uids = []
    futures = []
    for index in range(series):
        tags = series_tags(rng, index)
        uids.append(tags["SeriesInstanceUID"])
        for n in range(per_series):
            sop = f"{tags['SeriesInstanceUID']}.{n}"
            futures.append(
                writer.add_instance(
                    ReceivedInstance(
                        sop_instance_uid=sop,
                        series_uid=tags["SeriesInstanceUID"],
                        study_uid=tags["StudyInstanceUID"],
                        sop_class_uid=tags["MediaStorageSOPClassUID"],
                        transfer_syntax="1.2.840.10008.1.2.1",
                        path=f"x/{sop}.dcm",
                        size=500_000,
                        calling_ae="SCU",
                        called_ae="MERCURY",
                        peer_host="127.0.0.1",
                        association_id="bench",
                        received_at=now,
                        tags={**tags, "SOPInstanceUID": sop, "InstanceNumber": str(n + 1)},
                    )
                )
            )
    for future in futures:
        future.result(120)
    writer.stop()
    later = now + timedelta(hours=1)  # every series is past its quiet period
    router = Router(engine, rules, clock=lambda: later)
    times: list[float] = []
    report = ScanReport()
    for uid in uids:
        start = time.perf_counter()
        router._consider_series(uid, later, report)
        times.append(time.perf_counter() - start)
    with engine.connect() as conn:
        jobs = len(conn.execute(select(JobRow.id)).all())
    engine.dispose()
    assert len(report.series_routed) == series, "every series should have been routed"
    return p50_p99(times), jobs


# -- 3: end to end ---------------------------------------------------------------------------


@contextmanager
def mercury(work: Path) -> Iterator[tuple[int, str]]:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{work / 'mercury.db'}"
    config = work / "mercury.yaml"
    config.write_text(yaml.safe_dump(config_data(work / "spool", database, port)))
    exe = str(Path(sys.executable).parent / "mercury")
    log = (work / "mercury.log").open("wb")
    proc = subprocess.Popen(
        [exe, "serve", "--config", str(config), "--log-level", "warning"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: port_open(port), 60, "mercury")
        yield port, database
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def storescu_send(port: int, files: Sequence[Path]) -> float:
    """Send one series over one association; seconds until storescu has exited."""
    start = time.perf_counter()
    result = subprocess.run(
        ["storescu", "-aec", "MERCURY", "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(True),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr[-500:]}")
    return time.perf_counter() - start


def bench_end_to_end(
    work: Path, series: list[list[Path]], series_uids: list[str]
) -> dict[str, Any]:
    latencies: list[float] = []
    with mercury(work / "mercury") as (port, database):
        engine = make_engine(database)
        for files, uid in zip(series, series_uids, strict=True):
            storescu_send(port, files)
            ended = time.perf_counter()
            query = select(JobRow.id).where(JobRow.series_uid == uid).limit(1)
            deadline = ended + 30
            with engine.connect() as conn:
                while conn.execute(query).first() is None:
                    conn.rollback()  # a fresh snapshot on the next poll
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"no job for series {uid} after 30 s")
                    time.sleep(0.002)  # polling interval: bounds the measurement error
            latencies.append(time.perf_counter() - ended)
        engine.dispose()
    return p50_p99(latencies)


def bench_dcmtk(work: Path, series: list[list[Path]]) -> dict[str, Any]:
    times = []
    with storescp(work / "storescp") as port:
        for files in series:
            times.append(storescu_send(port, files))
    return p50_p99(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer series")
    args = parser.parse_args()
    WORK_ROOT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-route-", dir=WORK_ROOT))
    selections, routed, per_series, e2e, images = (
        (300, 60, 20, 12, 20) if args.quick else (3000, 300, 50, 50, 20)
    )
    context = machine()
    print(
        f"{context['cpus']} CPUs ({context['cpu']}), Python {context['python']}, "
        f"SQLite {context['sqlite']}, {context['dcmtk']}, load {context['load']:.2f}"
    )
    rules = RuleSet.from_config(
        config_from_data(config_data(work / "spool", "sqlite://"), source="bench.yaml")
    )
    print(f"{len(rules.specs)} rules; work folder {work}")
    results: dict[str, Any] = {"machine": context, "rules": len(rules.specs)}

    results["selection"] = bench_selection(rules, selections)
    print(f"rule selection, 1 series           {ms(results['selection'])}")

    results["router"], jobs = bench_router(work, routed, per_series)
    print(
        f"router transaction, 1 series       {ms(results['router'])}   "
        f"[{per_series} instances each, {jobs} jobs]"
    )

    print(f"generating {e2e} series of {images} images (256x256) ...")
    files = make_small_images(work / "data", e2e * images, per_series=images, size=256)
    series = [files[i : i + images] for i in range(0, len(files), images)]
    import pydicom

    uids = [str(pydicom.dcmread(s[0], stop_before_pixels=True).SeriesInstanceUID) for s in series]
    assert len(uids) == len(set(uids)) == e2e
    results["dcmtk_send"] = bench_dcmtk(work, series)
    print(f"storescu -> storescp, 1 series     {ms(results['dcmtk_send'])}")
    results["end_to_end"] = bench_end_to_end(work, series, uids)
    print(f"association end -> job committed   {ms(results['end_to_end'])}")
    ratio = results["end_to_end"]["p50"] / results["dcmtk_send"]["p50"]
    results["ratio_p50"] = ratio
    print(f"routing latency / DCMTK send of the same series (p50): {ratio:.2f}")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(work / "data", ignore_errors=True)
    print(f"results in {work / 'results.json'}")


if __name__ == "__main__":
    main()
