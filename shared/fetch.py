"""Fetching product images by URI, safely: only configured buckets and hosts, never an internal
address by accident (SSRF), with size and time limits. Every refusal is decided before any
request is made, and its reason is what the event row records."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.config import Settings
from shared.errors import PermanentError

log = logging.getLogger("shared.fetch")
# RFC 6052 NAT64 prefix: 64:ff9b::a.b.c.d reaches a.b.c.d through the gateway.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Global unicast (RFC 4291): everything else (::/96 IPv4-compatible such as ::127.0.0.1, ::ffff:0:0:0/96,
# the local-use NAT64 prefix 64:ff9b:1::/48, ...) is not an address the open internet reaches.
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
ANY_BUCKET = "*"

class FetchError(PermanentError):
    """The image could not be had; the message is the reason recorded on the event.

    ``unavailable``: our object store (s3://) could not be reached or answered 5xx — an outage, not
    the event's fault; the worker waits for the store instead of tagging the product without its
    photo. A seller's own https:// host failing is that event's problem and never sets it."""

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(message)
        self.unavailable = unavailable


#: S3 error codes that mean the store, not the object, is failing.
_STORE_DOWN_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout",
                               "500", "502", "503", "504"})


def _is_public(addr: str) -> bool:
    """A global unicast address; an IPv6 one that embeds an IPv4 address is judged by that too."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    if not ip.is_global or ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:  # judged by the IPv4 address it reaches
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return embedded.is_global and not embedded.is_multicast
        if ip not in _GLOBAL_UNICAST:
            return False
        if ip.sixtofour is not None:  # 2002::/16 reaches the IPv4 address it embeds
            return ip.sixtofour.is_global and not ip.sixtofour.is_multicast
    return True


def _timed_out(exc: BaseException) -> bool:
    """Whether a timeout caused ``exc`` (urllib3 wraps a TLS handshake timeout in ProtocolError)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, TimeoutError | socket.timeout) or "timed out" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__ or (seen.args[-1] if seen.args and
                                                       isinstance(seen.args[-1], BaseException) else None)
    return False


class ImageFetcher:
    """``fetch_many(uris)`` -> bytes or a FetchError per URI, fetched concurrently."""

    def __init__(self, settings: Settings, threads: int = 8) -> None:
        self.s = settings
        self._s3 = None
        self._s3_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")

    # --- policy -------------------------------------------------------------------------
    def check(self, uri: str) -> tuple[str, object]:
        """Decide whether ``uri`` may be fetched; returns (scheme, target) or raises FetchError."""
        try:
            parsed = urlparse(uri)
            port = parsed.port
        except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
            raise FetchError(f"image_uri: malformed URI ({exc})") from None
        scheme = parsed.scheme.lower()
        if scheme == "s3":
            bucket = parsed.netloc
            if not bucket or not parsed.path.lstrip("/"):
                raise FetchError(f"image_uri {uri!r}: s3 URI needs a bucket and a key")
            # Empty allows none: an unset list must not open every bucket the credentials can read.
            if ANY_BUCKET not in self.s.image_buckets and bucket not in self.s.image_buckets:
                raise FetchError(f"image_uri: bucket '{bucket}' is not in TAGGER_IMAGE_BUCKETS"
                                 + ("" if self.s.image_buckets else " (empty: no bucket is allowed; "
                                    '["*"] allows any)'))
            return "s3", (bucket, unquote(parsed.path.lstrip("/")))
        if scheme == "file":
            if not self.s.allow_file_uris:
                raise FetchError("image_uri: file:// URIs are disabled (TAGGER_ALLOW_FILE_URIS)")
            if parsed.netloc not in ("", "localhost"):
                raise FetchError(f"image_uri: file:// URI names host '{parsed.netloc}'; only local files")
            return "file", Path(unquote(parsed.path))
        if scheme == "https":
            host = (parsed.hostname or "").lower()
            if host not in {h.lower() for h in self.s.image_hosts}:
                raise FetchError(f"image_uri: host '{host}' is not in TAGGER_IMAGE_HOSTS")
            port = port or 443
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise FetchError(f"image_uri: cannot resolve host '{host}': {exc.strerror}") from None
            addrs = sorted({i[4][0] for i in infos})
            if not self.s.allow_private_addresses:
                bad = [a for a in addrs if not _is_public(a)]
                if bad:
                    raise FetchError(
                        f"image_uri: host '{host}' resolves to non-public address {bad[0]} "
                        "(TAGGER_ALLOW_PRIVATE_ADDRESSES is off)"
                    )
            path = parsed.path or "/"
            if parsed.query:
                path += "?" + parsed.query
            # Connect to the address we checked, not a second lookup (DNS rebinding).
            return "https", (host, addrs[0], port, path)
        raise FetchError(f"image_uri: scheme '{scheme or '?'}' is not supported (s3, https, file)")

    # --- fetching ----------------------------------------------------------------------
    def fetch(self, uri: str) -> bytes:
        scheme, target = self.check(uri)
        if scheme == "s3":
            body = self._fetch_s3(*target)
        elif scheme == "file":
            body = self._fetch_file(target)
        else:
            body = self._fetch_https(*target)
        if not body:  # the model would take b"" for "no image" and record no reason
            raise FetchError(f"image at {uri[:300]} is empty")
        return body

    def fetch_many(self, uris: list[str | None]) -> list[bytes | FetchError | None]:
        """One slot per URI: the bytes, the FetchError explaining why not, or None (no URI)."""

        def one(uri: str | None) -> bytes | FetchError | None:
            if not uri:
                return None
            try:
                return self.fetch(uri)
            except FetchError as exc:
                return exc
            except Exception as exc:  # an unexpected failure is this image's, not the batch's
                log.warning("fetch_failed error=%s", type(exc).__name__, exc_info=True)
                return FetchError(f"image fetch failed: {type(exc).__name__}: {exc}"[:500])

        slots: list[bytes | FetchError | None] = [None] * len(uris)
        wanted = [i for i, uri in enumerate(uris) if uri]  # a text-only event costs no pool task
        for i, got in zip(wanted, self._pool.map(one, [uris[i] for i in wanted]), strict=True):
            slots[i] = got
        return slots

    def _limit(self, size: int | None) -> None:
        if size is not None and size > self.s.max_image_bytes:
            raise FetchError(f"image is {size} bytes, over the {self.s.max_image_bytes} limit")

    def _fetch_file(self, path: Path) -> bytes:
        try:
            # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever; the
            # type is checked on the open descriptor, so a path swapped after a stat() cannot slip by.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                raise FetchError(f"image {path} is not a regular file")
            with os.fdopen(fd, "rb") as fh:
                self._limit(info.st_size)
                body = fh.read(self.s.max_image_bytes + 1)
            self._limit(len(body))
            return body
        except FileNotFoundError:
            raise FetchError(f"image not found: {path}") from None
        except OSError as exc:
            raise FetchError(f"cannot read image {path}: {exc.strerror}") from None

    def _client(self):
        # Built once, under a lock, from a session of our own: the fetch threads ask for it at the
        # same moment, and creating clients from boto3's shared default session is not thread-safe.
        with self._s3_lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config

                self._s3 = boto3.session.Session().client(
                    "s3", endpoint_url=self.s.s3_endpoint_url,
                    config=Config(connect_timeout=self.s.fetch_timeout_s,
                                  read_timeout=self.s.fetch_timeout_s,
                                  retries={"total_max_attempts": 2, "mode": "standard"}),
                )
            return self._s3

    def _fetch_s3(self, bucket: str, key: str) -> bytes:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        try:
            obj = self._client().get_object(Bucket=bucket, Key=key)
            try:
                self._limit(obj.get("ContentLength"))
                body = obj["Body"].read(self.s.max_image_bytes + 1)
            finally:
                obj["Body"].close()
            self._limit(len(body))
            return body
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "?"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            raise FetchError(f"s3://{bucket}/{key}: {code}",
                             unavailable=code in _STORE_DOWN_CODES or status >= 500) from None
        except ConnectTimeoutError:
            raise FetchError(f"s3://{bucket}/{key}: store unreachable (connect timed out)",
                             unavailable=True) from None
        except ReadTimeoutError:
            raise FetchError(f"s3://{bucket}/{key}: timed out") from None
        except (EndpointConnectionError, ConnectionClosedError):
            raise FetchError(f"s3://{bucket}/{key}: store unreachable", unavailable=True) from None
        except BotoCoreError as exc:
            raise FetchError(f"s3://{bucket}/{key}: {exc}") from None

    def _fetch_https(self, host: str, addr: str, port: int, path: str) -> bytes:
        import urllib3

        pool = urllib3.HTTPSConnectionPool(
            addr, port, server_hostname=host, assert_hostname=host,
            ca_certs=self.s.fetch_ca_bundle, cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(total=self.s.fetch_timeout_s), retries=False,
        )
        deadline = time.monotonic() + self.s.fetch_timeout_s
        where = f"https://{host}{'' if port == 443 else f':{port}'}{path}"
        try:
            resp = pool.urlopen("GET", path, headers={"Host": host if port == 443 else f"{host}:{port}"},
                                preload_content=False, redirect=False)
            try:
                if resp.status != 200:
                    raise FetchError(f"{where}: HTTP {resp.status}")
                length = resp.headers.get("Content-Length")
                self._limit(int(length) if length and length.isdigit() else None)
                return self._read_until(resp, deadline, where)
            finally:
                resp.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            reason = "timed out" if _timed_out(exc) else str(exc)
            raise FetchError(f"{where}: {reason}") from None
        finally:
            pool.close()

    def _read_until(self, resp, deadline: float, where: str) -> bytes:
        """The body, at most max_image_bytes, within the deadline: the socket timeout alone
        restarts on every read, so a server dripping a byte at a time would never time out."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise FetchError(f"{where}: timed out")
            chunk = resp.read1(65536)  # returns after one socket read, unlike read(n)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            self._limit(size)
            chunks.append(chunk)
