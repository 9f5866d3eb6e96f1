"""Fetching product images by URI, safely: only configured buckets and hosts, never an internal
address by accident (SSRF), with size and time limits. Every refusal is decided before any
request is made, and its reason is what the event row records."""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.config import Settings
from shared.errors import PermanentError


class FetchError(PermanentError):
    """The image could not be had; the message is the reason recorded on the event."""


def _is_public(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_global and not ip.is_multicast


class ImageFetcher:
    """``fetch_many(uris)`` -> bytes or a FetchError per URI, fetched concurrently."""

    def __init__(self, settings: Settings, threads: int = 8) -> None:
        self.s = settings
        self._s3 = None
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")

    # --- policy -------------------------------------------------------------------------
    def check(self, uri: str) -> tuple[str, object]:
        """Decide whether ``uri`` may be fetched; returns (scheme, target) or raises FetchError."""
        parsed = urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme == "s3":
            bucket = parsed.netloc
            if not bucket or not parsed.path.lstrip("/"):
                raise FetchError(f"image_uri {uri!r}: s3 URI needs a bucket and a key")
            if self.s.image_buckets and bucket not in self.s.image_buckets:
                raise FetchError(f"image_uri: bucket '{bucket}' is not in TAGGER_IMAGE_BUCKETS")
            return "s3", (bucket, unquote(parsed.path.lstrip("/")))
        if scheme == "file":
            if not self.s.allow_file_uris:
                raise FetchError("image_uri: file:// URIs are disabled (TAGGER_ALLOW_FILE_URIS)")
            return "file", Path(unquote(parsed.path))
        if scheme == "https":
            host = (parsed.hostname or "").lower()
            if host not in {h.lower() for h in self.s.image_hosts}:
                raise FetchError(f"image_uri: host '{host}' is not in TAGGER_IMAGE_HOSTS")
            port = parsed.port or 443
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
            return self._fetch_s3(*target)
        if scheme == "file":
            return self._fetch_file(target)
        return self._fetch_https(*target)

    def fetch_many(self, uris: list[str | None]) -> list[bytes | FetchError | None]:
        """One slot per URI: the bytes, the FetchError explaining why not, or None (no URI)."""

        def one(uri: str | None) -> bytes | FetchError | None:
            if not uri:
                return None
            try:
                return self.fetch(uri)
            except FetchError as exc:
                return exc

        return list(self._pool.map(one, uris))

    def _limit(self, size: int | None) -> None:
        if size is not None and size > self.s.max_image_bytes:
            raise FetchError(f"image is {size} bytes, over the {self.s.max_image_bytes} limit")

    def _fetch_file(self, path: Path) -> bytes:
        try:
            self._limit(path.stat().st_size)
            return path.read_bytes()
        except FileNotFoundError:
            raise FetchError(f"image not found: {path}") from None
        except OSError as exc:
            raise FetchError(f"cannot read image {path}: {exc.strerror}") from None

    def _client(self):
        if self._s3 is None:
            import boto3
            from botocore.config import Config

            self._s3 = boto3.client(
                "s3", endpoint_url=self.s.s3_endpoint_url,
                config=Config(connect_timeout=self.s.fetch_timeout_s,
                              read_timeout=self.s.fetch_timeout_s, retries={"max_attempts": 2}),
            )
        return self._s3

    def _fetch_s3(self, bucket: str, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._client().get_object(Bucket=bucket, Key=key)
            self._limit(obj.get("ContentLength"))
            body = obj["Body"].read(self.s.max_image_bytes + 1)
            self._limit(len(body))
            return body
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            raise FetchError(f"s3://{bucket}/{key}: {code}") from None
        except BotoCoreError as exc:
            raise FetchError(f"s3://{bucket}/{key}: {exc}") from None

    def _fetch_https(self, host: str, addr: str, port: int, path: str) -> bytes:
        import urllib3

        pool = urllib3.HTTPSConnectionPool(
            addr, port, server_hostname=host, assert_hostname=host,
            ca_certs=self.s.fetch_ca_bundle, cert_reqs="CERT_REQUIRED",
            timeout=urllib3.Timeout(total=self.s.fetch_timeout_s), retries=False,
        )
        try:
            resp = pool.urlopen("GET", path, headers={"Host": host}, preload_content=False,
                                redirect=False)
            try:
                if resp.status != 200:
                    raise FetchError(f"https://{host}{path}: HTTP {resp.status}")
                length = resp.headers.get("Content-Length")
                self._limit(int(length) if length and length.isdigit() else None)
                body = resp.read(self.s.max_image_bytes + 1)
                self._limit(len(body))
                return body
            finally:
                resp.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            reason = "timed out" if isinstance(exc, urllib3.exceptions.TimeoutError) else str(exc)
            raise FetchError(f"https://{host}{path}: {reason}") from None
        finally:
            pool.close()
