"""Applying a configuration: validate it, record it as a new version with its author and
comment, journal `config.changed`, and replace the file atomically, all or nothing.

The version row and the journal entry are written in one transaction; the file is replaced
inside it, so a file that cannot be written leaves no version behind. A text equal to the
file is not a new version. A file edited by hand since the last version is recorded first
(author ``file``), so the history and its diffs show that edit too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mercury.config.errors import ConfigIssue
from mercury.web.audit import journal
from mercury.web.changes import (
    RELOADED_SERVICES,
    RestartNote,
    changed_sections,
    needs_reload,
    restart_notes,
)
from mercury.web.context import WebContext
from mercury.web.versions import digest, latest, record_if_new, record_version

HAND_EDIT = "the file as found on disk (first start, or edited by hand)"


class ConfigRejected(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("; ".join(str(issue) for issue in issues))
        self.issues = issues


@dataclass(frozen=True)
class Outcome:
    version: int | None
    changed: bool
    restart_required: list[RestartNote] = field(default_factory=list)
    reloads: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)


def record_file(context: WebContext) -> int | None:
    """Record the configuration file as a version unless the newest one holds it."""
    text = context.config_file.read()
    with context.sessions.begin() as session:
        return record_if_new(session, text, now=context.clock(), comment=HAND_EDIT)


def apply_text(
    context: WebContext,
    text: str,
    *,
    author: str,
    comment: str,
    source: str = "api",
    restored_from: int | None = None,
) -> Outcome:
    config, issues = context.config_file.check(text)
    if config is None:
        raise ConfigRejected(issues)
    with context.apply_lock:
        old = context.config_file.current()
        on_disk = context.config_file.read()
        now = context.clock()
        with context.sessions.begin() as session:
            record_if_new(session, on_disk, now=now, comment=HAND_EDIT)
            if digest(text) == digest(on_disk):
                newest = latest(session)
                return Outcome(newest.version if newest else None, changed=False)
            row = record_version(
                session,
                text,
                author=author,
                comment=comment,
                source=source,
                now=now,
                restored_from=restored_from,
            )
            notes = restart_notes(old, config)
            reloads = list(RELOADED_SERVICES) if needs_reload(old, config) else []
            sections = changed_sections(old, config)
            what = f"restored version {restored_from} as " if restored_from else "applied "
            journal(
                session,
                author,
                "config.changed",
                f"{author} {what}configuration version {row.version}"
                + (f": {comment}" if comment else "")
                + (f" (changed: {', '.join(sections)})" if sections else ""),
                version=row.version,
                comment=comment,
                source=source,
                restored_from=restored_from,
                sections=sections,
                restart_required=[note.section for note in notes],
                reloads=reloads,
            )
            session.flush()
            context.config_file.write(text, config)
            return Outcome(row.version, True, notes, reloads, sections)
