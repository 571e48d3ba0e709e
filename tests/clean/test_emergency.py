"""The emergency clean on a small real file system (a 4 MB tmpfs as the spool): finished
series go before their retention, success first, then discard, then error, oldest first,
until the disk is below the threshold; pending data (receiving, processing, unsent) stays."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from mercury.clean.files import disk_usage
from tests.clean.support import World
from tests.route.support import Clock

SIZE = 40_000  # bytes per image
IMAGES = 10  # images per series
LONG = 10**7  # retention: nothing is due, only the emergency clean removes anything


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "spool"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (these tests run as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def full(engine: Engine, clock: Clock, small_disk: Path) -> Iterator[World]:
    world = World(
        engine,
        clock,
        small_disk,
        retention={"success": LONG, "discard": LONG, "error": LONG},
    )
    yield world
    world.close()


def _stored(world: World, series: str, description: str = "Axial") -> None:
    world.receive(series, IMAGES, description=description, size=SIZE)


def test_emergency_clean_removes_finished_data_oldest_first(full: World, clock: Clock) -> None:
    world = full
    # Finished, in the order their outcomes were recorded.
    old_success, discard, error, new_success = "1.2.5.1", "1.2.5.2", "1.2.5.3", "1.2.5.4"
    # Pending: waiting to be sent, being processed, still receiving.
    unsent, processing, receiving = "1.2.5.5", "1.2.5.6", "1.2.5.7"
    for series in (old_success, error, new_success, unsent):
        _stored(world, series)
    _stored(world, discard, "Scout")
    _stored(world, processing, "Process")
    assert len(world.route()) == 6
    _stored(world, receiving)
    world.finish(old_success)
    clock.advance(10)
    world.finish(error, "failed")
    clock.advance(10)
    world.finish(new_success)
    world.finish(processing, "running")

    cleaner = world.cleaner(lambda: disk_usage(world.spool.root))
    start = cleaner.usage().percent
    share = 100 * IMAGES * SIZE / (4 * 2**20)  # one series' part of the disk
    assert start > 5 * share  # seven series are stored

    # Two series' worth over the threshold: the two success series go, oldest first.
    cleaner.threshold = int(start - 1.5 * share)
    report = cleaner.scan()
    assert [(c.series_uid, c.outcome, c.reason) for c in report.cleaned] == [
        (old_success, "success", "emergency"),
        (new_success, "success", "emergency"),
    ]
    assert report.emergency is not None
    assert report.emergency.relieved
    assert cleaner.usage().percent <= cleaner.threshold
    assert world.files(old_success) == world.files(new_success) == []
    for series in (discard, error, unsent, processing, receiving):
        assert len(world.files(series)) == IMAGES, series
    [started] = world.events("clean.emergency")
    assert started.severity == "warning"
    assert started.details["threshold"] == cleaner.threshold
    entries = world.events("series.cleaned")
    assert [e.series_uid for e in entries] == [old_success, new_success]
    assert all(e.details["reason"] == "emergency" for e in entries)
    assert all("disk" in e.message for e in entries)

    # Lower still: discard, then error.
    cleaner.threshold = int(cleaner.usage().percent - 1.5 * share)
    assert [c.series_uid for c in cleaner.scan().cleaned] == [discard, error]

    # Below what finished data can free: everything left is pending and stays.
    cleaner.threshold = 1
    report = cleaner.scan()
    assert report.cleaned == []
    assert report.emergency is not None
    assert not report.emergency.relieved
    for series in (unsent, processing, receiving):
        assert len(world.files(series)) == IMAGES, series
    [short] = world.events("clean.emergency_short")
    assert short.severity == "error"
    assert "pending" in short.message
    cleaner.scan()
    assert len(world.events("clean.emergency_short")) == 1  # said once, not every scan

    # Nothing was due by retention: every clean was the emergency's.
    assert {e.details["reason"] for e in world.events("series.cleaned")} == {"emergency"}


def test_the_dry_run_estimate_picks_the_same_series(full: World, clock: Clock) -> None:
    world = full
    for series in ("1.2.6.1", "1.2.6.2", "1.2.6.3"):
        _stored(world, series)
    world.route()
    world.finish("1.2.6.1")
    clock.advance(10)
    world.finish("1.2.6.2")
    cleaner = world.cleaner(lambda: disk_usage(world.spool.root))
    share = 100 * IMAGES * SIZE / (4 * 2**20)
    below = cleaner.usage().percent - 0.5 * share
    planned = cleaner.emergency_preview(below=below)
    assert [c.info.series_uid for c in planned] == ["1.2.6.1"]
    assert len(world.files("1.2.6.1")) == IMAGES  # a preview removes nothing
    report = cleaner.emergency(below=below)
    assert report is not None
    assert report.removed == 1
    assert world.files("1.2.6.1") == []
    assert len(world.files("1.2.6.2")) == IMAGES
