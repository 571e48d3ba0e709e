"""The ``dicomweb`` target: STOW-RS to a DICOMweb server, or a folder in DICOMweb layout.

http:// and https://
    A shipment goes out as one or more STOW-RS requests, ``POST {url}{stow_url_prefix}/studies``
    with ``Content-Type: multipart/related; type="application/dicom"``. Each part is a stored
    file's bytes exactly as they are in the spool (no re-encoding). Requests are cut so each
    body stays within ``max_request_mb`` (an instance bigger than that goes alone), and each
    body is streamed from the files with a known Content-Length, never held whole in memory.

    The PS3.18 response gives a result per instance: ReferencedSOPSequence (0008,1199) lists
    what was stored, with WarningReason (0008,1196) when stored with a warning;
    FailedSOPSequence (0008,1198) lists what was refused, with FailureReason (0008,1197). A
    200 without a usable body means all stored; after a 202 or 409 an instance the response
    does not mention is counted as failed. 401/403, refused connections, DNS and TLS
    failures raise :class:`TargetUnreachable`; 5xx, 408, 429, timeouts and broken
    connections raise :class:`SendFailed` with the results of the earlier requests; any other
    4xx fails every instance of that request with the HTTP status and the server's message.

file:///folder
    Each instance is written to ``<folder>/<StudyInstanceUID>/<SeriesInstanceUID>/
    <SOPInstanceUID>.dcm`` through a hidden temporary name (``.<SOPInstanceUID>.<random>.tmp``
    in the same folder), fsynced and renamed, so a reader never sees half a file. An instance
    sent again replaces the earlier copy. The folder itself must exist (a missing folder
    usually means a share that is not mounted); study and series folders are created.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar
from urllib.parse import urlsplit, urlunsplit
from urllib.request import url2pathname

import httpx

from mercury import __version__
from mercury.config.targets import DicomWebTarget, TargetBase
from mercury.dispatch.base import (
    InstanceResult,
    OutgoingInstance,
    ProbeResult,
    SenderContext,
    SendFailed,
    SendReport,
    Shipment,
    TargetUnreachable,
)

logger = logging.getLogger(__name__)

MIB = 1024 * 1024
_READ_CHUNK = MIB

NOT_MENTIONED = "not mentioned in the STOW-RS response"

# DICOM JSON keys of the STOW-RS response (PS3.18 10.5.3, PS3.18 annex F).
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_SEQUENCE = "00081199"
_REFERENCED_SOP_INSTANCE_UID = "00081155"
_WARNING_REASON = "00081196"
_FAILURE_REASON = "00081197"

_STOW_REASONS = {
    0xC122: "Referenced Transfer Syntax Not Supported",
}
"""STOW-RS reasons whose meaning differs from the C-STORE status with the same code."""

_RETRY_LATER_STATUSES = frozenset({408, 429})
"""4xx answers that mean 'not now' rather than 'never': the shipment is retried."""


def describe_reason(code: int) -> str:
    """A STOW-RS FailureReason or WarningReason as text: '0xA700 Refused: Out of Resources'."""
    if code in _STOW_REASONS:
        return f"0x{code:04X} {_STOW_REASONS[code]}"
    from mercury.send.report import describe_status

    return describe_status(code)


def display_url(url: str) -> str:
    """The URL without user name or password, for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def service_url(base: str, prefix: str | None) -> str:
    """``base`` plus a service prefix; a prefix is accepted with or without slashes."""
    url = base.rstrip("/")
    if prefix and prefix.strip("/"):
        url += "/" + prefix.strip("/")
    return url


