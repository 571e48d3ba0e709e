"""Group commit for the receiver.

Every acknowledgement waits for its index row to be committed. Committing each
instance alone would cost one database sync per instance; instead one thread takes
whatever arrived while the previous transaction was running and commits it as one
transaction, so concurrent associations share the cost. Nothing is acknowledged
before the transaction holding its row has committed.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Table,
    bindparam,
    case,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from mercury.store.journal import event_row
from mercury.store.models import (
    AssociationRow,
    EventRow,
    InstanceRow,
    SeriesRow,
    SeriesVariantRow,
    StudyRow,
)
from mercury.store.spool import fsync_directories

log = logging.getLogger("mercury.store")
T = TypeVar("T")

# Tags that identify or time the single image: they differ from image to image in almost
# every series, so they do not make a new variant (a rule reading them sees the values of
# the first image that carried the variant).
PER_IMAGE_TAGS = frozenset(
    {"SOPInstanceUID", "InstanceNumber", "AcquisitionNumber", "AcquisitionDate", "AcquisitionTime"}
)
# Variants recorded per series at most (a configured additional tag that differs on every
# image, such as SliceLocation, must not double the index writes of a long series).
MAX_VARIANTS_PER_SERIES = 256
# Series whose known variants the writer remembers (the most recently received).
VARIANT_CACHE_SERIES = 4096


def variant_digest(tags: Mapping[str, str]) -> str:
    """A stable digest of an image's tag set without :data:`PER_IMAGE_TAGS`: names, value
    lengths and values, so no two different sets share the text that is hashed (~10 us)."""
    names = sorted(tags.keys() - PER_IMAGE_TAGS)
    values = [tags[name] for name in names]
    text = "\x00".join(names) + "\x02" + ",".join(map(str, map(len, values))) + "\x02"
    text += "".join(values)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _variant_key(tags: Mapping[str, str]) -> int:
    """The in-memory identity of a variant: Python's hash of the same tag set (~5 us, a third
    of the digest). Not stable across processes, so never stored; the digest is computed
    only for a variant this process has not seen yet."""
    rest = dict(tags)
    for name in PER_IMAGE_TAGS:
        rest.pop(name, None)
    return hash(frozenset(rest.items()))


@dataclass(frozen=True)
class ReceivedInstance:
    """An instance whose bytes are durable in the spool, waiting for its index row."""

    sop_instance_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    transfer_syntax: str
    path: str
    size: int
    calling_ae: str
    called_ae: str
    peer_host: str
    association_id: str
    received_at: datetime
    tags: dict[str, str]
    changed_dirs: tuple[Path, ...] = ()
    expected_count: int | None = None  # from NumberOfSeriesRelatedInstances/ImagesInAcquisition
    study_date: str = ""  # StudyDate (YYYYMMDD), read for the index even if not in tags


@dataclass(frozen=True)
class InstanceOutcome:
    duplicate: bool
    new_series: bool


@dataclass
class _Item:
    future: Future[Any]
    instance: ReceivedInstance | None = None
    work: Callable[[Session], Any] | None = None
    dirs: tuple[Path, ...] = field(default=())


_STOP = object()


class IndexWriter:
    """One writer thread that batches index transactions."""

    def __init__(self, engine: Engine, *, max_batch: int = 500) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._sql = _Statements(engine.dialect.name)
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._max_batch = max_batch
        self._variants = _VariantCache()
        self._thread = threading.Thread(target=self._run, name="mercury-index-writer", daemon=True)
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self) -> None:
        """Finish everything queued, then stop."""
        if self._started:
            self._queue.put(_STOP)
            self._thread.join()
            self._started = False

    def add_instance(self, instance: ReceivedInstance) -> Future[InstanceOutcome]:
        future: Future[InstanceOutcome] = Future()
        self._queue.put(_Item(future, instance=instance, dirs=instance.changed_dirs))
        return future

    def run(self, work: Callable[[Session], T]) -> Future[T]:
        """Run ``work`` inside the next batch transaction."""
        future: Future[T] = Future()
        self._queue.put(_Item(future, work=work))
        return future

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch: list[_Item] = [first]  # type: ignore[list-item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[_Item]) -> None:
        try:
            fsync_directories(d for item in batch for d in item.dirs)
            results = self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1:
                log.exception("index transaction failed")
                batch[0].future.set_exception(exc)
                return
            # One bad item must not fail the others: commit them one by one.
            for item in batch:
                self._commit_batch([item])
            return
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    def _transaction(self, batch: list[_Item]) -> list[Any]:
        results: list[Any] = []
        try:
            with self._sessions() as session, session.begin():
                run: list[ReceivedInstance] = []
                for item in batch:
                    if item.instance is not None:
                        run.append(item.instance)
                        continue
                    if run:
                        results.extend(self._write_instances(session, run))
                        run = []
                    assert item.work is not None
                    results.append(item.work(session))
                if run:
                    results.extend(self._write_instances(session, run))
        except BaseException:
            self._variants.rollback()
            raise
        self._variants.commit()
        return results

    def _write_instances(
        self, session: Session, records: list[ReceivedInstance]
    ) -> list[InstanceOutcome]:
        # Core statements built once (see _Statements): with a batch of one instance per
        # transaction on a busy association, statement compilation would cost more than
        # the commit itself.
        sql = self._sql
        conn = session.connection()
        if len(records) == 1:
            # One association sending alone commits one instance per transaction: the
            # insert itself says whether the UID is new (it returns the row it added).
            row = conn.execute(sql.insert_new_instance, _instance_row(records[0])).first()
            added = 0 if row is None else 1
            existing = set() if added else {records[0].sop_instance_uid}
        else:
            existing = set(
                conn.execute(
                    sql.existing_instances, {"uids": [r.sop_instance_uid for r in records]}
                ).scalars()
            )
            added = 0
        new_rows: list[dict[str, Any]] = []
        duplicates: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        outcomes: list[tuple[ReceivedInstance, bool]] = []
        for record in records:
            is_duplicate = record.sop_instance_uid in existing
            existing.add(record.sop_instance_uid)
            outcomes.append((record, is_duplicate))
            if not is_duplicate:
                if not added:
                    new_rows.append(_instance_row(record))
                continue
            duplicates.append({"b_uid": record.sop_instance_uid, **_instance_row(record)})
            events.append(
                event_row(
                    stage="receive",
                    kind="instance.duplicate",
                    severity="warning",
                    message=(
                        f"SOP instance {record.sop_instance_uid} received again from "
                        f"{record.calling_ae}@{record.peer_host}; kept the newest copy"
                    ),
                    study_uid=record.study_uid,
                    series_uid=record.series_uid,
                    sop_instance_uid=record.sop_instance_uid,
                    association_id=record.association_id,
                    details={"size": record.size, "transfer_syntax": record.transfer_syntax},
                )
            )
        if new_rows:
            conn.execute(sql.insert_instance, new_rows)
        if duplicates:
            conn.execute(sql.update_duplicate, duplicates)
        variants = self._variants.new_variants(records, events)
        if variants:
            conn.execute(sql.insert_variant, variants)
        new_series = self._update_series(conn, outcomes, events)
        self._update_studies(conn, outcomes, new_series)
        self._update_associations(conn, records)
        if events:
            conn.execute(sql.insert_event, events)
        return [
            InstanceOutcome(duplicate=dup, new_series=rec.series_uid in new_series)
            for rec, dup in outcomes
        ]

    def _update_series(
        self,
        conn: Connection,
        outcomes: list[tuple[ReceivedInstance, bool]],
        events: list[dict[str, Any]],
    ) -> set[str]:
        sql = self._sql
        groups = _group(outcomes, lambda r: r.series_uid)
        if len(groups) == 1 and _update_one(conn, sql.update_series, _series_change(groups)):
            return set()  # the series existed: counted, nothing new
        known = set(conn.execute(sql.existing_series, {"uids": list(groups)}).scalars())
        candidates = []
        for uid, members in groups.items():
            if uid in known:
                continue
            first = members[0][0]
            tags = first.tags
            candidates.append(
                {
                    "series_uid": uid,
                    "study_uid": first.study_uid,
                    "modality": tags.get("Modality", "")[:16],
                    "series_description": tags.get("SeriesDescription", "")[:128],
                    "series_number": tags.get("SeriesNumber", "")[:16],
                    "tags": tags,
                    "instance_count": 0,
                    "duplicate_count": 0,
                    "bytes": 0,
                    "first_received_at": first.received_at,
                    "last_received_at": first.received_at,
                    "last_association_id": None,
                    "expected_count": first.expected_count,
                    "route_round": 0,
                    "state": "receiving",
                }
            )
        if candidates:
            # Another receiver sharing the database may have inserted it meanwhile.
            conn.execute(sql.insert_series, candidates)
        inserted: set[str] = {str(c["series_uid"]) for c in candidates}
        conn.execute(sql.update_series, _series_change(groups))
        for new_uid in inserted:
            first = groups[new_uid][0][0]
            events.append(
                event_row(
                    stage="receive",
                    kind="series.received",
                    message=(
                        f"New series {first.tags.get('SeriesDescription', '')!r} "
                        f"({first.tags.get('Modality', '?')}) "
                        f"from {first.calling_ae}@{first.peer_host}"
                    ),
                    study_uid=first.study_uid,
                    series_uid=new_uid,
                    association_id=first.association_id,
                )
            )
        return inserted

    def _update_studies(
        self,
        conn: Connection,
        outcomes: list[tuple[ReceivedInstance, bool]],
        new_series: set[str],
    ) -> None:
        sql = self._sql
        groups = _group(outcomes, lambda r: r.study_uid)
        changes = _study_change(groups, new_series)
        if len(groups) == 1 and _update_one(conn, sql.update_study, changes):
            return
        known = set(conn.execute(sql.existing_studies, {"uids": list(groups)}).scalars())
        candidates = []
        for uid, members in groups.items():
            if uid in known:
                continue
            first = members[0][0]
            tags = first.tags
            candidates.append(
                {
                    "study_uid": uid,
                    "patient_id": tags.get("PatientID", "")[:64],
                    "patient_name": tags.get("PatientName", "")[:324],
                    "accession_number": tags.get("AccessionNumber", "")[:64],
                    "study_date": (first.study_date or tags.get("StudyDate", ""))[:16],
                    "study_description": tags.get("StudyDescription", "")[:128],
                    "series_count": 0,
                    "instance_count": 0,
                    "first_received_at": first.received_at,
                    "last_received_at": first.received_at,
                    "pending_rules": [],
                    "state": "receiving",
                }
            )
        if candidates:
            conn.execute(sql.insert_study, candidates)
        conn.execute(sql.update_study, changes)

    def _update_associations(self, conn: Connection, records: list[ReceivedInstance]) -> None:
        totals: dict[str, list[int]] = {}
        for record in records:
            entry = totals.setdefault(record.association_id, [0, 0])
            entry[0] += 1
            entry[1] += record.size
        conn.execute(
            self._sql.update_association,
            [{"b_id": key, "b_n": n, "b_bytes": size} for key, (n, size) in totals.items()],
        )


_Members = dict[str, list[tuple[ReceivedInstance, bool]]]


def _series_change(groups: _Members) -> list[dict[str, Any]]:
    return [
        {
            "b_uid": uid,
            "b_new": sum(1 for _, dup in members if not dup),
            "b_dup": sum(1 for _, dup in members if dup),
            "b_bytes": sum(r.size for r, dup in members if not dup),
            "b_last": max(r.received_at for r, _ in members),
            "b_assoc": members[-1][0].association_id,
        }
        for uid, members in groups.items()
    ]


def _study_change(groups: _Members, new_series: set[str]) -> list[dict[str, Any]]:
    return [
        {
            "b_uid": uid,
            "b_new": sum(1 for _, dup in members if not dup),
            "b_series": len({r.series_uid for r, _ in members} & new_series),
            "b_last": max(r.received_at for r, _ in members),
        }
        for uid, members in groups.items()
    ]


def _update_one(conn: Connection, statement: Any, changes: list[dict[str, Any]]) -> bool:
    """Apply the one row's change; False when the row does not exist yet (nothing changed).
    The rowcount of a single-row UPDATE is exact on every driver, unlike executemany's."""
    [change] = changes
    return bool(conn.execute(statement, change).rowcount == 1)


