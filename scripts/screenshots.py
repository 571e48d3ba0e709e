"""Refresh the screenshots of the web interface in docs/screenshots/.

Starts `mercury serve` on a temporary folder with a small but realistic installation
(series of several modalities sent with DCMTK's storescu, rules, targets of which one is
down, a processing module, jobs that succeeded and one that failed), logs in with
Chromium through Playwright and saves a full-page PNG of every main page.

    .venv/bin/python scripts/screenshots.py            # writes docs/screenshots/*.png
    .venv/bin/python scripts/screenshots.py --keep     # keeps the demo folder to look at

Needs DCMTK (storescu, storescp) and Chromium (/usr/bin/chromium on Debian).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
ADMIN, PASSWORD = "admin", "demo password 2026"
CHROMIUM = "/usr/bin/chromium"
MAX_HEIGHT = 2400
"""Very long pages (a rule's every setting, a series' every tag) are cut here."""
SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}
# (patient, patient id, accession, study description, [(modality, description, images)])
STUDIES = [
    (
        "Lindqvist^Maja",
        "MRN100231",
        "ACC5521",
        "CT Chest with contrast",
        [("CT", "Thorax 1mm", 24), ("CT", "Thorax 5mm MIP", 8)],
    ),
    (
        "Okafor^Chidi",
        "MRN100487",
        "ACC5534",
        "MR Brain",
        [("MR", "Axial T2 FLAIR", 12), ("MR", "Sag T1 MPRAGE", 16)],
    ),
    ("Moreau^Elise", "MRN100502", "ACC5540", "Chest PA", [("CR", "PA", 1)]),
    ("Tanaka^Hiro", "MRN100519", "ACC5547", "US Abdomen", [("US", "Liver", 4)]),
    ("Novak^Petra", "MRN100533", "ACC5552", "CT Abdomen", [("CT", "Abdomen 3mm", 20)]),
]
MODULE = '''\
"""A demo module: copies each image, naming the patient ANONYMOUS."""
import os, sys
from pathlib import Path
import pydicom
source, target = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(source.glob("*.dcm")):
    ds = pydicom.dcmread(path)
    ds.PatientName = "ANONYMOUS"
    ds.PatientID = "ANON"
    ds.save_as(target / path.name)
print(f"anonymized {len(list(target.glob('*.dcm')))} images")
'''
PAGES = [
    "login",
    "dashboard",
    "series",
    "series-detail",
    "studies",
    "study",
    "queues",
    "job",
    "rules",
    "rule-editor",
    "targets",
    "target-editor",
    "modules",
    "config",
    "config-diff",
    "users",
    "audit",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)  # polling interval; the deadline decides


def write_series(
    folder: Path,
    study: tuple[str, str, str, str],
    study_uid: str,
    modality: str,
    description: str,
    count: int,
    number: int,
) -> None:
    patient, patient_id, accession, study_description = study
    series_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    size = 64
    rng = np.random.default_rng(number)
    pixels = rng.integers(0, 1000, size=(size, size), dtype=np.uint16)
    for index in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = SOP_CLASSES[modality]
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientName = patient
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19640312"
        ds.PatientSex = "F" if index % 2 else "M"
        ds.AccessionNumber = accession
        ds.StudyDate = time.strftime("%Y%m%d")
        ds.StudyTime = "093000"
        ds.StudyID = "1"
        ds.StudyDescription = study_description
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        ds.InstanceNumber = index + 1
        ds.Modality = modality
        ds.BodyPartExamined = "CHEST" if modality in ("CT", "CR") else "HEAD"
        ds.Manufacturer = "Demo Medical"
        ds.StationName = f"{modality}01"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.PixelData = np.roll(pixels, index, axis=0).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(folder / f"{index:04d}.dcm", enforce_file_format=True)


def write_config(folder: Path, dicom_port: int, web_port: int, pacs_port: int) -> Path:
    (folder / "modules").mkdir(parents=True, exist_ok=True)
    (folder / "modules" / "anonymize.py").write_text(MODULE, encoding="utf-8")
    (folder / "archive").mkdir(exist_ok=True)
    config = folder / "mercury.yaml"
    config.write_text(
        f"""\
appliance_name: Radiology AI gateway
receiver:
  host: 127.0.0.1
  port: {dicom_port}
  ae_titles: [MERCURY]
storage:
  spool: {folder / "spool"}
  database: sqlite:///{folder / "mercury.db"}
  reserve_mb: 0
web:
  host: 127.0.0.1
  port: {web_port}
