"""Dispatch targets, with mercure's field names and meanings.

``target_type`` selects the model. In mercury's own file it is required: a typo in it
must be an error, never a silent fall-back to DICOM. Only the mercure importer fills in
mercure's default (``dicom``) when it is missing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from mercury.config.base import AETitle, LocalPath, OptionalAETitle, Seconds, Secret, Section
from mercury.config.dispatch import RetryPolicy


class TargetBase(Section):
    """Keys every target has, whatever its type."""

    target_type: str = Field(description="Kind of target; selects which keys below apply.")
    contact: str = Field(default="", description="Who to call when this target fails.")
    comment: str = Field(default="", description="Free text for administrators.")
    direction: Literal["push", "pull", "both"] = Field(
        default="push",
        description="push: we send to it; pull: we query it; both. Only push is used for dispatch.",
    )
    max_parallel: int | None = Field(
        default=None,
        ge=1,
        description="Jobs sent to this target at the same time; null uses "
        "dispatch.max_parallel_per_target.",
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="This target's retry policy; fields left out use dispatch.retry.",
    )

    @model_serializer(mode="wrap")
    def _common_keys_last(self, handler: SerializerFunctionWrapHandler) -> Any:
        """Write target_type, then the type's own keys, then contact/comment/direction."""
        data = handler(self)
        if not isinstance(data, dict):
            return data
        common = ("max_parallel", "retry", "contact", "comment", "direction")
        ordered = {key: value for key, value in data.items() if key not in common}
        ordered.update((key, data[key]) for key in common if key in data)
        return ordered


class _DicomNode(TargetBase):
    """Keys shared by DICOM and DICOM-over-TLS targets."""

    ip: str = Field(
        min_length=1,
        description="Host name or IP address; the value `sender` replies to the host that sent "
        "the images.",
    )
    port: int = Field(ge=1, le=65535, description="DICOM port (mercure writes it as a string).")
    aet_target: AETitle = Field(
        description="Called AE title: the receiving node's AE title (at most 16 characters)."
    )
    aet_source: OptionalAETitle = Field(
        default="", description="Calling AE title we present; empty uses the receiver's first one."
    )
    pass_sender_aet: bool = Field(
        default=False, description="Present the calling AE title the images arrived with."
    )
    pass_receiver_aet: bool = Field(
        default=False,
        description="Present the called AE title the images arrived with as the called AE title.",
    )
    transfer_syntax: str = Field(
        default="as_received",
        description="`as_received` sends each instance as stored; `uncompressed` decompresses "
        "to Explicit VR Little Endian; a transfer syntax UID asks for that one. An instance "
        "whose syntax the peer refuses is decompressed rather than failed.",
    )
    connect_timeout: Seconds = Field(
        default=10, gt=0, description="Seconds to connect and negotiate the association."
    )
    dimse_timeout: Seconds = Field(
        default=60, gt=0, description="Seconds to wait for each C-STORE response."
    )
    storage_commitment: bool = Field(
        default=False,
        description="Ask the peer to commit to keeping what it received (Storage Commitment "
        "N-ACTION) and record its answer per instance.",
    )
    commitment_timeout: Seconds = Field(
        default=60,
        gt=0,
        description="Seconds to wait for the storage commitment result (N-EVENT-REPORT).",
    )

    @field_validator("transfer_syntax")
    @classmethod
    def _check_syntax(cls, value: str) -> str:
        if value in ("as_received", "uncompressed"):
            return value
        from mercury.dicom.syntax import dataset_encoding

        try:
            dataset_encoding(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not `as_received`, `uncompressed` or a transfer syntax UID "
                "mercury knows"
            ) from None
        return value


class DicomTarget(_DicomNode):
    """A DICOM node reached with C-STORE."""

    target_type: Literal["dicom"] = Field(description="`dicom`.")


class DicomTlsTarget(_DicomNode):
    """A DICOM node reached with C-STORE over TLS."""

    target_type: Literal["dicomtls"] = Field(description="`dicomtls`.")
    tls_key: LocalPath = Field(description="Our private key (PEM file).")
    tls_cert: LocalPath = Field(description="Our certificate (PEM file).")
    ca_cert: LocalPath = Field(description="CA certificate that signed the peer's certificate.")


