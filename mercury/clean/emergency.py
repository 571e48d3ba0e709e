"""The emergency clean: when the spool's disk use is above the threshold, finished series
are removed before their retention (success first, then discard, then error; oldest
outcome first within each), one at a time, until it is not. Pending data (receiving, not
routed, processing, waiting to be sent) is never removed: if only that is left, the
receiver refuses new images (0xA700) and the journal says why the clean stopped short."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mercury.clean.record import journal
from mercury.clean.report import Candidate, CleanReport, EmergencyReport, Listener, Quiet

if TYPE_CHECKING:
    from mercury.clean.cleaner import Cleaner

log = logging.getLogger("mercury.clean")


class Emergency:
    def __init__(self, cleaner: Cleaner) -> None:
        self.cleaner = cleaner
        self._short = False  # the last run could not get below the threshold

    def run(
        self,
        *,
        below: float | None = None,
        report: CleanReport | None = None,
        listener: Listener | None = None,
    ) -> EmergencyReport | None:
        """Clean until the disk use is at or below ``below`` (by default
        timings.emergency_clean_percentage); None when it already was."""
        cleaner = self.cleaner
        listener = listener or Quiet()
        threshold = cleaner.threshold if below is None else below
        usage = cleaner.usage()
        before = usage.percent
        if before <= threshold:
            self._short = False
            return None
        ranked = cleaner.finished()
        if ranked:
            log.warning(
                "spool disk %.1f%% full (above %g%%): removing finished data early",
                before,
                threshold,
            )
            with cleaner.sessions.begin() as session:
                journal(
                    session,
                    cleaner.clock(),
                    kind="clean.emergency",
                    severity="warning",
                    message=f"The spool's disk is {before:.1f}% full, above {threshold:g}%: "
                    "removing finished series before their retention, oldest first",
                    details={"percent": round(before, 2), "threshold": threshold},
                )
        listener.planned("emergency", len(ranked))
        removed = 0
        for candidate in ranked:
            if cleaner.stopping:
                break
            item = cleaner.clean(
                candidate, {"disk_percent": round(usage.percent, 2), "threshold": threshold}
            )
            if item is not None:
                removed += 1
                if report is not None:
                    report.cleaned.append(item)
                listener.cleaned(item)
            usage = cleaner.usage()
            if usage.percent <= threshold:
                break
        result = EmergencyReport(threshold, before, usage.percent, removed)
        if result.relieved:
            self._short = False
        elif not self._short and not cleaner.stopping:
            self._short = True
            self._journal_short(usage.percent, threshold)
        return result

    def _journal_short(self, percent: float, threshold: float) -> None:
        """Said once per episode, not at every scan while the disk stays full."""
        log.error("spool disk still %.1f%% full: nothing finished is left to remove", percent)
        with self.cleaner.sessions.begin() as session:
            journal(
                session,
                self.cleaner.clock(),
                kind="clean.emergency_short",
                severity="error",
                message=f"The spool's disk is still {percent:.1f}% full (above {threshold:g}%) "
                "with no finished data left to remove: what remains is pending (receiving, "
                "routing, processing or waiting to be sent), which is never removed",
                details={"percent": round(percent, 2), "threshold": threshold},
            )

    def preview(
        self, *, below: float | None = None, skip: set[str] | None = None
    ) -> list[Candidate]:
        """The series a run would remove, estimated from their sizes in the index; the
        ``skip`` series (removed by retention first) count as already gone."""
        cleaner = self.cleaner
        threshold = cleaner.threshold if below is None else below
        usage = cleaner.usage()
        skip = skip or set()
        usable = usage.used + usage.available
        used = usage.used - sum(info.bytes for info in cleaner.infos(skip))
        chosen: list[Candidate] = []
        for candidate in cleaner.finished():
            if not usable or 100.0 * used / usable <= threshold:
                break
            if candidate.info.series_uid in skip:
                continue
            chosen.append(candidate)
            used -= candidate.info.bytes
        return chosen
