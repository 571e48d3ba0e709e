"""Real servers for notification tests: an HTTP webhook receiver and an SMTP server, both
in threads on free local ports, recording what they were sent; and an index with stored
series, notify jobs and an injectable clock."""

from __future__ import annotations

import ipaddress
import json
import random
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session as DbSession

from mercury.config.load import config_from_data
from mercury.config.models import MercuryConfig
from mercury.notify.notifier import Notifier
from mercury.store.jobs import JobSpec, create_jobs
from mercury.store.models import EventRow, JobRow, SeriesRow, StudyRow
from tests.helpers import free_port, wait_for

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
STUDY = "1.2.826.0.1.3680043.10.1.1"
SERIES = "1.2.826.0.1.3680043.10.1.1.1"
TAGS = {
    "Modality": "CT",
    "SeriesDescription": "CT Thorax",
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-42",
    "AccessionNumber": "ACC-7",
    "DeviceSerialNumber": "SN-1234",
}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


class WebhookReceiver:
    """An HTTP server answering POSTs with the next status of ``statuses`` (then 200)."""

    def __init__(self, port: int | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.requests: list[Request] = []
        self.statuses: list[int] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        Request(self.path, dict(self.headers.items()), json.loads(raw))
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[Any]:
        with self._lock:
            return [request.body for request in self.requests]


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on a free port; with ``login``, it requires that user and password
    (over plain text: this is a test)."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.port = free_port()
        self.recorder = _Recorder()
        self.logins: list[str] = []
        kwargs: dict[str, Any] = {}
        if login is not None:
            kwargs = {
                "auth_require_tls": False,
                "auth_required": True,
                "authenticator": self._authenticator(login),
            }
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **kwargs)

    def _authenticator(self, login: tuple[str, str]) -> Any:
        def check(
            server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == login
            )
            if ok:
                self.logins.append(data.login.decode())
            return AuthResult(success=ok, handled=False)

        return check

    @property
    def messages(self) -> list[tuple[Envelope, EmailMessage]]:
        return self.recorder.messages


def make_config(tmp: Path, rules: dict[str, Any], **notifications: Any) -> MercuryConfig:
    data = {
        "storage": {"spool": str(tmp / "spool"), "database": "sqlite://"},
        "notifications": {"retries": 2, **notifications},
        "targets": {"pacs": {"target_type": "dummy"}},
        "rules": rules,
    }
    return config_from_data(data, source="test.yaml")


@dataclass
class Index:
    """An index with one stored series, notify jobs on demand, and notifiers."""

    engine: Engine
    clock: Clock = field(default_factory=Clock)
    notifiers: list[Notifier] = field(default_factory=list)

    def store_series(
        self, series_uid: str = SERIES, study_uid: str = STUDY, **tags: str
    ) -> dict[str, str]:
        values = {**TAGS, **tags, "SeriesInstanceUID": series_uid}
        with DbSession(self.engine) as session, session.begin():
            if session.get(StudyRow, study_uid) is None:
                session.add(
                    StudyRow(
                        study_uid=study_uid,
                        patient_id=values["PatientID"],
                        patient_name=values["PatientName"],
                        accession_number=values["AccessionNumber"],
                        first_received_at=self.clock(),
                        last_received_at=self.clock(),
                    )
                )
            session.add(
                SeriesRow(
                    series_uid=series_uid,
                    study_uid=study_uid,
                    modality=values.get("Modality", ""),
                    tags=values,
                    first_received_at=self.clock(),
                    last_received_at=self.clock(),
                )
            )
        return values

    def notify_job(self, rule: str, event: str = "completed", **details: Any) -> str:
        spec = JobSpec(
            kind="notify",
            rule=rule,
            scope="series",
            study_uid=STUDY,
            series_uid=SERIES,
            instances=(),
            details={"event": event, **details},
        )
        with DbSession(self.engine) as session, session.begin():
            return create_jobs(session, [spec], now=self.clock(), decision_id=None)[0]

    def source_job(self, rule: str, *, kind: str = "process", modules: tuple[str, ...] = ()) -> str:
        spec = JobSpec(
            kind=kind,  # type: ignore[arg-type]
            rule=rule,
            scope="series",
            study_uid=STUDY,
            series_uid=SERIES,
            instances=(),
            modules=modules,
            target="pacs" if kind == "dispatch" else None,
        )
        with DbSession(self.engine) as session, session.begin():
            return create_jobs(session, [spec], now=self.clock(), decision_id=None)[0]

    def notifier(self, config: MercuryConfig) -> Notifier:
        notifier = Notifier(self.engine, config, owner="n1", clock=self.clock, rng=random.Random(7))
        self.notifiers.append(notifier)
        return notifier

    @staticmethod
    def run(notifier: Notifier) -> int:
        started = notifier.tick()
        wait_for(lambda: not notifier.busy(), 60, "the notifier's deliveries to finish")
        return started

    def job(self, job_id: str) -> JobRow:
        with DbSession(self.engine) as session:
            row = session.get(JobRow, job_id)
            assert row is not None
            session.expunge(row)
            return row

    def jobs(self, kind: str = "notify") -> list[JobRow]:
        with DbSession(self.engine) as session:
            rows = list(
                session.scalars(
                    select(JobRow).where(JobRow.kind == kind).order_by(JobRow.created_at)
                )
            )
            session.expunge_all()
            return rows

    def events(self, *kinds: str) -> list[EventRow]:
        with DbSession(self.engine) as session:
            rows = list(
                session.scalars(
                    select(EventRow).where(EventRow.kind.in_(kinds)).order_by(EventRow.id)
                )
            )
            session.expunge_all()
            return rows

    def insert_event(self, kind: str, *, event_id: int | None = None, **fields: Any) -> None:
        from mercury.store.journal import event_row

        row = event_row(stage=fields.pop("stage", "test"), kind=kind, message=kind, **fields)
        if event_id is not None:
            row["id"] = event_id
        with DbSession(self.engine) as session, session.begin():
            session.execute(insert(EventRow), [row])

    def close(self) -> None:
        for notifier in self.notifiers:
            notifier.close(grace=5)


def self_signed(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for 127.0.0.1 with a self-signed certificate, and that
    certificate as a PEM file (the CA bundle that trusts it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / "webhook.pem"
    key_path = folder / "webhook.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