class DicomWebTarget(TargetBase):
    """A DICOMweb server reached with STOW-RS, or a folder written in DICOMweb layout."""

    target_type: Literal["dicomweb"] = Field(description="`dicomweb`.")
    url: str = Field(description="Base URL: http://, https:// or file:///folder.")
    qido_url_prefix: str | None = Field(
        default=None, description="Path prefix of the QIDO-RS service."
    )
    wado_url_prefix: str | None = Field(
        default=None, description="Path prefix of the WADO-RS service."
    )
    stow_url_prefix: str | None = Field(
        default=None, description="Path prefix of the STOW-RS service."
    )
    access_token: Secret | None = Field(default=None, description="Bearer token.")
    http_user: str | None = Field(default=None, description="User for HTTP Basic authentication.")
    http_password: Secret | None = Field(
        default=None, description="Password for HTTP Basic authentication."
    )
    max_request_mb: int = Field(
        default=16,
        ge=1,
        description="Largest STOW-RS request body, in MiB; a job is sent in as many requests "
        "as it needs.",
    )
    timeout: Seconds = Field(default=60, gt=0, description="Seconds to wait for each request.")
    ca_bundle: LocalPath | None = Field(
        default=None,
        description="CA certificates (PEM) to verify an https server; null uses the system's.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("http", "https", "file"):
            raise ValueError(f"{value!r} must start with http://, https:// or file://")
        return value


class SftpTarget(TargetBase):
    """A remote folder reached with SFTP; each job lands in ``<folder>/<job id>/``."""

    target_type: Literal["sftp"] = Field(description="`sftp`.")
    folder: str = Field(min_length=1, description="Folder on the remote host.")
    user: str = Field(min_length=1, description="SSH user.")
    host: str = Field(min_length=1, description="SSH host.")
    password: Secret | None = Field(default=None, description="SSH password; null uses SSH keys.")
    file_filter: str = Field(
        default="", description="Comma-separated glob patterns of files not to send."
    )
    port: int = Field(default=22, ge=1, le=65535, description="SSH port.")
    key_file: LocalPath | None = Field(
        default=None, description="Private key file; null tries the SSH agent and ~/.ssh keys."
    )
    known_hosts: LocalPath | None = Field(
        default=None,
        description="known_hosts file holding the server's host key; null uses ~/.ssh/known_hosts. "
        "An unknown host key is refused.",
    )
    timeout: Seconds = Field(default=30, gt=0, description="Seconds to connect and for each call.")


class RsyncTarget(TargetBase):
    """A remote folder reached with rsync over SSH (not yet supported by mercury's dispatcher)."""

    target_type: Literal["rsync"] = Field(description="`rsync`.")
    folder: str = Field(min_length=1, description="Folder on the remote host.")
    user: str = Field(min_length=1, description="SSH user.")
    host: str = Field(min_length=1, description="SSH host.")
    password: Secret | None = Field(default=None, description="SSH password; null uses SSH keys.")
    run_on_complete: bool = Field(
        default=False,
        description="Run `<folder>/mercure_complete.sh <destination> <target>` on the remote "
        "host after each job.",
    )
    file_filter: str = Field(
        default="", description="Comma-separated glob patterns of files not to send."
    )


class XnatTarget(TargetBase):
    """An XNAT project (not yet supported by mercury's dispatcher)."""

    target_type: Literal["xnat"] = Field(description="`xnat`.")
    project_id: str = Field(min_length=1, description="XNAT project ID.")
    host: str = Field(min_length=1, description="XNAT base URL.")
    user: str = Field(min_length=1, description="XNAT user.")
    password: Secret = Field(description="XNAT password.")


class S3Target(TargetBase):
    """An S3 bucket; each file is stored as ``<prefix>/<job id>/<file name>``."""

    target_type: Literal["s3"] = Field(description="`s3`.")
    region: str = Field(min_length=1, description="AWS region, such as eu-central-1.")
    bucket: str = Field(min_length=1, description="Bucket name.")
    prefix: str = Field(default="", description="Key prefix inside the bucket.")
    access_key_id: str = Field(min_length=1, description="Access key ID.")
    secret_access_key: Secret = Field(description="Secret access key.")
    endpoint_url: str | None = Field(
        default=None, description="Endpoint of an S3-compatible store (MinIO, Ceph); null is AWS."
    )


class FolderTarget(TargetBase):
    """A local or mounted folder; each job is copied to ``<folder>/<unique id>/``."""

    target_type: Literal["folder"] = Field(description="`folder`.")
    folder: LocalPath = Field(description="Destination folder.")
    file_filter: str = Field(
        default="", description="Comma-separated glob patterns of files not to copy."
    )


class DummyTarget(TargetBase):
    """Accepts everything and sends nothing: for testing rules."""

    target_type: Literal["dummy"] = Field(description="`dummy`.")


Target = Annotated[
    DicomTarget
    | DicomTlsTarget
    | DicomWebTarget
    | SftpTarget
    | RsyncTarget
    | XnatTarget
    | S3Target
    | FolderTarget
    | DummyTarget,
    Field(discriminator="target_type"),
]
"""Any target; the ``target_type`` key decides which."""

TARGET_MODELS: dict[str, type[TargetBase]] = {
    "dicom": DicomTarget,
    "dicomtls": DicomTlsTarget,
    "dicomweb": DicomWebTarget,
    "sftp": SftpTarget,
    "rsync": RsyncTarget,
    "xnat": XnatTarget,
    "s3": S3Target,
    "folder": FolderTarget,
    "dummy": DummyTarget,
}
"""Target models by ``target_type``, in the order the documentation lists them."""

TARGET_TYPES: tuple[str, ...] = tuple(TARGET_MODELS)

UNSUPPORTED_TARGET_TYPES: frozenset[str] = frozenset({"rsync", "xnat"})
"""Types we accept in the file but cannot dispatch to yet."""