def folder_from_url(url: str) -> Path:
    """The folder of a ``file:`` URL: ``file:///data/out`` or ``file://localhost/data/out``."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost") or not parts.path:
        raise ValueError(
            f"{url!r} is not a local folder URL; write it as file:///absolute/path/to/folder"
        )
    return Path(url2pathname(parts.path))


def connect_problem(exc: BaseException, timeout: float) -> str:
    """Why a connection could not be made, in words an administrator can act on."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection within {timeout:g} s"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate not trusted ({seen.verify_message}); set ca_bundle to the "
                "CA certificate that signed the server's certificate"
            )
        if isinstance(seen, ssl.SSLError):
            return f"TLS handshake failed ({seen.reason or seen})"
        if isinstance(seen, socket.gaierror):
            return f"host name not found ({seen.strerror})"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def server_message(response: httpx.Response, limit: int = 300) -> str:
    """The start of the response body on one line, for error messages."""
    text = " ".join(response.text.split())
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True, slots=True)
class _Part:
    item: OutgoingInstance
    size: int


class _Multipart:
    """One STOW-RS request body: ``multipart/related`` with one ``application/dicom`` part
    per file, produced from the files while it is sent."""

    def __init__(self, parts: Sequence[_Part], boundary: str) -> None:
        self.parts = parts
        self.boundary = boundary
        self.head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
        self.tail = f"--{boundary}--\r\n".encode("ascii")

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="application/dicom"; boundary={self.boundary}'

    def part_length(self, part: _Part) -> int:
        return len(self.head) + part.size + 2  # the part's bytes end with CRLF

    @property
    def length(self) -> int:
        """The body's size in bytes, sent as Content-Length (so the body is not chunked)."""
        return sum(self.part_length(part) for part in self.parts) + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            yield self.head
            with part.item.path.open("rb") as handle:
                remaining = part.size
                while remaining:
                    chunk = handle.read(min(_READ_CHUNK, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                    yield chunk
                if remaining or handle.read(1):
                    raise _SpoolFileChanged(part.item.path)
            yield b"\r\n"
        yield self.tail


class _SpoolFileChanged(OSError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} changed size while it was being sent")


def split_requests(parts: Sequence[_Part], boundary: str, limit: int) -> list[_Multipart]:
    """Cut the parts, in order, into request bodies of at most ``limit`` bytes each; a part
    that is bigger than ``limit`` on its own goes in a request of its own."""
    bodies: list[_Multipart] = []
    current: list[_Part] = []
    probe = _Multipart((), boundary)
    size = len(probe.tail)
    for part in parts:
        cost = probe.part_length(part)
        if current and size + cost > limit:
            bodies.append(_Multipart(current, boundary))
            current, size = [], len(probe.tail)
        current.append(part)
        size += cost
    if current:
        bodies.append(_Multipart(current, boundary))
    return bodies


def _first_value(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return None
    values = element.get("Value")
    if isinstance(values, list) and values:
        return values[0]
    return None


def _sequence(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value")
    if not isinstance(values, list):
        return []
    return [item for item in values if isinstance(item, dict)]


def _code(value: Any) -> int | None:
    """A FailureReason or WarningReason: US in DICOM JSON, but some servers send text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0x")
        for base in (10, 16):
            try:
                return int(text, base)
            except ValueError:
                continue
    return None


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str
    code: int | None


def parse_stow_response(body: bytes) -> dict[str, _Outcome] | None:
    """Per-instance outcomes from a DICOM JSON STOW-RS response, by SOP Instance UID;
    None when the body is empty or not DICOM JSON."""
    if not body.strip():
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    datasets = document if isinstance(document, list) else [document]
    datasets = [dataset for dataset in datasets if isinstance(dataset, dict)]
    if not datasets:
        return None
    outcomes: dict[str, _Outcome] = {}
    for dataset in datasets:
        for item in _sequence(dataset, _REFERENCED_SOP_SEQUENCE):
            uid = _first_value(item, _REFERENCED_SOP_INSTANCE_UID)
            if isinstance(uid, str):
                warning = _code(_first_value(item, _WARNING_REASON))
                outcomes[uid] = _Outcome("warning" if warning is not None else "sent", warning)
        for item in _sequence(dataset, _FAILED_SOP_SEQUENCE):
            uid = _first_value(item, _REFERENCED_SOP_INSTANCE_UID)
            if isinstance(uid, str):
                outcomes[uid] = _Outcome("failed", _code(_first_value(item, _FAILURE_REASON)))
    return outcomes


def instance_results(
    status_code: int, body: bytes, items: Sequence[OutgoingInstance]
) -> list[InstanceResult]:
    """What a 2xx or 409 STOW-RS answer says about each instance of the request."""
    outcomes = parse_stow_response(body) or {}
    all_stored = status_code != 202 and 200 <= status_code < 300
    results = []
    for item in items:
        uid = item.sop_instance_uid
        outcome = outcomes.get(uid)
        if outcome is None:
            if all_stored:
                results.append(InstanceResult(uid, "sent"))
            else:
                results.append(
                    InstanceResult(
                        uid, "failed", status_code, f"{NOT_MENTIONED} (HTTP {status_code})"
                    )
                )
        elif outcome.status == "failed":
            reason = (
                describe_reason(outcome.code) if outcome.code is not None else "no reason given"
            )
            results.append(InstanceResult(uid, "failed", outcome.code, f"STOW-RS failure {reason}"))
        elif outcome.status == "warning" and outcome.code is not None:
            results.append(
                InstanceResult(
                    uid, "warning", outcome.code, f"STOW-RS warning {describe_reason(outcome.code)}"
                )
            )
        else:
            results.append(InstanceResult(uid, "sent"))
    return results


class DicomWebSender:
    """STOW-RS to an http(s) DICOMweb server."""

    resumable: ClassVar[bool] = True

    def __init__(self, name: str, target: DicomWebTarget) -> None:
        self.name = name
        self.target = target
        self.url = display_url(target.url)
        try:
            host = httpx.URL(target.url).host
        except httpx.InvalidURL as exc:
            raise ValueError(f"target {name!r}: url {self.url!r} is not valid: {exc}") from exc
        if not host:
            raise ValueError(f"target {name!r}: url {self.url!r} names no host")
        self.stow_url = service_url(target.url, target.stow_url_prefix) + "/studies"
        self.qido_url = service_url(target.url, target.qido_url_prefix) + "/studies"
        self.max_request_bytes = target.max_request_mb * MIB
        self.timeout = float(target.timeout)
        self._ssl_context: ssl.SSLContext | None = None

    # -- the Sender interface ------------------------------------------------------------

    def describe(self) -> str:
        return f"DICOMweb {self.url}"

    def send(self, shipment: Shipment) -> SendReport:
        results: list[InstanceResult] = []
        parts: list[_Part] = []
        for item in shipment.instances:
            try:
                parts.append(_Part(item, item.path.stat().st_size))
            except OSError as exc:
                results.append(
                    InstanceResult(
                        item.sop_instance_uid,
                        "failed",
                        message=f"cannot read the stored file {item.path}: {exc.strerror or exc}",
                    )
                )
        bodies = split_requests(parts, f"mercury-{secrets.token_hex(16)}", self.max_request_bytes)
        with self._client() as client:
            for number, body in enumerate(bodies, 1):
                if shipment.cancel.is_set():
                    raise SendFailed(
                        f"{self.describe()}: cancelled after {number - 1} of {len(bodies)} "
                        "STOW-RS requests",
                        results,
                    )
                results.extend(
                    self._post(client, body, f"request {number} of {len(bodies)}", results)
                )
        report = SendReport(results=results)
        if len(bodies) > 1:
            report.notes.append(
                f"{len(parts)} instances sent in {len(bodies)} STOW-RS requests of at most "
                f"{self.target.max_request_mb} MiB"
            )
        return report

    def probe(self) -> ProbeResult:
        shown = display_url(self.qido_url) + "?limit=1"
        details: dict[str, Any] = {"url": shown, "stow_url": display_url(self.stow_url)}
        try:
            with self._client() as client:
                response = client.get(
                    self.qido_url,
                    params={"limit": "1"},
                    headers={"Accept": "application/dicom+json"},
                )
        except TargetUnreachable as exc:
            return ProbeResult(False, str(exc), details)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return ProbeResult(False, f"{shown}: {connect_problem(exc, self.timeout)}", details)
        except httpx.TimeoutException:
            return ProbeResult(False, f"{shown}: no answer within {self.timeout:g} s", details)
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{shown}: {exc}", details)
        status = response.status_code
        details["status"] = status
        if status in (401, 403):
            return ProbeResult(False, self._auth_problem(status, shown), details)
        if status >= 500:
            return ProbeResult(
                False,
                f"HTTP {status} from {shown}: server error: {server_message(response)}",
                details,
            )
        stow = display_url(self.stow_url)
        if 200 <= status < 300:
            return ProbeResult(
                True,
                f"STOW endpoint reachable: {stow} (QIDO-RS GET {shown} answered HTTP {status})",
                details,
            )
        return ProbeResult(
            True,
            f"server reachable, but QIDO-RS GET {shown} answered HTTP {status}; STOW-RS "
            f"endpoint {stow} not verified (check url and qido_url_prefix if the server "
            "offers QIDO-RS)",
            details,
        )

    # -- HTTP --------------------------------------------------------------------------

    def _verify(self) -> ssl.SSLContext:
        """The TLS trust: ca_bundle when set, else the system's certificate store."""
        if self._ssl_context is None:
            bundle = self.target.ca_bundle
            try:
                if bundle is not None:
                    context = ssl.create_default_context(cafile=str(bundle))
                else:
                    context = ssl.create_default_context()
            except (OSError, ssl.SSLError) as exc:
                raise TargetUnreachable(
                    f"{self.describe()}: cannot load ca_bundle {bundle}: {exc}"
                ) from exc
            self._ssl_context = context
        return self._ssl_context

    def _client(self) -> httpx.Client:
        headers = {"User-Agent": f"mercury/{__version__}"}
        auth: httpx.Auth | None = None
        if self.target.access_token is not None:
            headers["Authorization"] = f"Bearer {self.target.access_token.get_secret_value()}"
        elif self.target.http_user:
            password = self.target.http_password
            auth = httpx.BasicAuth(
                self.target.http_user, password.get_secret_value() if password else ""
            )
        return httpx.Client(
            auth=auth,
            headers=headers,
            verify=self._verify(),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
        )

    def _auth_problem(self, status: int, url: str) -> str:
        if self.target.access_token is not None:
            fix = "check access_token"
        elif self.target.http_user:
            fix = "check http_user and http_password"
        else:
            fix = "the server wants credentials: set access_token or http_user and http_password"
        what = "authentication refused" if status == 401 else "access forbidden"
        return f"HTTP {status} from {url}: {what}; {fix}"

    def _post(
        self,
        client: httpx.Client,
        body: _Multipart,
        which: str,
        earlier: Sequence[InstanceResult],
    ) -> list[InstanceResult]:
        """Send one STOW-RS request; the per-instance results it brought back."""
        url = display_url(self.stow_url)
        where = f"STOW-RS {which} to {url}"
        headers = {
            "Content-Type": body.content_type,
            "Content-Length": str(body.length),
            "Accept": "application/dicom+json",
        }
        items = [part.item for part in body.parts]
        try:
            response = client.post(self.stow_url, content=iter(body), headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise TargetUnreachable(
                f"{where}: {connect_problem(exc, self.timeout)}", earlier
            ) from exc
        except httpx.TimeoutException as exc:
            raise SendFailed(f"{where}: no answer within {self.timeout:g} s", earlier) from exc
        except httpx.HTTPError as exc:
            raise SendFailed(f"{where}: connection broke off: {exc}", earlier) from exc
        except OSError as exc:
            raise SendFailed(f"{where}: cannot read a stored file: {exc}", earlier) from exc
        status = response.status_code
        logger.debug("%s: %d instances, %d bytes: HTTP %d", where, len(items), body.length, status)
        if status in (401, 403):
            raise TargetUnreachable(self._auth_problem(status, url), earlier)
        if status >= 500 or status in _RETRY_LATER_STATUSES:
            raise SendFailed(f"HTTP {status} from {url}: {server_message(response)}", earlier)
        if 200 <= status < 300 or status == 409:
            return instance_results(status, response.content, items)
        message = f"HTTP {status} from {url}: {server_message(response)}"
        if 300 <= status < 400:
            location = display_url(response.headers.get("Location", ""))
            message = (
                f"HTTP {status} from {url}: redirected to {location or 'nowhere'}; "
                "redirects are not followed, set url (or stow_url_prefix) to the final address"
            )
        return [InstanceResult(item.sop_instance_uid, "failed", status, message) for item in items]


class DicomWebFolderSender:
    """A ``file://`` DICOMweb target: a folder in ``<study>/<series>/<instance>.dcm`` layout."""

    resumable: ClassVar[bool] = True

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.folder = folder_from_url(url)

    def describe(self) -> str:
        return f"DICOMweb {self.url}"

    def destination(self, item: OutgoingInstance) -> Path:
        """Where an instance goes. The UIDs passed the UID grammar check when they were
        stored, so they are safe as file names."""
        return self.folder / item.study_uid / item.series_uid / f"{item.sop_instance_uid}.dcm"

    def _check_folder(self) -> None:
        if not self.folder.is_dir():
            raise TargetUnreachable(
                f"{self.describe()}: folder {self.folder} does not exist or is not a folder "
                "(is the share mounted?)"
            )

    def send(self, shipment: Shipment) -> SendReport:
        from mercury.store.spool import fsync_directories

        self._check_folder()
        results: list[InstanceResult] = []
        touched: set[Path] = set()
        try:
            for item in shipment.instances:
                if shipment.cancel.is_set():
                    raise SendFailed(
                        f"{self.describe()}: cancelled after {len(results)} of "
                        f"{len(shipment.instances)} instances",
                        results,
                    )
                try:
                    source = item.path.open("rb")
                except OSError as exc:
                    results.append(
                        InstanceResult(
                            item.sop_instance_uid,
                            "failed",
                            message=f"cannot read the stored file {item.path}: "
                            f"{exc.strerror or exc}",
                        )
                    )
                    continue
                target = self.destination(item)
                try:
                    with source:
                        touched.update(self._make_folders(target.parent))
                        self._write(source, target)
                except OSError as exc:
                    raise SendFailed(
                        f"{self.describe()}: cannot write {target}: {exc.strerror or exc}", results
                    ) from exc
                touched.add(target.parent)
                results.append(InstanceResult(item.sop_instance_uid, "sent"))
        finally:
            try:
                fsync_directories(touched)
            except OSError as exc:  # the files are in place; durability is what is at stake
                logger.warning("%s: fsync of the folders failed: %s", self.describe(), exc)
        return SendReport(results=results)

    def _make_folders(self, folder: Path) -> list[Path]:
        """Create the study and series folders; the parents of new ones, for fsync."""
        created: list[Path] = []
        for path in (folder.parent, folder):
            if not path.is_dir():
                path.mkdir(exist_ok=True)
                created.append(path.parent)
        return created

    def _write(self, source: BinaryIO, target: Path) -> None:
        temp = target.with_name(f".{target.stem}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_READ_CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def probe(self) -> ProbeResult:
        details: dict[str, Any] = {"folder": str(self.folder)}
        try:
            self._check_folder()
        except TargetUnreachable as exc:
            return ProbeResult(False, str(exc), details)
        temp = self.folder / f".mercury-probe-{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, b"mercury write probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            temp.unlink()
        except OSError as exc:
            temp.unlink(missing_ok=True)
            return ProbeResult(
                False, f"folder {self.folder} is not writable: {exc.strerror or exc}", details
            )
        return ProbeResult(True, f"folder {self.folder} is writable", details)


def create(
    name: str, target: TargetBase, context: SenderContext
) -> DicomWebSender | DicomWebFolderSender:
    if not isinstance(target, DicomWebTarget):
        raise TypeError(f"target {name!r} is not a dicomweb target")
    if urlsplit(target.url).scheme == "file":
        return DicomWebFolderSender(name, target.url)
    return DicomWebSender(name, target)