timings:
  series_complete_trigger: 4
  study_complete_trigger: 6
dispatch:
  circuit_failures: 1
  circuit_probe_interval: 3600
  retry: {{max_retries: 0}}
targets:
  pacs:
    target_type: dicom
    ip: 127.0.0.1
    port: {pacs_port}
    aet_target: PACS
    contact: PACS team, ext. 4410
    comment: Main clinical PACS
  archive:
    target_type: folder
    folder: {folder / "archive"}
    comment: Research archive (NFS)
  research_pacs:
    target_type: dicom
    ip: 127.0.0.1
    port: {free_port()}
    aet_target: RESEARCH
    contact: research IT
    comment: Research PACS in building B
modules:
  anonymize:
    runner: local
    command: {sys.executable} {folder / "modules" / "anonymize.py"} $MERCURE_IN_DIR $MERCURE_OUT_DIR
    comment: Removes patient identity before research use
    contact: imaging-ai@example.org
rules:
  ct_to_pacs:
    rule: "tags.Modality == 'CT'"
    action: route
    target: [pacs, archive]
    series_complete_on: [association_end]
    comment: Every CT goes to the PACS and the archive
    tags: clinical
  mr_anonymized_research:
    rule: "tags.Modality == 'MR' and 'T2' in tags.SeriesDescription"
    action: both
    processing_module: anonymize
    target: archive
    series_complete_on: [association_end]
    tags: research
  us_research:
    rule: "tags.Modality == 'US'"
    action: route
    target: research_pacs
    series_complete_on: [association_end]
    tags: research
  mr_study_to_pacs:
    rule: "tags.Modality == 'MR'"
    action: route
    action_trigger: study
    target: pacs
    comment: The whole MR study goes to the PACS once it is complete
  discard_cr:
    rule: "tags.Modality == 'CR'"
    action: discard
    series_complete_on: [association_end]
