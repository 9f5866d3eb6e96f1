"""Object storage for model artifacts: a local directory by default, S3 through boto3 in production.

Keys are written once: a versioned key that already exists is refused, never overwritten, so a
uri recorded in the database always names the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from shared.config import Settings

# Safe on every filesystem and S3: no empty, "." or ".." parts, no backslashes or control characters.
_KEY_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@-]*$")
_TMP_PREFIX = ".tmp-"


class ObjectNotFound(PermanentError):
    """The key is not in the store; the message is its uri."""


class ObjectExistsError(PermanentError):
    """The key already exists: keys are immutable, so a second write is refused."""


class StoreConfigError(PermanentError):
    """The object store URL or a key is unusable."""


class StoreUnavailable(TransientError):
    """The store did not answer or failed on its side; retrying may help."""


class ObjectStore(Protocol):
    """The few operations the registry needs; every implementation is write-once per key."""

    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def uri(self, key: str) -> str: ...


def check_key(key: str) -> str:
    """Return ``key`` if every part is a plain name: a key must never escape the store's root."""
    parts = key.split("/")
    if not key or not all(_KEY_PART.match(p) for p in parts):
        raise StoreConfigError(f"object key {key!r}: parts must be plain names ([A-Za-z0-9._+=@-])")
    return key


class LocalStore:
    """A directory as an object store; writes are atomic (temp file, then a hard link that fails
    if the name exists), so readers never see half a file and two writers cannot both win."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` once; raises ObjectExistsError if the key exists."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            raise ObjectExistsError(f"{self.uri(key)} already exists (keys are write-once)")
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            try:
                # link() is create-exclusive and atomic: the loser of a race gets EEXIST.
                os.link(tmp, path)
            except FileExistsError:
                raise ObjectExistsError(f"{self.uri(key)} already exists (keys are write-once)") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(path.parent)

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises ObjectNotFound."""
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"{self.uri(key)}: not found") from None
        except OSError as exc:
            raise StoreUnavailable(f"{self.uri(key)}: {exc.strerror}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (a plain string prefix, as in S3), sorted."""
        # Walk only the deepest folder the prefix fully names.
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(start):
            rel = Path(dirpath).relative_to(self.root)
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = (rel / name).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri() if key else self.root.as_uri()


def _fsync_dir(folder: Path) -> None:
    """Make a new directory entry durable (a crash must not lose a key the database names)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class S3Store:
    """An S3 bucket (or any S3-compatible store) under a key prefix, through boto3."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None,
                 client: Any = None) -> None:
        if not bucket:
            raise StoreConfigError("S3 store: bucket name is empty")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix)
        self.endpoint_url = endpoint_url
        self._client = client
        self._lock = threading.Lock()
        self._conditional: bool | None = None  # does put_object take IfNoneMatch? decided on first put

    def __repr__(self) -> str:
        return f"S3Store({self.uri('')!r})"

    @property
    def client(self) -> Any:
        # A session of our own: boto3's default session is not thread-safe to build clients from.
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url,
                    config=Config(connect_timeout=10, read_timeout=60,
                                  retries={"total_max_attempts": 4, "mode": "standard"}),
                )
            return self._client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _supports_if_none_match(self) -> bool:
        if self._conditional is None:
            shape = self.client.meta.service_model.operation_model("PutObject").input_shape
            self._conditional = "IfNoneMatch" in shape.members
        return self._conditional

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key`` once; raises ObjectExistsError if the key exists."""
        from botocore.exceptions import ClientError

        full = self._key(key)
        if self._supports_if_none_match():
            try:
                # S3 decides atomically: of two racing writers exactly one gets 200.
                self.client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
                return
            except ClientError as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    raise ObjectExistsError(f"{self.uri(key)} already exists (keys are write-once)") from None
                if code not in ("NotImplemented", "501"):
                    raise self._error(exc, key) from None
                # An S3-compatible store without conditional writes: check, then write.
                self._conditional = False
            except Exception as exc:
                raise self._error(exc, key) from None
        if self.exists(key):
            raise ObjectExistsError(f"{self.uri(key)} already exists (keys are write-once)")
        try:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data)
        except Exception as exc:
            raise self._error(exc, key) from None

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises ObjectNotFound."""
        full = self._key(key)
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(obj["Body"]) as body:
                return body.read()
        except Exception as exc:
            raise self._error(exc, key) from None

    def exists(self, key: str) -> bool:
        full = self._key(key)
        try:
            self.client.head_object(Bucket=self.bucket, Key=full)
            return True
        except Exception as exc:
            err = self._error(exc, key)
            if isinstance(err, ObjectNotFound):
                return False
            raise err from None

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (relative to the store's prefix), sorted."""
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base + prefix)
            for page in pages:
                keys.extend(o["Key"][len(base):] for o in page.get("Contents", []))
        except Exception as exc:
            raise self._error(exc, prefix) from None
        return sorted(keys)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}" if key else f"s3://{self.bucket}/{self.prefix}"

    def _error(self, exc: Exception, key: str) -> Exception:
        """Map a boto error onto ours: missing key, bad configuration, or a store worth retrying."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = self.uri(key)
        if isinstance(exc, ClientError):
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectNotFound(f"{where}: not found")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 500
            if status >= 500 or code in ("SlowDown", "RequestTimeout", "Throttling"):
                return StoreUnavailable(f"{where}: {code}")
            # Any other 4xx (NoSuchBucket, AccessDenied, ...) is the configuration's fault.
            return StoreConfigError(f"{where}: {code}")
        if isinstance(exc, NoCredentialsError):
            return StoreConfigError(f"{where}: no AWS credentials (AWS_ACCESS_KEY_ID or a profile)")
        if isinstance(exc, BotoCoreError):
            return StoreUnavailable(f"{where}: {exc}")
        return exc


def _code(exc: Any) -> str:
    err = exc.response.get("Error", {})
    return str(err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))


def open_store(url: str, settings: Settings | None = None) -> ObjectStore:
    """The store a URL names: ``file://DIR`` (relative to the working directory unless it starts
    with ``/``) or ``s3://bucket/prefix`` (endpoint from ``settings.s3_endpoint_url``)."""
    if url.startswith("file://"):
        path = unquote(url[len("file://"):])
        if not path:
            raise StoreConfigError(f"object store {url!r}: file:// needs a directory")
        return LocalStore(Path(path))
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreConfigError(f"object store {url!r}: s3:// needs a bucket (s3://bucket/prefix)")
        endpoint = settings.s3_endpoint_url if settings is not None else None
        return S3Store(parsed.netloc, unquote(parsed.path), endpoint_url=endpoint)
    raise StoreConfigError(
        f"object store {url!r}: scheme must be file:// or s3:// (TAGGER_OBJECT_STORE_URL)"
    )