class _Statements:
    """The instance path's statements, built once per dialect so SQLAlchemy's compiled
    cache serves every batch."""

    def __init__(self, dialect: str) -> None:
        dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        instances = cast(Table, InstanceRow.__table__)
        series = cast(Table, SeriesRow.__table__)
        studies = cast(Table, StudyRow.__table__)
        associations = cast(Table, AssociationRow.__table__)
        self.existing_instances = select(instances.c.sop_instance_uid).where(
            instances.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
        )
        self.insert_instance = insert(instances)
        self.insert_new_instance = (
            dialect_insert(instances)
            .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(instances.c.sop_instance_uid)
        )
        self.update_duplicate = (
            update(instances)
            .where(instances.c.sop_instance_uid == bindparam("b_uid"))
            .values(
                {
                    **{
                        name: bindparam(name)
                        for name in _INSTANCE_COLUMNS
                        if name != "sop_instance_uid"
                    },
                    "duplicate_count": instances.c.duplicate_count + 1,
                    "route_round": 0,
                }
            )
        )
        self.existing_series = select(series.c.series_uid).where(
            series.c.series_uid.in_(bindparam("uids", expanding=True))
        )
        self.insert_series = dialect_insert(series).on_conflict_do_nothing(
            index_elements=["series_uid"]
        )
        self.update_series = (
            update(series)
            .where(series.c.series_uid == bindparam("b_uid"))
            .values(
                instance_count=series.c.instance_count + bindparam("b_new"),
                duplicate_count=series.c.duplicate_count + bindparam("b_dup"),
                bytes=series.c.bytes + bindparam("b_bytes"),
                last_received_at=bindparam("b_last"),
                last_association_id=bindparam("b_assoc"),
            )
        )
        self.existing_studies = select(studies.c.study_uid).where(
            studies.c.study_uid.in_(bindparam("uids", expanding=True))
        )
        self.insert_study = dialect_insert(studies).on_conflict_do_nothing(
            index_elements=["study_uid"]
        )
        self.update_study = (
            update(studies)
            .where(studies.c.study_uid == bindparam("b_uid"))
            .values(
                instance_count=studies.c.instance_count + bindparam("b_new"),
                series_count=studies.c.series_count + bindparam("b_series"),
                last_received_at=bindparam("b_last"),
                # A new series re-opens a study the router had settled (see Router).
                state=case(
                    (bindparam("b_series", type_=Integer) > 0, literal("receiving")),
                    else_=studies.c.state,
                ),
            )
        )
        self.update_association = (
            update(associations)
            .where(associations.c.id == bindparam("b_id"))
            .values(
                instances=associations.c.instances + bindparam("b_n"),
                bytes=associations.c.bytes + bindparam("b_bytes"),
            )
        )
        self.insert_event = insert(cast(Table, EventRow.__table__))
        self.insert_variant = dialect_insert(
            cast(Table, SeriesVariantRow.__table__)
        ).on_conflict_do_nothing(index_elements=["series_uid", "digest"])


