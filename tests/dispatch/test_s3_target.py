"""The s3 target against moto's S3 server running as a separate process."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from mercury.config.targets import S3Target
from mercury.dispatch.base import SenderContext, SendFailed, Shipment, TargetUnreachable
from mercury.dispatch.registry import create_sender
from mercury.dispatch.targets.s3 import S3Sender, object_key
from tests.dispatch.support import shipment
from tests.helpers import free_port, make_small_images

REGION = "us-east-1"


def s3_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",  # moto accepts any credentials
    )


def s3_sender(endpoint: str, bucket: str, prefix: str = "") -> S3Sender:
    target = S3Target(
        target_type="s3",
        region=REGION,
        bucket=bucket,
        prefix=prefix,
        access_key_id="test",
        secret_access_key="test",
        endpoint_url=endpoint,
    )
    sender = create_sender("bucket", target, SenderContext("MERCURY", Path("/tmp")))
    assert isinstance(sender, S3Sender)
    return sender


def all_keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(entry["Key"] for page in pages for entry in page.get("Contents", []))


def assert_delivered(client: Any, bucket: str, job_prefix: str, job: Shipment) -> None:
    expected = {f"{job_prefix}{item.export_name}": item for item in job.instances}
    assert all_keys(client, bucket) == sorted([*expected, f"{job_prefix}.complete"])
    marker = client.get_object(Bucket=bucket, Key=f"{job_prefix}.complete")
    assert marker["Body"].read() == b""
    for key, item in expected.items():
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert body == item.path.read_bytes()


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    name = f"mercury-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_small_images(tmp_path_factory.mktemp("src"), 4, per_series=2)


def test_a_job_is_uploaded_with_complete_last(
    moto_endpoint: str, bucket: str, images: list[Path]
) -> None:
    sender = s3_sender(moto_endpoint, bucket, prefix="incoming")
    uploaded: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        uploaded.append(params["Key"])

    sender.client().meta.events.register("before-parameter-build.s3.PutObject", record)
    job = shipment(images, job_id="job42")

    report = sender.send(job)

    assert [r.status for r in report.results] == ["sent"] * 4
    client = s3_client(moto_endpoint)
    assert_delivered(client, bucket, "incoming/job42/", job)
    assert uploaded[-1] == "incoming/job42/.complete"
    assert sorted(uploaded[:-1]) == sorted(f"incoming/job42/{i.export_name}" for i in job.instances)
    head = client.head_object(Bucket=bucket, Key=f"incoming/job42/{job.instances[0].export_name}")
    assert head["ContentType"] == "application/dicom"
    assert sender.describe() == f"s3 s3://{bucket}/incoming ({moto_endpoint})"
    assert "test" not in sender.describe()


@pytest.mark.parametrize(
    ("prefix", "job_prefix"),
    [
        ("", "p1/"),
        ("in/", "in/p1/"),
        ("/site/a//b/", "site/a/b/p1/"),
    ],
)
def test_prefix_makes_clean_keys(
    moto_endpoint: str, bucket: str, images: list[Path], prefix: str, job_prefix: str
) -> None:
    job = shipment(images[:2], job_id="p1")
    s3_sender(moto_endpoint, bucket, prefix=prefix).send(job)
    assert_delivered(s3_client(moto_endpoint), bucket, job_prefix, job)


def test_object_key_never_starts_with_or_doubles_a_slash() -> None:
    assert object_key("", "j", "f.dcm") == "j/f.dcm"
    assert object_key("/", "j", "f.dcm") == "j/f.dcm"
    assert object_key("a/", "j", "f.dcm") == "a/j/f.dcm"
    assert object_key("a", "j", "f.dcm") == "a/j/f.dcm"
    assert object_key("a") == "a"


def test_retry_after_a_partial_attempt_replaces_and_clears_leftovers(
    moto_endpoint: str, bucket: str, images: list[Path]
) -> None:
    job = shipment(images, job_id="again")
    client = s3_client(moto_endpoint)
    first = job.instances[0]
    client.put_object(Bucket=bucket, Key=f"again/{first.export_name}", Body=b"cut short")
    client.put_object(Bucket=bucket, Key="again/1.2.3#4.5.6.dcm", Body=b"not in this job")
    sender = s3_sender(moto_endpoint, bucket)

    report = sender.send(job)
    assert_delivered(client, bucket, "again/", job)
    assert any("earlier attempt" in note for note in report.notes)

    sender.send(job)  # already complete: sending again is harmless
    assert_delivered(client, bucket, "again/", job)


def test_a_missing_bucket_is_unreachable(moto_endpoint: str, images: list[Path]) -> None:
    sender = s3_sender(moto_endpoint, "no-such-bucket-here")
    with pytest.raises(TargetUnreachable, match="'no-such-bucket-here' does not exist"):
        sender.send(shipment(images))
    verdict = sender.probe()
    assert not verdict.ok
    assert "does not exist" in verdict.message
    assert "create it" in verdict.message


def test_nothing_listening_is_unreachable(images: list[Path]) -> None:
    sender = s3_sender(f"http://127.0.0.1:{free_port()}", "any")
    with pytest.raises(TargetUnreachable, match="cannot reach"):
        sender.send(shipment(images))
    verdict = sender.probe()
    assert not verdict.ok
    assert "endpoint_url" in verdict.message


def test_cancel_stops_before_the_marker(
    moto_endpoint: str, bucket: str, images: list[Path]
) -> None:
    job = shipment(images, job_id="stop")
    job.cancel.set()
    with pytest.raises(SendFailed, match="cancelled"):
        s3_sender(moto_endpoint, bucket).send(job)
    assert "stop/.complete" not in all_keys(s3_client(moto_endpoint), bucket)


def test_probe_writes_and_deletes_an_object(moto_endpoint: str, bucket: str) -> None:
    verdict = s3_sender(moto_endpoint, bucket, prefix="in").probe()
    assert verdict.ok, verdict.message
    assert "writable" in verdict.message
    assert all_keys(s3_client(moto_endpoint), bucket) == []


@pytest.mark.parametrize("failing", ["list_objects_v2", "put_object"])
def test_refused_credentials_are_unreachable(
    moto_endpoint: str, bucket: str, images: list[Path], failing: str
) -> None:
    """The store's answer to a wrong access key, as botocore delivers it, on the first
    request (listing leftovers) and on an upload (which boto3 wraps in its own error)."""
    from botocore.stub import Stubber

    sender = s3_sender(moto_endpoint, bucket)
    with Stubber(sender.client()) as stub:
        if failing == "put_object":
            stub.add_response("list_objects_v2", {"KeyCount": 0})
        stub.add_client_error(
            failing,
            service_error_code="InvalidAccessKeyId",
            service_message="The AWS Access Key Id you provided does not exist in our records.",
            http_status_code=403,
        )
        with pytest.raises(TargetUnreachable, match=r"refused access .*InvalidAccessKeyId"):
            sender.send(shipment(images[:1]))
