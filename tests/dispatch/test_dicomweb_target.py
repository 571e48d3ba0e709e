"""The dicomweb target: STOW-RS into a real Orthanc, the server answers and failures a small
local HTTP server produces on demand, and the file:// folder layout."""

from __future__ import annotations

import base64
import datetime
import io
import json
import socket
import ssl
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from mercury.config.targets import DicomWebTarget
from mercury.dispatch.base import SenderContext, SendFailed, Shipment, TargetUnreachable
from mercury.dispatch.registry import create_sender
from mercury.dispatch.targets.dicomweb import (
    NOT_MENTIONED,
    DicomWebFolderSender,
    DicomWebSender,
)
from tests.dispatch.support import shipment
from tests.helpers import free_port, make_ct_series, make_small_images
from tests.peers import Orthanc

MIB = 1024 * 1024
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"


def make_sender(url: str, tmp_path: Path, **options: Any) -> Any:
    target = DicomWebTarget(target_type="dicomweb", url=url, **options)
    context = SenderContext(default_ae_title="MERCURY", work_folder=tmp_path)
    return create_sender("web", target, context)


def compressed_files() -> list[Path]:
    names = ("JPEG2000.dcm", "SC_rgb_rle.dcm")
    return [Path(str(get_testdata_file(name))) for name in names]


