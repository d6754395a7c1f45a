"""Audio in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...), through boto3.

Objects are named ``<prefix><sha[:2]>/<sha>``: content-addressed, so an object is never overwritten with other
bytes and a worker's local copy never goes stale. Credentials come from the standard AWS chain (environment,
shared files, instance or pod role); the region too (AWS_REGION), where the endpoint needs one.

boto3 ships with the ``server`` extra (`pip install 'emopres[server]'`); the embedded default never imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

MAX_DELETE_KEYS = 1000  # DeleteObjects takes at most 1000 keys per request
POOL_CONNECTIONS = 32  # as many as the blob writer threads (core.blobstore._writers)


class BlobStoreUnavailable(ConnectionError):
    """The object store cannot be used now: unreachable, refusing the credentials, or its bucket missing. The
    message says which; a submission answers 503 with Retry-After, a worker waits and retries under its lease."""


def _botocore():
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError:
        raise BlobStoreUnavailable(
            "EMOPRES_BLOB_STORE=s3 needs boto3: pip install 'emopres[server]' (or boto3)"
        ) from None
    return boto3, botocore


class S3Blobs:
    """A content-addressed set of objects in one bucket (thread-safe: one boto3 client, made on first use, in the
    process that uses it: never inherited across a fork)."""

    def __init__(
        self, bucket: str, prefix: str = "", endpoint_url: str | None = None, timeout_seconds: float = 10.0
    ) -> None:
        self.bucket, self.endpoint_url, self.timeout_seconds = bucket, endpoint_url, timeout_seconds
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._client = None
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def key(self, sha256: str) -> str:
        return f"{self.prefix}{sha256[:2]}/{sha256}"

    def client(self):
        with self._lock:
            if self._client is None:
                boto3, botocore = _botocore()
                config = botocore.config.Config(
                    connect_timeout=self.timeout_seconds,
                    read_timeout=self.timeout_seconds,
                    retries={"mode": "standard", "total_max_attempts": 2},  # an outage is answered (503, or waited out)
                    max_pool_connections=POOL_CONNECTIONS,
                )
                self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint_url, config=config)
            return self._client

    def size(self, sha256: str) -> int | None:
        """The object's size; None when there is none."""
        try:
            return int(self._call("head_object", Bucket=self.bucket, Key=self.key(sha256))["ContentLength"])
        except _Absent:
            return None

    def replace(self, sha256: str, data: bytes) -> None:
        """Store the object (a PUT is atomic: readers see the whole object or none)."""
        self._call("put_object", Bucket=self.bucket, Key=self.key(sha256), Body=data)

    def read(self, sha256: str) -> bytes | None:
        try:
            response = self._call("get_object", Bucket=self.bucket, Key=self.key(sha256))
        except _Absent:
            return None
        try:
            return response["Body"].read()
        except Exception as error:
            raise self._unavailable(error) from error

    def remove(self, sha256: str) -> None:
        self.remove_many([sha256])

    def remove_many(self, shas: Iterable[str]) -> None:
        keys = [{"Key": self.key(sha)} for sha in shas]
        for start in range(0, len(keys), MAX_DELETE_KEYS):
            answer = self._call(
                "delete_objects", Bucket=self.bucket, Delete={"Objects": keys[start : start + MAX_DELETE_KEYS]}
            )
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise BlobStoreUnavailable(
                    f"object store {self.where}: {len(answer['Errors'])} object(s) not deleted "
                    f"({first.get('Code')}: {first.get('Message')})"
                )

    def keys(self) -> list[str]:
        """Every object key under the prefix (tests and operators: what the bucket holds)."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        try:
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        except Exception as error:
            raise self._unavailable(error) from error

    def check(self) -> None:
        """Raise BlobStoreUnavailable saying what is wrong (no bucket, no or refused credentials, endpoint down)."""
        try:
            self._call("head_bucket", Bucket=self.bucket)
        except _Absent:
            raise BlobStoreUnavailable(
                f"object store: no bucket {self.bucket!r}"
                + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                + " (create it, or set EMOPRES_S3_BUCKET)"
            ) from None

    def _call(self, operation: str, **kwargs):
        client = self.client()
        try:
            return getattr(client, operation)(**kwargs)
        except Exception as error:
            if _status(error) == 404 or _code(error) in ("NoSuchKey", "NoSuchBucket", "NotFound", "404"):
                if operation != "head_bucket" and _code(error) == "NoSuchBucket":
                    raise BlobStoreUnavailable(f"object store: no bucket {self.bucket!r}") from error
                raise _Absent from error
            raise self._unavailable(error) from error

    def _unavailable(self, error: BaseException) -> BlobStoreUnavailable:
        _, botocore = _botocore()
        exceptions = botocore.exceptions
        if isinstance(error, BlobStoreUnavailable):
            return error
        if isinstance(error, exceptions.NoCredentialsError | exceptions.PartialCredentialsError):
            return BlobStoreUnavailable(
                f"object store {self.where}: no credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE, or give the host a role)"
            )
        if _status(error) == 403 or _code(error) in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return BlobStoreUnavailable(
                f"object store {self.where}: the credentials are refused ({_code(error) or 'HTTP 403'})"
            )
        if isinstance(error, exceptions.ConnectionError | exceptions.HTTPClientError):
            return BlobStoreUnavailable(f"object store {self.where}: endpoint down or unreachable ({error})")
        if isinstance(error, exceptions.ClientError):
            return BlobStoreUnavailable(f"object store {self.where}: {_code(error)} (HTTP {_status(error)})")
        return BlobStoreUnavailable(f"object store {self.where}: {type(error).__name__}: {error}")


class _Absent(Exception):
    """No such object (or bucket, for head_bucket)."""


def _status(error: BaseException) -> int | None:
    return (getattr(error, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")


def _code(error: BaseException) -> str | None:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
