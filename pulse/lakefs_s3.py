"""The lake's store on S3-compatible object storage (`LakeStore.open` of `s3://...`).

Everything the folder store does, through pyarrow's `S3FileSystem`: whole objects (one
PUT, or an upload checked and then copied into place), listings, lake-wide locks as
leased marker objects. Only `pulse.lakefs` imports it, when a lake is on S3.
"""

from __future__ import annotations

import builtins
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from pulse.settings import Settings

from .lakefs import Entry, LakeStore, LakeStoreError, vanished

SINGLE_PUT_BYTES = 5 * 1024 * 1024
"""Up to this size pyarrow sends an object in one PUT; larger ones go multipart."""
LOCK_LEASE_SECONDS = 120.0
"""A lock nobody renewed for this long is stale (its holder died)."""
LOCK_RENEW_SECONDS = 20.0


class S3Store(LakeStore):
    """Objects under `s3://bucket/prefix`, through pyarrow's S3 client.

    pyarrow reads the AWS credentials itself but not `AWS_ENDPOINT_URL_S3`, so the
    endpoint (and region) come from `Settings`; a custom endpoint means a non-AWS store
    and path-style addressing (pyarrow's default).
    """

    local = False

    def __init__(self, root: str, settings: Settings) -> None:
        parts = urlsplit(root)
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if not bucket or parts.query or parts.fragment:
            raise LakeStoreError(f"PULSE_LAKE must look like s3://bucket/prefix, got {root!r}")
        self.root = root
        self.bucket = bucket
        self.base = f"{bucket}/{prefix}" if prefix else bucket
        options: dict[str, Any] = {
            # A store that stops answering is an error after 10 s, so that the sink
            # reports it and retries with its own backoff, rather than hanging.
            "region": settings.aws_region, "connect_timeout": 5.0, "request_timeout": 10.0,
            "allow_delayed_open": True,  # small objects then go in one PUT, not multipart
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(
                max_attempts=settings.aws_max_attempts),
        }
        if settings.s3_endpoint:
            endpoint = urlsplit(settings.s3_endpoint)
            options["endpoint_override"] = endpoint.netloc
            options["scheme"] = endpoint.scheme
        if settings.aws_access_key_id or settings.aws_secret_access_key:
            options["access_key"] = settings.aws_access_key_id
            options["secret_key"] = settings.aws_secret_access_key
            options["session_token"] = settings.aws_session_token
        self.endpoint = settings.s3_endpoint
        self.arrow_fs = pafs.S3FileSystem(**options)
        self._skew: tuple[float, float] | None = None

    def uri(self, rel: str) -> str:
        return f"s3://{self.base}/{rel}" if rel else f"s3://{self.base}"

    def arrow_path(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def check(self, create: bool = False) -> None:
        """One listing, so that a wrong endpoint, credentials or bucket fail at start
        (a bucket is never created: its settings are the operator's)."""
        where = self.endpoint or "AWS"
        try:
            info = self.arrow_fs.get_file_info(self.bucket)
        except OSError as exc:
            raise LakeStoreError(_explain(str(exc), self.root, where)) from None
        if info.type == pafs.FileType.NotFound:
            raise LakeStoreError(f"PULSE_LAKE: the bucket {self.bucket!r} does not exist at "
                                 f"{where}; create it or fix PULSE_LAKE")
        try:
            self.arrow_fs.get_file_info(pafs.FileSelector(self.base, allow_not_found=True))
        except OSError as exc:
            raise LakeStoreError(_explain(str(exc), self.root, where)) from None

    def put_with(self, rel: str, write: Callable[[IO[bytes]], object]) -> int:
        """The whole file is made in memory first, so nothing of ours runs while it is
        uploaded: pyarrow completes an upload even when Python raised inside the stream
        (arrow issue 40502), and completes it on garbage collection too. A small file is
        then one PUT. A larger one goes multipart to a temporary name and is copied to
        its own (one server-side copy, atomic) only once the upload ended without error,
        so a partial upload never carries a lake name."""
        sink = pa.BufferOutputStream()
        write(sink)  # type: ignore[arg-type]
        data = sink.getvalue()
        path = self.arrow_path(rel)
        if data.size <= SINGLE_PUT_BYTES:
            self._upload(path, data)
            return data.size
        folder, name = path.rsplit("/", 1)
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self._upload(tmp, data)
            if self.arrow_fs.get_file_info(tmp).size != data.size:
                raise OSError(f"the upload of {self.uri(rel)} ended short; it is retried")
            self.arrow_fs.copy_file(tmp, path)
        finally:
            try:
                self.arrow_fs.delete_file(tmp)
            except OSError:
                pass  # `pulse compact` removes stale temp objects
        return data.size

    def _upload(self, path: str, data: pa.Buffer) -> None:
        stream = self.arrow_fs.open_output_stream(path)
        stream.write(data)
        stream.close()

    def get(self, rel: str) -> bytes:
        try:
            with self.arrow_fs.open_input_stream(self.arrow_path(rel)) as fh:
                return bytes(fh.read())
        except OSError as exc:
            if vanished(exc):
                raise FileNotFoundError(self.uri(rel)) from None
            raise

    def _selector(self, rel: str, recursive: bool) -> list[pafs.FileInfo]:
        return self.arrow_fs.get_file_info(pafs.FileSelector(
            self.arrow_path(rel), allow_not_found=True, recursive=recursive))

    def list(self, rel: str) -> list[Entry]:
        return sorted((_entry(i) for i in self._selector(rel, False)
                       if i.type == pafs.FileType.File), key=lambda e: e.name)

    def subfolders(self, rel: str) -> builtins.list[str]:
        return sorted(i.base_name for i in self._selector(rel, False)
                      if i.type == pafs.FileType.Directory)

    def walk(self, rel: str) -> dict[str, builtins.list[Entry]]:
        """One paged listing of everything under `rel` (no request per folder)."""
        out: dict[str, list[Entry]] = {}
        skip = len(self.base) + 1
        for info in self._selector(rel, True):
            if info.type == pafs.FileType.File:
                folder = info.path[skip:].rpartition("/")[0]
                out.setdefault(folder, []).append(_entry(info))
        return {k: sorted(v, key=lambda e: e.name) for k, v in out.items()}

    def delete(self, rel: str) -> None:
        try:
            self.arrow_fs.delete_file(self.arrow_path(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            if not vanished(exc):
                raise

    def now(self) -> float:
        """The store's clock: the local one corrected by the skew seen on a probe object
        (measured once a minute, as the modification time the store gave it; one object,
        rewritten, since deleting it would leave a folder marker behind)."""
        local = time.time()
        if self._skew is None or local - self._skew[0] > 60:
            probe = "_pulse/clock"
            before = time.time()
            self.put(probe, b"")
            after = time.time()
            mtime = self.arrow_fs.get_file_info(self.arrow_path(probe)).mtime
            stamp = mtime.timestamp() if mtime is not None else (before + after) / 2
            self._skew = (after, stamp - (before + after) / 2)
            local = time.time()
        return local + self._skew[1]

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """A lease under `_pulse/<name>.lock/`: one object per contender, and a contender
        that sees anyone else's live lease after writing its own backs off. S3 lists
        what was written before (it is strongly consistent), so of two racing
        contenders at least one sees the other: never two holders (maybe none, and the
        caller says to try again). The holder renews its lease while it runs; a lease
        not renewed for `LOCK_LEASE_SECONDS`, or held by a process of this machine that
        is gone, is stale (its holder was killed)."""
        folder = f"_pulse/{name}.lock"
        mine = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.put(f"{folder}/{mine}", b"")
        try:
            entries = self.list(folder)
            now = next((e.mtime for e in entries if e.name == mine), time.time())
            others = [e for e in entries if e.name != mine and not _stale(e, now)]
            if others:
                yield False
                return
            with _renewing(lambda: self.put(f"{folder}/{mine}", b"")):
                yield True
        finally:
            self.delete(f"{folder}/{mine}")


def _stale(entry: Entry, now: float) -> bool:
    if now - entry.mtime > LOCK_LEASE_SECONDS:
        return True
    host, _, rest = entry.name.rpartition("-")[0].rpartition("-")
    if host == socket.gethostname() and rest.isdigit():
        try:
            os.kill(int(rest), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


@contextmanager
def _renewing(renew: Callable[[], None]) -> Iterator[None]:
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(LOCK_RENEW_SECONDS):
            try:
                renew()
            except OSError:
                continue

    thread = threading.Thread(target=loop, name="lake-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _entry(info: pafs.FileInfo) -> Entry:
    mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
    return Entry(info.base_name, info.size or 0, mtime)


def _explain(error: str, root: str, where: str) -> str:
    """One line saying which variable to fix, from an S3 error."""
    first = error.splitlines()[0] if error else "unknown error"
    if "InvalidAccessKeyId" in error or "SignatureDoesNotMatch" in error or "403" in error:
        return (f"{root}: the store at {where} refused the credentials ({first}); fix "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    if "NoSuchBucket" in error:
        return f"PULSE_LAKE: no such bucket at {where} ({first}); create it or fix PULSE_LAKE"
    return (f"{root}: cannot reach the store at {where} ({first}); check "
            "AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) and that the store runs")