def uid_of(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


# -- Orthanc -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


def orthanc_files(orthanc: Orthanc) -> dict[str, bytes]:
    """Every instance Orthanc holds, as the file it returns, by SOP Instance UID."""
    files = {}
    for entry in orthanc.get("/instances?expand"):
        url = f"{orthanc.url}/instances/{entry['ID']}/file"
        with urllib.request.urlopen(url, timeout=10) as response:
            files[entry["MainDicomTags"]["SOPInstanceUID"]] = response.read()
    return files


def assert_arrived_byte_for_byte(orthanc: Orthanc, paths: list[Path]) -> None:
    # Orthanc keeps a file received over STOW-RS exactly as it came, file meta included,
    # so the whole file is compared.
    stored = orthanc_files(orthanc)
    for path in paths:
        sent = path.read_bytes()
        uid = uid_of(sent)
        assert uid in stored, f"{path.name} ({uid}) did not arrive"
        assert stored[uid] == sent, f"{path.name} arrived changed"


def test_ct_series_and_compressed_files_arrive_byte_for_byte(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    paths = make_ct_series(tmp_path / "ct", 4, rows=128, columns=128) + compressed_files()
    sender = make_sender(f"{orthanc.url}/dicom-web", tmp_path)
    assert isinstance(sender, DicomWebSender)

    report = sender.send(shipment(paths))

    assert [r.status for r in report.results] == ["sent"] * len(paths), report.results
    assert_arrived_byte_for_byte(orthanc, paths)


def test_a_job_is_cut_into_requests_within_max_request_mb(
    orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = make_ct_series(tmp_path / "small", 20, rows=256, columns=256)  # 128 KiB each
    big = make_ct_series(tmp_path / "big", 1, rows=1024, columns=1024)  # 2 MiB: over the bound
    paths = [*small[:10], *big, *small[10:]]
    requests: list[httpx.Request] = []
    original_send = httpx.Client.send

    def counting_send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> Any:
        if request.method == "POST":
            requests.append(request)
        return original_send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", counting_send)
    sender = make_sender(f"{orthanc.url}/dicom-web/", tmp_path, max_request_mb=1)

    report = sender.send(shipment(paths))

    assert [r.status for r in report.results] == ["sent"] * len(paths), report.results
    sizes = [int(request.headers["Content-Length"]) for request in requests]
    assert len(requests) >= 4, sizes
    oversized = [size for size in sizes if size > MIB]
    assert len(oversized) == 1, sizes  # the 2 MiB instance went alone
    assert oversized[0] < big[0].stat().st_size + 1024
    assert all(request.url.path == "/dicom-web/studies" for request in requests)
    assert any("STOW-RS requests" in note for note in report.notes)
    assert_arrived_byte_for_byte(orthanc, paths)


def test_probe_against_orthanc(orthanc: Orthanc, tmp_path: Path) -> None:
    result = make_sender(f"{orthanc.url}/dicom-web", tmp_path).probe()
    assert result.ok, result
    assert "STOW endpoint reachable" in result.message
    assert result.details["status"] == 200


# -- a local STOW-RS server ----------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    parts: list[bytes] = field(default_factory=list)

    @property
    def uids(self) -> list[str]:
        return [uid_of(part) for part in self.parts]


Responder = Callable[[Received, int], tuple[int, Any]]
"""(request, its number from 1) -> (HTTP status, JSON document, raw bytes or None)."""


def stored_response(
    stored: list[str],
    failed: dict[str, int] | None = None,
    warnings: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A PS3.18 STOW-RS response in DICOM JSON."""
    warnings = warnings or {}
    referenced = []
    for uid in stored:
        item: dict[str, Any] = {
            "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
            "00081155": {"vr": "UI", "Value": [uid]},
        }
        if uid in warnings:
            item["00081196"] = {"vr": "US", "Value": [warnings[uid]]}
        referenced.append(item)
    document: dict[str, Any] = {REFERENCED_SOP_SEQUENCE: {"vr": "SQ", "Value": referenced}}
    if failed:
        document[FAILED_SOP_SEQUENCE] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                    "00081155": {"vr": "UI", "Value": [uid]},
                    "00081197": {"vr": "US", "Value": [reason]},
                }
                for uid, reason in failed.items()
            ],
        }
    return document


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The parts of a multipart/related body, as sent."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    assert body.endswith(b"--" + boundary + b"--\r\n")
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        headers, _, data = chunk.partition(b"\r\n\r\n")
        assert b"Content-Type: application/dicom" in headers
        assert data.endswith(b"\r\n")
        parts.append(data[:-2])
    return parts


class StowServer:
    """A STOW-RS and QIDO-RS look-alike on a loopback port. ``authorization`` is the
    Authorization header it insists on; ``respond`` decides each POST's answer."""

    def __init__(
        self,
        respond: Responder | None = None,
        authorization: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.respond = respond or (lambda request, number: (200, stored_response(request.uids)))
        self.authorization = authorization
        self.received: list[Received] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                request = Received(self.command, self.path, dict(self.headers.items()))
                if self.command == "POST":
                    request.parts = split_multipart(self.headers["Content-Type"], body)
                with outer.lock:
                    outer.received.append(request)
                    number = len(outer.received)
                if outer.authorization and self.headers.get("Authorization") != (
                    outer.authorization
                ):
                    self._answer(401, b"credentials refused", "text/plain")
                elif self.command == "GET":
                    self._answer(200, b"[]", "application/dicom+json")
                else:
                    status, document = outer.respond(request, number)
                    if document is None:
                        self._answer(status, b"", "text/plain")
                    elif isinstance(document, bytes):
                        self._answer(status, document, "text/plain")
                    else:
                        data = json.dumps(document).encode()
                        self._answer(status, data, "application/dicom+json")

            def _answer(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="stow"')
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    @property
    def posts(self) -> list[Received]:
        with self.lock:
            return [request for request in self.received if request.method == "POST"]

    def __enter__(self) -> StowServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def small(tmp_path: Path) -> Shipment:
    return shipment(make_small_images(tmp_path / "small", 5))


def statuses(report_results: Any) -> dict[str, tuple[str, int | None]]:
    return {r.sop_instance_uid: (r.status, r.code) for r in report_results}


@pytest.mark.parametrize(
    ("options", "authorization"),
    [
        ({"access_token": "s3cret-token"}, "Bearer s3cret-token"),
        (
            {"http_user": "mercury", "http_password": "pa:ss"},
            "Basic " + base64.b64encode(b"mercury:pa:ss").decode(),
        ),
    ],
    ids=["bearer", "basic"],
)
def test_credentials_are_presented_and_the_request_is_stow_rs(
    tmp_path: Path, small: Shipment, options: dict[str, str], authorization: str
) -> None:
    with StowServer(authorization=authorization) as server:
        report = make_sender(server.url, tmp_path, **options).send(small)
    assert [r.status for r in report.results] == ["sent"] * 5
    (post,) = server.posts
    assert post.path == "/dicom-web/studies"
    content_type = post.headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert post.headers["Accept"] == "application/dicom+json"
    assert post.parts == [item.path.read_bytes() for item in small.instances]


@pytest.mark.parametrize(
    ("options", "advice"),
    [
        ({"access_token": "wrong"}, "check access_token"),
        ({"http_user": "mercury", "http_password": "wrong"}, "check http_user and http_password"),
        ({}, "set access_token or http_user"),
    ],
    ids=["bearer", "basic", "none"],
)
def test_refused_credentials_make_the_target_unreachable(
    tmp_path: Path, small: Shipment, options: dict[str, str], advice: str
) -> None:
    with StowServer(authorization="Bearer right") as server:
        sender = make_sender(server.url, tmp_path, **options)
        with pytest.raises(TargetUnreachable, match="HTTP 401") as caught:
            sender.send(small)
        probe = sender.probe()
    assert advice in str(caught.value)
    assert not probe.ok
    assert probe.message.startswith(f"HTTP 401 from {server.url}/studies?limit=1")
    assert advice in probe.message


def test_202_reports_each_instance_as_the_server_says(tmp_path: Path, small: Shipment) -> None:
    uids = [item.sop_instance_uid for item in small.instances]
    refused, warned, forgotten = uids[1], uids[2], uids[3]

    def respond(request: Received, number: int) -> tuple[int, Any]:
        stored = [uid for uid in request.uids if uid not in (refused, forgotten)]
        return 202, stored_response(stored, {refused: 0xA700}, {warned: 0xB000})

    with StowServer(respond) as server:
        report = make_sender(server.url, tmp_path).send(small)

    assert statuses(report.results) == {
        uids[0]: ("sent", None),
        refused: ("failed", 0xA700),
        warned: ("warning", 0xB000),
        forgotten: ("failed", 202),
        uids[4]: ("sent", None),
    }
    messages = {r.sop_instance_uid: r.message for r in report.results}
    assert messages[refused] == "STOW-RS failure 0xA700 Refused: Out of Resources"
    assert messages[warned] == "STOW-RS warning 0xB000 Coercion of Data Elements"
    assert NOT_MENTIONED in messages[forgotten]
    assert [r.sop_instance_uid for r in report.failed] == [refused, forgotten]


def test_409_fails_every_instance(tmp_path: Path, small: Shipment) -> None:
    def respond(request: Received, number: int) -> tuple[int, Any]:
        return 409, stored_response([], dict.fromkeys(request.uids[:3], 0xC122))

    with StowServer(respond) as server:
        report = make_sender(server.url, tmp_path).send(small)

    assert [(r.status, r.code) for r in report.results] == [("failed", 0xC122)] * 3 + [
        ("failed", 409)
    ] * 2
    assert "Transfer Syntax" in report.results[0].message
    assert NOT_MENTIONED in report.results[4].message


def test_200_without_a_body_means_all_stored(tmp_path: Path, small: Shipment) -> None:
    with StowServer(lambda request, number: (200, None)) as server:
        report = make_sender(server.url, tmp_path).send(small)
    assert [r.status for r in report.results] == ["sent"] * 5


def test_other_4xx_fails_the_request_with_the_server_message(
    tmp_path: Path, small: Shipment
) -> None:
    with StowServer(lambda request, number: (415, b"no such media type here")) as server:
        report = make_sender(server.url, tmp_path).send(small)
    assert [(r.status, r.code) for r in report.results] == [("failed", 415)] * 5
    assert report.results[0].message == (
        f"HTTP 415 from {server.url}/studies: no such media type here"
    )


def test_500_breaks_off_with_the_results_of_earlier_requests(tmp_path: Path) -> None:
    paths = make_ct_series(tmp_path / "ct", 3)  # 512 KiB each: one per 1 MiB request

    def respond(request: Received, number: int) -> tuple[int, Any]:
        if number == 1:
            return 200, stored_response(request.uids)
        return 500, b"database on fire"

    with StowServer(respond) as server:
        job = shipment(paths)
        with pytest.raises(SendFailed, match="HTTP 500") as caught:
            make_sender(server.url, tmp_path, max_request_mb=1).send(job)

    assert "database on fire" in str(caught.value)
    assert len(server.posts) == 2  # it stopped at the failing request
    first = job.instances[0].sop_instance_uid
    assert [(r.sop_instance_uid, r.status) for r in caught.value.results] == [(first, "sent")]


def test_a_server_that_never_answers_times_out(tmp_path: Path, small: Shipment) -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        sender = make_sender(f"http://127.0.0.1:{port}/dicom-web", tmp_path, timeout=1)
        with pytest.raises(SendFailed, match="no answer within 1 s") as caught:
            sender.send(small)
        assert not sender.probe().ok
    assert caught.value.results == []


def test_nothing_listening(tmp_path: Path, small: Shipment) -> None:
    sender = make_sender(f"http://127.0.0.1:{free_port()}/dicom-web", tmp_path)
    with pytest.raises(TargetUnreachable, match="connection refused"):
        sender.send(small)
    probe = sender.probe()
    assert not probe.ok
    assert "connection refused" in probe.message


def test_cancel_stops_before_the_next_request(tmp_path: Path, small: Shipment) -> None:
    small.cancel.set()
    with StowServer() as server:
        with pytest.raises(SendFailed, match="cancelled"):
            make_sender(server.url, tmp_path).send(small)
        assert server.posts == []


def test_describe_leaves_out_credentials(tmp_path: Path) -> None:
    sender = make_sender("https://user:pw@pacs.example.org/dicom-web", tmp_path, access_token="tok")
    assert sender.describe() == "DICOMweb https://pacs.example.org/dicom-web"
    prefixed = make_sender("https://pacs.example.org", tmp_path, stow_url_prefix="stow/")
    assert prefixed.stow_url == "https://pacs.example.org/stow/studies"


# -- https ---------------------------------------------------------------------------------


def certificate_files(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: x509.Name | None, key: Any, signer: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("mercury test CA", None, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", ca_cert.subject, server_key, ca_key, ca=False)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def test_https_with_ca_bundle_and_an_untrusted_certificate(tmp_path: Path, small: Shipment) -> None:
    ca, cert, key = certificate_files(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with StowServer(tls=tls) as server:
        trusting = make_sender(server.url, tmp_path, ca_bundle=str(ca))
        report = trusting.send(small)
        assert [r.status for r in report.results] == ["sent"] * 5
        assert trusting.probe().ok

        with pytest.raises(TargetUnreachable, match="TLS certificate not trusted"):
            make_sender(server.url, tmp_path).send(small)


# -- file:// -------------------------------------------------------------------------------


def test_file_url_writes_the_dicomweb_folder_layout(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    paths = make_small_images(tmp_path / "small", 4, per_series=2) + compressed_files()
    job = shipment(paths)
    sender = make_sender(folder.as_uri(), tmp_path)
    assert isinstance(sender, DicomWebFolderSender)
    assert sender.describe() == f"DICOMweb {folder.as_uri()}"
    assert sender.probe().ok

    for _ in range(2):  # sending again replaces the files, it does not fail
        report = sender.send(job)
        assert [r.status for r in report.results] == ["sent"] * len(paths)

    written = sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file())
    expected = sorted(
        Path(item.study_uid, item.series_uid, f"{item.sop_instance_uid}.dcm")
        for item in job.instances
    )
    assert written == expected  # and no temporary files left behind
    for item in job.instances:
        destination = folder / item.study_uid / item.series_uid / f"{item.sop_instance_uid}.dcm"
        assert destination.read_bytes() == item.path.read_bytes()


def test_file_url_to_a_missing_folder(tmp_path: Path, small: Shipment) -> None:
    sender = make_sender((tmp_path / "not-mounted").as_uri(), tmp_path)
    with pytest.raises(TargetUnreachable, match="does not exist"):
        sender.send(small)
    probe = sender.probe()
    assert not probe.ok
    assert "does not exist" in probe.message


def test_a_missing_spool_file_fails_only_that_instance(tmp_path: Path, small: Shipment) -> None:
    small.instances[0].path.unlink()
    with StowServer() as server:
        report = make_sender(server.url, tmp_path).send(small)
    assert len(server.posts) == 1
    assert [r.status for r in report.results] == ["failed"] + ["sent"] * 4
    assert "cannot read the stored file" in report.results[0].message
