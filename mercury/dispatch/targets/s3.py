"""The s3 target: each job's files become objects ``<prefix>/<job id>/<file name>`` in a
bucket of AWS S3 or an S3-compatible store (MinIO, Ceph), the ``.complete`` object last.

An object appears whole when its upload ends (large files go up in parts and appear when
the last part is in), so no temporary names are needed; the ``.complete`` object tells a
reader the job is whole. A retry uploads every file again under the same keys, first
deleting objects under the job's prefix that the job no longer holds (left by an earlier
attempt) when the credentials may list the bucket. s3 targets have no file_filter.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, ClassVar

from mercury.config.targets import S3Target, TargetBase
from mercury.dispatch.base import (
    DispatchError,
    ProbeResult,
    SenderContext,
    SendFailed,
    SendReport,
    Shipment,
    TargetUnreachable,
)
from mercury.dispatch.targets.staging import (
    COMPLETE_MARKER,
    JobPlan,
    cancelled,
    nothing_to_deliver,
    plan_job,
)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0

_BUCKET_MISSING = frozenset({"NoSuchBucket", "404", "NotFound"})
_REFUSED = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidToken",
        "ExpiredToken",
        "AccountProblem",
        "AllAccessDisabled",
    }
)
_WRONG_REGION = frozenset({"PermanentRedirect", "AuthorizationHeaderMalformed", "301"})


def object_key(prefix: str, *parts: str) -> str:
    """``prefix/part/...`` without a leading slash or empty segments, whatever the prefix."""
    segments = [segment for segment in prefix.split("/") if segment]
    return "/".join([*segments, *parts])


def _client_error(exc: BaseException) -> Any | None:
    """The botocore ClientError behind ``exc`` (boto3 wraps it in S3UploadFailedError)."""
    from botocore.exceptions import ClientError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ClientError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _error_code(error: Any) -> str:
    response = getattr(error, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    if not code:
        code = str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return code


class S3Sender:
    resumable: ClassVar[bool] = False

    def __init__(self, name: str, target: S3Target) -> None:
        self.name = name
        self.target = target
        self.bucket = target.bucket
        self._client: Any = None
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def client(self) -> Any:
        """One boto3 client per target, made on first use (clients are thread-safe,
        making them is not)."""
        with self._lock:
            if self._client is None:
                import boto3.session
                from botocore.config import Config

                config = Config(
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "max_attempts": 3},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    # S3-compatible stores answer at <endpoint>/<bucket>, not <bucket>.<endpoint>
                    s3={"addressing_style": "path"} if self.target.endpoint_url else {},
                )
                session = boto3.session.Session()
                self._client = session.client(
                    "s3",
                    region_name=self.target.region,
                    endpoint_url=self.target.endpoint_url or None,
                    aws_access_key_id=self.target.access_key_id,
                    aws_secret_access_key=self.target.secret_access_key.get_secret_value(),
                    config=config,
                )
            return self._client

    def _where(self) -> str:
        return self.target.endpoint_url or f"AWS {self.target.region}"

    def _classify(self, exc: Exception, doing: str, *, started: bool) -> DispatchError:
        """Turn a boto3/botocore error into TargetUnreachable or SendFailed, with a message
        that names the problem and its fix."""
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.exceptions import (
            NoCredentialsError,
        )

        client_error = _client_error(exc)
        if client_error is not None:
            code = _error_code(client_error)
            if code in _BUCKET_MISSING:
                return TargetUnreachable(
                    f"target {self.name}: bucket {self.bucket!r} does not exist at "
                    f"{self._where()} ({code}); create it or correct `bucket`"
                )
            if code in _REFUSED:
                return TargetUnreachable(
                    f"target {self.name}: {self._where()} refused access to bucket "
                    f"{self.bucket!r} while {doing} ({code}); check access_key_id and "
                    "secret_access_key and that they may write to the bucket"
                )
            if code in _WRONG_REGION:
                return TargetUnreachable(
                    f"target {self.name}: bucket {self.bucket!r} is not in region "
                    f"{self.target.region!r} ({code}); correct `region`"
                )
            return SendFailed(f"target {self.name}: {doing} failed: {client_error}")
        if isinstance(exc, NoCredentialsError):
            return TargetUnreachable(f"target {self.name}: no S3 credentials: {exc}")
        if isinstance(exc, BotoConnectionError):
            message = (
                f"target {self.name}: cannot reach {self._where()} while {doing}: {exc}; "
                "check endpoint_url, the network and that the store is running"
            )
            return SendFailed(message) if started else TargetUnreachable(message)
        return SendFailed(f"target {self.name}: {doing} failed: {exc}")

    # -- sending ----------------------------------------------------------------------------

    def _clear_leftovers(self, client: Any, plan: JobPlan, keys: set[str]) -> list[str]:
        """Delete objects under the job's prefix that this delivery will not write: what an
        earlier attempt (under another file_filter, say) left behind."""
        from botocore.exceptions import ClientError

        job_prefix = object_key(self.target.prefix, plan.job_id) + "/"
        existing: list[str] = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=job_prefix
            )
            for page in pages:
                existing.extend(entry["Key"] for entry in page.get("Contents", []))
        except ClientError as exc:
            if _error_code(exc) in ("AccessDenied", "403"):
                return ["could not list earlier objects of this job (no s3:ListBucket)"]
            raise
        marker = job_prefix + COMPLETE_MARKER
        stale = sorted(key for key in existing if key not in keys and key != marker)
        if not stale:
            return []
        if marker in existing:  # the job stops looking whole before it changes
            client.delete_object(Bucket=self.bucket, Key=marker)
        for key in stale:
            client.delete_object(Bucket=self.bucket, Key=key)
        return [f"deleted {len(stale)} object(s) left under {job_prefix} by an earlier attempt"]

    def send(self, shipment: Shipment) -> SendReport:
        plan = plan_job(shipment, "")  # s3 targets have no file_filter (as in mercure)
        if not plan.to_send:
            return nothing_to_deliver(plan)
        from boto3.s3.transfer import S3Transfer, TransferConfig

        keys = {
            item.export_name: object_key(self.target.prefix, plan.job_id, item.export_name)
            for item in plan.to_send
        }
        notes: list[str] = []
        started = False
        doing = f"listing s3://{self.bucket}/{object_key(self.target.prefix, plan.job_id)}/"
        try:
            client = self.client()
            notes += self._clear_leftovers(client, plan, set(keys.values()))
            with S3Transfer(client, TransferConfig()) as transfer:
                for item in plan.to_send:
                    if shipment.cancel.is_set():
                        raise cancelled(shipment)
                    key = keys[item.export_name]
                    doing = f"uploading {item.path} to s3://{self.bucket}/{key}"
                    transfer.upload_file(
                        str(item.path),
                        self.bucket,
                        key,
                        extra_args={"ContentType": "application/dicom"},
                    )
                    started = True
            marker = object_key(self.target.prefix, plan.job_id, COMPLETE_MARKER)
            doing = f"writing s3://{self.bucket}/{marker}"
            client.put_object(Bucket=self.bucket, Key=marker, Body=b"")
        except DispatchError:
            raise
        except OSError as exc:  # the spooled file could not be read
            raise SendFailed(f"target {self.name}: {doing} failed: {exc}") from exc
        except Exception as exc:  # boto3 raises many unrelated types; _classify sorts them
            raise self._classify(exc, doing, started=started) from exc
        return plan.report(notes)

    # -- probe and description ---------------------------------------------------------------

    def probe(self) -> ProbeResult:
        from botocore.exceptions import ClientError

        notes: list[str] = []
        details: dict[str, Any] = {"bucket": self.bucket, "endpoint": self._where()}
        try:
            client = self.client()
            try:
                client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _error_code(exc) not in ("403", "AccessDenied", "Forbidden"):
                    raise
                # Write-only credentials cannot HEAD the bucket; the write probe decides.
                notes.append("the credentials may not list the bucket (HEAD refused)")
            key = object_key(self.target.prefix, f".mercury-probe-{uuid.uuid4().hex}")
            client.put_object(Bucket=self.bucket, Key=key, Body=b"mercury write probe\n")
            try:
                client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                notes.append(f"could not delete the probe object {key}: {_error_code(exc)}")
        except Exception as exc:  # sorted into a verdict below
            verdict = self._classify(exc, "probing", started=False)
            return ProbeResult(False, str(verdict), details)
        message = f"bucket s3://{self.bucket} at {self._where()} is writable"
        if notes:
            message += "; " + "; ".join(notes)
        return ProbeResult(True, message, details)

    def describe(self) -> str:
        location = object_key(self.target.prefix)
        url = f"s3://{self.bucket}/{location}" if location else f"s3://{self.bucket}"
        return f"s3 {url} ({self._where()})"


def create(name: str, target: TargetBase, context: SenderContext) -> S3Sender:
    assert isinstance(target, S3Target)
    return S3Sender(name, target)
