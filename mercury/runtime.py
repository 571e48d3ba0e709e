"""What every service of one mercury process shares: configuration, index, spool, writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from mercury.config.models import MercuryConfig
from mercury.store.db import make_engine, upgrade
from mercury.store.index_writer import IndexWriter
from mercury.store.spool import Spool


@dataclass
class Runtime:
    config: MercuryConfig
    engine: Engine
    spool: Spool
    writer: IndexWriter
    removed_temp_files: int = 0
    # Set by `mercury serve`: the configuration file, and each service's state (for health).
    config_path: Path | None = None
    services: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, config: MercuryConfig) -> Runtime:
        """Open the index (migrating it), prepare the spool and start the index writer."""
        storage = config.storage
        engine = make_engine(storage.database, storage.durability)
        upgrade(engine)
        spool = Spool(storage.spool, reserve_bytes=storage.reserve_mb * 2**20)
        removed = spool.prepare()
        writer = IndexWriter(engine)
        writer.start()
        return cls(config, engine, spool, writer, removed)

    def close(self) -> None:
        self.writer.stop()
        self.engine.dispose()