""",
        encoding="utf-8",
    )
    return config


def mercury_exe() -> str:
    return shutil.which("mercury", path=str(Path(sys.executable).parent)) or "mercury"


def cli(config: Path, *args: str, stdin: str = "") -> None:
    done = subprocess.run(
        [mercury_exe(), *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"mercury {' '.join(args)} failed: {done.stderr or done.stdout}")


@contextmanager
def running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def send(folder: Path, port: int) -> None:
    files = sorted(str(p) for p in folder.glob("*.dcm"))
    done = subprocess.run(
        ["storescu", "-aec", "MERCURY", "-aet", "MODALITY", "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    if done.returncode != 0:
        raise SystemExit(f"storescu failed: {done.stderr}")


def build_demo(folder: Path, dicom_port: int) -> None:
    number = 1
    for patient, patient_id, accession, description, series in STUDIES:
        study_uid = generate_uid()
        for modality, series_description, count in series:
            images = folder / "images" / f"{number:02d}"
            write_series(
                images,
                (patient, patient_id, accession, description),
                study_uid,
                modality,
                series_description,
                count,
                number,
            )
            send(images, dicom_port)
            number += 1


def take(
    out: Path, width: int, height: int, folder: Path, dicom_port: int, web_port: int
) -> list[Path]:
    from playwright.sync_api import Page, expect, sync_playwright

    web = f"http://127.0.0.1:{web_port}"
    saved: list[Path] = []

    def shot(page: Page, name: str) -> None:
        page.wait_for_load_state("networkidle")
        page.evaluate("window.scrollTo(0, 0)")
        path = out / f"{name}.png"
        tall = int(page.evaluate("document.documentElement.scrollHeight"))
        if tall > MAX_HEIGHT:
            page.set_viewport_size({"width": width, "height": MAX_HEIGHT})
            page.screenshot(path=str(path), animations="disabled")
            page.set_viewport_size({"width": width, "height": height})
        else:
            page.screenshot(path=str(path), full_page=True, animations="disabled")
        saved.append(path)
        print(f"  {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=1
        )
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{web}/login")
        shot(page, "login")
        page.fill("#name", ADMIN)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Dashboard")

        def jobs(**params: str) -> list[dict[str, Any]]:
            answer = page.request.get(f"{web}/api/jobs", params={"limit": "100", **params})
            items: list[dict[str, Any]] = answer.json()["items"]
            return items

        # A configuration change through the rule editor, for the history and its diff.
        page.goto(f"{web}/rules/us_research")
        page.fill("#rule-form input[name=history_comment]", "US to research, urgent")
        page.select_option("select[name=priority]", "urgent")
        page.click("#rule-form button[type=submit]")
        expect(page.locator("#toasts")).to_contain_text("saved", timeout=15_000)

        page.goto(f"{web}/targets/archive")
        page.fill("#max_parallel", "4")
        page.fill("#target-form input[name=history_comment]", "the NFS server takes 4 at once")
        page.click("#target-form button[type=submit]")
        expect(page.locator("#toasts")).to_contain_text("saved")

        build_demo(folder, dicom_port)
        wait_for(lambda: len(jobs(state="succeeded")) >= 4, 120, "the demo jobs to finish")
        wait_for(lambda: jobs(state="failed"), 60, "the job for the target that is down")

        def studies_done() -> bool:
            answer = page.request.get(f"{web}/api/studies", params={"limit": "100"})
            items = answer.json()["items"]
            return any(study["state"] == "routed" for study in items)

        wait_for(studies_done, 60, "the MR study to complete")

        page.goto(f"{web}/")
        expect(page.locator("#live")).to_contain_text("Thorax 1mm")
        shot(page, "dashboard")
        page.goto(f"{web}/series")
        shot(page, "series")
        page.click("#series-table a:has-text('Axial T2 FLAIR')")
        shot(page, "series-detail")
        page.goto(f"{web}/studies")
        shot(page, "studies")
        page.click("table a:has-text('CT Chest')")
        shot(page, "study")
        page.goto(f"{web}/queues?state=all")
        shot(page, "queues")
        page.goto(f"{web}/jobs/{jobs(state='failed')[0]['id']}")
        shot(page, "job")
        page.goto(f"{web}/rules")
        shot(page, "rules")
        page.goto(f"{web}/rules/ct_to_pacs")
        page.fill(
            "#tester_tags", "Modality: CT\nSeriesDescription: Thorax 1mm\nBodyPartExamined: CT"
        )
        page.click("#tester button[type=submit]")
        expect(page.locator("#test-result")).not_to_be_empty()
        page.click("form.inline-form button[type=submit]")
        expect(page.locator("#replay-result")).not_to_be_empty()
        shot(page, "rule-editor")
        page.goto(f"{web}/targets")
        shot(page, "targets")
        page.goto(f"{web}/targets/pacs")
        page.click("button:has-text('Test connection')")
        expect(page.locator("#probe-result")).not_to_be_empty()
        shot(page, "target-editor")
        page.goto(f"{web}/modules")
        shot(page, "modules")
        page.goto(f"{web}/config")
        shot(page, "config")
        page.goto(f"{web}/config/versions/2")
        shot(page, "config-diff")
        page.goto(f"{web}/users")
        shot(page, "users")
        page.goto(f"{web}/audit")
        shot(page, "audit")
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Refresh the screenshots of mercury's web interface (docs/screenshots/).",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "screenshots", help="Folder for the PNGs."
    )
    parser.add_argument("--width", type=int, default=1440, help="Viewport width (pixels).")
    parser.add_argument("--height", type=int, default=900, help="Viewport height (pixels).")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the demo folder (its path is printed)."
    )
    args = parser.parse_args(argv)
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} (DCMTK) is needed: apt-get install dcmtk")
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is needed: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="mercury-screenshots-"))
    try:
        dicom_port, web_port, pacs_port = free_port(), free_port(), free_port()
        config = write_config(folder, dicom_port, web_port, pacs_port)
        cli(config, "users", "add", ADMIN, "--role", "admin", "--password-stdin", stdin=PASSWORD)
        cli(
            config,
            "users",
            "add",
            "jsmith",
            "--role",
            "operator",
            "--password-stdin",
            stdin=PASSWORD,
        )
        cli(
            config,
            "users",
            "add",
            "reading-room",
            "--role",
            "viewer",
            "--password-stdin",
            stdin=PASSWORD,
        )
        (folder / "pacs").mkdir()
        pacs = ["storescp", "-aet", "PACS", "-od", str(folder / "pacs"), str(pacs_port)]
        serve = [mercury_exe(), "serve", "--config", str(config)]
        with running(pacs, folder / "storescp.log"), running(serve, folder / "mercury.log") as m:
            wait_for(lambda: port_open(web_port) or m.poll() is not None, 60, "mercury")
            if m.poll() is not None:
                raise SystemExit((folder / "mercury.log").read_text(encoding="utf-8"))
            print(f"demo in {folder}, web interface on http://127.0.0.1:{web_port}")
            take(args.out, args.width, args.height, folder, dicom_port, web_port)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