class _VariantCache:
    """The variants known per series, for the most recently received series, so that an
    image like one before costs a hash and a set lookup, not a digest or a query. What a
    transaction added is forgotten if it does not commit; a series the cache does not know
    (evicted, or after a restart) costs one conflict-ignoring insert per variant."""

    def __init__(self, max_series: int = VARIANT_CACHE_SERIES) -> None:
        self._known: OrderedDict[str, set[int]] = OrderedDict()
        self._max_series = max_series
        self._pending: list[tuple[str, int]] = []

    def new_variants(
        self, records: list[ReceivedInstance], events: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Rows for the variants of ``records`` not known yet (journal rows for a series
        reaching the limit are appended to ``events``)."""
        rows: list[dict[str, Any]] = []
        known = self._known
        for record in records:
            series_uid = record.series_uid
            keys = known.get(series_uid)
            if keys is None:
                keys = known[series_uid] = set()
                if len(known) > self._max_series:
                    known.popitem(last=False)
            else:
                known.move_to_end(series_uid)
            key = _variant_key(record.tags)
            if key in keys or len(keys) >= MAX_VARIANTS_PER_SERIES:
                continue
            keys.add(key)
            self._pending.append((series_uid, key))
            rows.append(
                {
                    "series_uid": series_uid,
                    "digest": variant_digest(record.tags),
                    "tags": record.tags,
                    "sop_instance_uid": record.sop_instance_uid,
                    "received_at": record.received_at,
                }
            )
            if len(keys) == MAX_VARIANTS_PER_SERIES:
                events.append(
                    event_row(
                        stage="receive",
                        kind="series.variants_limited",
                        severity="warning",
                        message=(
                            f"series {series_uid} has {MAX_VARIANTS_PER_SERIES} different tag "
                            "sets; further ones are not recorded for every_instance rules"
                        ),
                        study_uid=record.study_uid,
                        series_uid=series_uid,
                        sop_instance_uid=record.sop_instance_uid,
                    )
                )
        return rows

    def commit(self) -> None:
        self._pending.clear()

    def rollback(self) -> None:
        """Forget the variants of a transaction that did not commit."""
        for series_uid, key in self._pending:
            keys = self._known.get(series_uid)
            if keys is not None:
                keys.discard(key)
        self._pending.clear()


_INSTANCE_COLUMNS = (
    "sop_instance_uid",
    "series_uid",
    "study_uid",
    "sop_class_uid",
    "transfer_syntax",
    "path",
    "size",
    "calling_ae",
    "called_ae",
    "peer_host",
    "association_id",
    "received_at",
)


def _instance_row(record: ReceivedInstance) -> dict[str, Any]:
    return {
        "sop_instance_uid": record.sop_instance_uid,
        "series_uid": record.series_uid,
        "study_uid": record.study_uid,
        "sop_class_uid": record.sop_class_uid,
        "transfer_syntax": record.transfer_syntax,
        "path": record.path,
        "size": record.size,
        "calling_ae": record.calling_ae,
        "called_ae": record.called_ae,
        "peer_host": record.peer_host,
        "association_id": record.association_id,
        "received_at": record.received_at,
    }


def _group(
    outcomes: Iterable[tuple[ReceivedInstance, bool]], key: Callable[[ReceivedInstance], str]
) -> dict[str, list[tuple[ReceivedInstance, bool]]]:
    groups: dict[str, list[tuple[ReceivedInstance, bool]]] = {}
    for record, duplicate in outcomes:
        groups.setdefault(key(record), []).append((record, duplicate))
    return groups
