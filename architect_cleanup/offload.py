"""Copies of backups in an S3-compatible bucket, each one verified before anyone may rely on it.

An object's key is ``PREFIX/{hostname}/{env}/{file name}`` for ``url = "s3://BUCKET/PREFIX"``.
Every object carries, in its metadata, the SHA-256 of the whole file (``x-amz-meta-sha256``)
and the file's mtime (``x-amz-meta-mtime``, seconds with nanoseconds); multipart uploads also
record their part size (``x-amz-meta-part-size``).

**Upload and verification.** A file up to one part is sent with one ``PutObject``, larger ones
as a multipart upload; every request carries its ``ChecksumSHA256``, so the service refuses a
body that arrives different (``BadDigest``). Afterwards ``HeadObject`` (``ChecksumMode=ENABLED``)
must show the same size, our SHA-256 in the metadata, and the checksum the service computed
and stored: the SHA-256 of the object for a single PUT, or for a multipart upload the SHA-256
of the parts' SHA-256 digests followed by ``-N`` (S3's composite checksum; a multipart ETag is
not a checksum of anything we can compute, so ETags are ignored). A service that stores no
checksum (some S3-compatible servers drop it) gets the object read back whole and hashed
instead: that costs the download once, but nothing counts as uploaded on trust.
An object already at the key with the same size and SHA-256 is verified the same way and not
sent again; one with a *different* SHA-256 is never replaced (the message says so).

**Stopping and crashes.** *should_stop* is asked before each part and each file; a stop aborts
the multipart upload and raises :class:`Stopped`. A crash leaves at most an unfinished
multipart upload, invisible as an object; :meth:`Offload.abort_stale_uploads` removes those
under our key prefix (call it under the run lock: then none of them is another run's).

**Credentials** come from a file in the AWS shared-credentials format, read at the moment of
use: ``$CREDENTIALS_DIRECTORY/`` :data:`CREDENTIAL_NAME` when the unit passes it with
``LoadCredential=``, else the configured path. It must be a regular file owned by root or by
the user running us, without any permission for group or others; the secret is never logged.

boto3 and botocore come from Debian (``python3-boto3``); without them this module imports, and
:func:`require_boto3` says which package is missing. botocore ≥ 1.36 adds CRC checksums to
every request by default, which some S3-compatible services refuse: where the option exists,
checksums are sent only when we ask (we always ask, with SHA-256).
"""

from __future__ import annotations

import base64
import binascii
import configparser
import contextlib
import hashlib
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from architect_cleanup.backup_compress import rename_noreplace
from architect_cleanup.fs import display

log = logging.getLogger(__name__)

#: The credential id the unit uses: ``LoadCredential=offload-s3:/etc/architect-cleanup/s3``.
CREDENTIAL_NAME = "offload-s3"
MIB = 1 << 20
DEFAULT_PART_SIZE = 16 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum (every part but the last)
MAX_PARTS = 10_000
META_SHA256, META_MTIME, META_PART_SIZE = "sha256", "mtime", "part-size"
DL_TMP_PREFIX = ".architect-cleanup-download."
CHUNK = 1 << 20

#: (bytes done, bytes in all) after each part or file; during a multipart upload it is called
#: from the upload's worker threads, one call at a time
Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


class OffloadError(Exception):
    """An offload step failed; the message names the object and the reason in one line."""


class Stopped(OffloadError):
    """A stop was requested between two parts or two files; nothing half-done remains."""


def require_boto3() -> Any:
    """The boto3 module, or an OffloadError naming the Debian package to install."""
    try:
        import boto3  # noqa: PLC0415 -- optional: a Recommends of the package
    except ImportError:
        raise OffloadError("offload needs boto3: install the Debian package python3-boto3"
                           ) from None
    return boto3


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """``s3://BUCKET/PREFIX``: the bucket and the key prefix (no slashes at either end)."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_url(url: str) -> Location:
    """Parse ``s3://BUCKET[/PREFIX]``; ValueError with a one-line reason otherwise."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3://BUCKET/PREFIX URL")
    bucket, _, prefix = url[5:].partition("/")
    if not (3 <= len(bucket) <= 63) or not all(c.isalnum() or c in ".-" for c in bucket) \
            or bucket != bucket.lower() or not bucket[0].isalnum():
        raise ValueError(f"{url!r}: {bucket!r} is not a bucket name (3-63 lower-case letters, "
                         "digits, '.' and '-')")
    prefix = prefix.strip("/")
    parts = prefix.split("/") if prefix else []
    if any(p in ("", ".", "..") for p in parts) or any(not p.isprintable() for p in parts):
        raise ValueError(f"{url!r}: the prefix has an empty, '.', '..' or unprintable part")
    return Location(bucket, prefix)


@dataclass(frozen=True)
class Credentials:
    """An access key; the secret never appears in a repr or a log."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def credentials_path(configured: str, environ: Mapping[str, str] | None = None) -> str:
    """Where the credentials are read: the unit's ``LoadCredential=`` copy when there is one,
    else the configured path."""
    environ = os.environ if environ is None else environ
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        candidate = os.path.join(cred_dir, CREDENTIAL_NAME)
        if os.path.lexists(candidate):
            return candidate
    return configured


def load_credentials(configured: str, *, profile: str = "default",
                     environ: Mapping[str, str] | None = None) -> Credentials:
    """Read an AWS shared-credentials file (see :func:`credentials_path`), refusing one that
    is not a regular file, not owned by root or by us, or open to group or others."""
    path = credentials_path(configured, environ)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise OffloadError(f"credentials {display(path)}: cannot open: {exc.strerror}"
                           ) from None
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OffloadError(f"credentials {display(path)}: not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise OffloadError(f"credentials {display(path)}: owned by uid {st.st_uid}, not by "
                               "root; refused")
        if st.st_mode & 0o077:
            raise OffloadError(f"credentials {display(path)}: mode "
                               f"{stat.S_IMODE(st.st_mode):04o} lets group or others read "
                               "it; refused (chmod 600)")
        text = fh.read(1 << 16)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise OffloadError(f"credentials {display(path)}: not in the AWS credentials format "
                           f"({first})") from None
    if not parser.has_section(profile):
        raise OffloadError(f"credentials {display(path)}: no [{profile}] section")
    sec = parser[profile]
    key_id = sec.get("aws_access_key_id", "").strip()
    secret = sec.get("aws_secret_access_key", "").strip()
    if not key_id or not secret:
        raise OffloadError(f"credentials {display(path)}: [{profile}] needs "
                           "aws_access_key_id and aws_secret_access_key")
    token = sec.get("aws_session_token", "").strip() or None
    return Credentials(key_id, secret, token)


@dataclass(frozen=True)
class Settings:
    """What an :class:`Offload` needs (``[backups.offload]`` maps onto it).

    *bandwidth* is a limit in bytes per second, kept on average at part granularity (None: no
    limit); *part_size* the multipart part size (and the largest single PUT); *concurrency*
    how many parts are in flight at once."""

    url: str
    credentials: Credentials
    endpoint: str | None = None
    region: str | None = None
    bandwidth: int | None = None
    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = 4
    max_attempts: int = 3
    connect_timeout: float = 10.0
    read_timeout: float = 60.0


def make_client(settings: Settings) -> Any:
    """A boto3 S3 client for *settings*: path-style addressing for a custom endpoint,
    standard retries, checksums only when asked (botocore ≥ 1.36)."""
    boto3 = require_boto3()
    from botocore.config import Config  # noqa: PLC0415

    opts: dict[str, Any] = {
        "signature_version": "s3v4",
        "retries": {"max_attempts": settings.max_attempts, "mode": "standard"},
        "connect_timeout": settings.connect_timeout,
        "read_timeout": settings.read_timeout,
        "max_pool_connections": max(10, settings.concurrency + 2),
        "s3": {"addressing_style": "path" if settings.endpoint else "auto"},
    }
    if "request_checksum_calculation" in Config.OPTION_DEFAULTS:
        opts["request_checksum_calculation"] = "when_required"
        opts["response_checksum_validation"] = "when_required"
    cred = settings.credentials
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.endpoint, region_name=settings.region or "us-east-1",
        aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
        aws_session_token=cred.session_token, config=Config(**opts))


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object under our prefix. *sha256* and *mtime* come from its metadata (None when
    listed without it, or when it was not put there by us)."""

    key: str
    name: str
    size: int
    last_modified: float
    sha256: str | None = None
    mtime_ns: int | None = None  #: the local file's mtime when it was uploaded
    checksum: str | None = None  #: the service's ChecksumSHA256, when it keeps one


@dataclass(frozen=True, slots=True)
class Uploaded:
    """A verified remote copy. *skipped*: it was there already (same SHA-256); *verified_by*:
    "checksum" (the service's stored checksum matched ours) or "re-read" (read back whole)."""

    key: str
    size: int
    sha256: str
    skipped: bool
    verified_by: str


@dataclass(frozen=True, slots=True)
class Digests:
    """A local file's SHA-256, whole and per part of *part_size*."""

    size: int
    sha256: bytes
    part_size: int
    parts: tuple[bytes, ...]

    @property
    def hex(self) -> str:
        return self.sha256.hex()

    def expected_checksum(self) -> str:
        """What the service stores as ChecksumSHA256 after our upload of this file."""
        if len(self.parts) <= 1:
            return _b64(self.sha256)
        return f"{_b64(hashlib.sha256(b''.join(self.parts)).digest())}-{len(self.parts)}"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def part_size_for(size: int, wanted: int) -> int:
    """A part size of at least *wanted* (and S3's 5 MiB) that needs at most 10,000 parts."""
    part = max(wanted, MIN_PART_SIZE)
    while size > part * MAX_PARTS:
        part *= 2
    return part


def digests(fd: int, part_size: int, should_stop: ShouldStop | None = None) -> Digests:
    """Hash an open file whole and in parts (one read of it)."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    off = 0
    size = os.fstat(fd).st_size
    while off < size or not parts:
        if should_stop is not None and should_stop():
            raise Stopped("stop requested")
        part = hashlib.sha256()
        end = min(off + part_size, size)
        while off < end:
            data = os.pread(fd, min(CHUNK * 8, end - off), off)
            if not data:
                raise OffloadError("file shrank while it was being read")
            whole.update(data)
            part.update(data)
            off += len(data)
        parts.append(part.digest())
        if size == 0:
            break
    return Digests(size, whole.digest(), part_size, tuple(parts))


class _Throttle:
    """At most *rate* bytes per second on average: wait before sending more."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0
        self.lock = threading.Lock()

    def take(self, n: int, should_stop: ShouldStop | None) -> None:
        if not self.rate:
            return
        with self.lock:
            self.sent += n
            due = self.start + (self.sent - n) / self.rate
        while (delay := due - time.monotonic()) > 0:
            if should_stop is not None and should_stop():
                raise Stopped("stop requested")
            time.sleep(min(delay, 0.5))


# --- the adapter -----------------------------------------------------------------------------


class _PartSender:
    """Sends one part of a multipart upload (called from the upload's worker threads): read
    again from the file and checked against the part's SHA-256 taken before, so a file that
    changed during its upload never completes; reports the bytes done to *progress*."""

    def __init__(self, offload: Offload, fd: int, key: str, upload_id: str, dig: Digests,
                 progress: Progress | None) -> None:
        self.offload = offload
        self.fd = fd
        self.key = key
        self.upload_id = upload_id
        self.dig = dig
        self.progress = progress
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, number: int, off: int, digest: bytes) -> dict[str, Any]:
        dig, key = self.dig, self.key
        body = os.pread(self.fd, min(dig.part_size, dig.size - off), off)
        if hashlib.sha256(body).digest() != digest:
            raise OffloadError(f"{key}: the file changed during its upload")
        with self.offload._calls(f"uploading {key} part {number}"):
            r = self.offload.client.upload_part(
                Bucket=self.offload.location.bucket, Key=key, UploadId=self.upload_id,
                PartNumber=number, Body=body, ChecksumSHA256=_b64(digest))
        with self._lock:
            self.done += len(body)
            if self.progress is not None:
                self.progress(self.done, dig.size)
        return {"PartNumber": number, "ETag": r["ETag"], "ChecksumSHA256": _b64(digest)}


class Offload:
    """One bucket location, one host: upload, verify, list, delete and download backups."""

    def __init__(self, settings: Settings, *, hostname: str | None = None,
                 client: Any | None = None) -> None:
        self.settings = settings
        self.location = parse_url(settings.url)
        self.hostname = hostname or socket.gethostname()
        if not _plain_name(self.hostname):
            raise OffloadError(f"host name {self.hostname!r} cannot be part of an object key")
        self.client = client if client is not None else make_client(settings)
        self._throttle = _Throttle(settings.bandwidth)
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    # keys

    def env_prefix(self, env: str) -> str:
        if not _plain_name(env):
            raise OffloadError(f"environment {env!r} cannot be part of an object key")
        parts = [p for p in (self.location.prefix, self.hostname, env) if p]
        return "/".join(parts) + "/"

    def key(self, env: str, name: str) -> str:
        """``PREFIX/{hostname}/{env}/{name}``."""
        if not _plain_name(name):
            raise OffloadError(f"{name!r} cannot be part of an object key")
        return self.env_prefix(env) + name

    # errors

    @contextlib.contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn botocore's exceptions into one-line OffloadErrors naming *what*."""
        try:
            yield
        except self._errors as exc:
            raise OffloadError(f"{what}: {self._explain(exc)}") from None

    def _explain(self, exc: Exception) -> str:
        resp = getattr(exc, "response", None)
        if isinstance(resp, dict):
            err = resp.get("Error", {})
            code = str(err.get("Code", ""))
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code == "404" and "Bucket" in str(exc)):
                return f"bucket {self.location.bucket} does not exist"
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                        "403") or status == 403:
                return (f"access denied by {self._where()} ({code or status}): check the "
                        "credentials and the bucket policy")
            msg = str(err.get("Message", "")) or str(exc)
            return f"{code or status}: {msg}"
        text = str(exc)
        if "Could not connect" in text or "Connect timeout" in text:
            return f"cannot reach {self._where()} ({type(exc).__name__})"
        return text.splitlines()[0] if text else type(exc).__name__

    def _where(self) -> str:
        return self.settings.endpoint or "S3"

    def _is_missing(self, exc: Exception) -> bool:
        resp = getattr(exc, "response", None)
        if not isinstance(resp, dict):
            return False
        code = str(resp.get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    # looking

    def check_bucket(self) -> None:
        """Raise OffloadError when the bucket is missing or not ours to use."""
        with self._calls(f"{self.location}"):
            self.client.head_bucket(Bucket=self.location.bucket)

    def find(self, env: str, name: str) -> RemoteObject | None:
        """The object for backup *name* with its metadata, or None."""
        key = self.key(env, name)
        try:
            h = self.client.head_object(Bucket=self.location.bucket, Key=key,
                                        ChecksumMode="ENABLED")
        except self._errors as exc:
            if self._is_missing(exc):
                with self._calls(f"{self.location}"):
                    self.client.head_bucket(Bucket=self.location.bucket)
                return None
            raise OffloadError(f"{key}: {self._explain(exc)}") from None
        return _from_head(key, name, h)

    def list(self, env: str, *, metadata: bool = False) -> list[RemoteObject]:
        """Every object under ``PREFIX/{hostname}/{env}/``, by name; with *metadata*, one
        HEAD each adds the SHA-256, the original mtime and the stored checksum."""
        prefix = self.env_prefix(env)
        out: list[RemoteObject] = []
        with self._calls(f"listing {self.location}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = str(obj["Key"])
                    name = key[len(prefix):]
                    if not name or "/" in name:
                        continue
                    out.append(RemoteObject(key, name, int(obj["Size"]),
                                            obj["LastModified"].timestamp()))
        if metadata:
            full = []
            for o in out:
                got = self.find(env, o.name)
                if got is not None:
                    full.append(got)
            out = full
        return sorted(out, key=lambda o: o.name)

    # uploading

    def upload(self, dir_fd: int, name: str, env: str, *, should_stop: ShouldStop | None = None,
               progress: Progress | None = None, reread: bool = False) -> Uploaded:
        """Copy file *name* of directory *dir_fd* to its key and verify the copy (see the
        module doc). Returns only when a verified copy exists; raises OffloadError (Stopped)
        otherwise. The local file is never touched. With *reread*, the copy (new or found
        there) is always read back whole, whatever checksum the service stores: that also
        catches an object damaged at rest since an earlier upload."""
        key = self.key(env, name)
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OffloadError(f"{display(name)}: not a regular file")
            part = part_size_for(st.st_size, self.settings.part_size)
            dig = digests(fd, part, should_stop)
            there = self.find(env, name)
            if there is not None:
                if there.sha256 == dig.hex and there.size == dig.size:
                    how = self._verify(key, dig, there, should_stop, reread)
                    if progress is not None:
                        progress(dig.size, dig.size)
                    log.info("offload: %s is already at %s (SHA-256 %s, verified by %s)",
                             display(name), key, dig.hex[:12], how)
                    return Uploaded(key, dig.size, dig.hex, True, how)
                raise OffloadError(
                    f"{key}: an object with another content is already there (SHA-256 "
                    f"{(there.sha256 or 'unknown')[:12]}, ours {dig.hex[:12]}); not replaced")
            meta = {META_SHA256: dig.hex, META_MTIME: _ns_text(st.st_mtime_ns)}
            if len(dig.parts) <= 1:
                self._put(fd, key, dig, meta, should_stop, progress)
            else:
                self._multipart(fd, key, dig, meta, should_stop, progress)
            if not _unchanged(st, os.fstat(fd)):
                raise OffloadError(f"{display(name)}: changed during its upload; the copy "
                                   "is not trusted")
            there = self.find(env, name)
            if there is None:
                raise OffloadError(f"{key}: not there after its upload")
            how = self._verify(key, dig, there, should_stop, reread)
        finally:
            os.close(fd)
        log.info("offload: uploaded %s to %s (%d bytes, verified by %s)", display(name), key,
                 dig.size, how)
        return Uploaded(key, dig.size, dig.hex, False, how)

    def _put(self, fd: int, key: str, dig: Digests, meta: dict[str, str],
             should_stop: ShouldStop | None, progress: Progress | None) -> None:
        if should_stop is not None and should_stop():
            raise Stopped("stop requested")
        body = os.pread(fd, dig.size, 0)
        self._throttle.take(len(body), should_stop)
        with self._calls(f"uploading {key}"):
            self.client.put_object(Bucket=self.location.bucket, Key=key, Body=body,
                                   ChecksumSHA256=_b64(dig.sha256), Metadata=meta)
        if progress is not None:
            progress(dig.size, dig.size)

    def _multipart(self, fd: int, key: str, dig: Digests, meta: dict[str, str],
                   should_stop: ShouldStop | None, progress: Progress | None) -> None:
        bucket = self.location.bucket
        meta = {**meta, META_PART_SIZE: str(dig.part_size)}
        with self._calls(f"uploading {key}"):
            upload_id = self.client.create_multipart_upload(
                Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", Metadata=meta)["UploadId"]
        try:
            parts = self._upload_parts(
                _PartSender(self, fd, key, upload_id, dig, progress), dig, should_stop)
            with self._calls(f"completing the upload of {key}"):
                self.client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    def _upload_parts(self, send: _PartSender, dig: Digests,
                      should_stop: ShouldStop | None) -> Sequence[dict[str, Any]]:
        """Every part through *send*, at most ``concurrency`` at a time, within the bandwidth;
        a failed part or a stop request ends the upload at the next part. The parts' list
        for ``complete_multipart_upload``."""
        workers = max(1, self.settings.concurrency)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="offload") as pool:
            running: list[Future[dict[str, Any]]] = []
            for i, digest in enumerate(dig.parts):
                if should_stop is not None and should_stop():
                    raise Stopped("stop requested")
                off = i * dig.part_size
                self._throttle.take(min(dig.part_size, dig.size - off), should_stop)
                pending = [f for f in running if not f.done()]
                if len(pending) >= workers:
                    wait(pending, return_when=FIRST_COMPLETED)
                for f in running:
                    if f.done():
                        f.result()  # a failed part stops the upload here
                running.append(pool.submit(send, i + 1, off, digest))
            return [f.result() for f in running]

    # verifying

    def _verify(self, key: str, dig: Digests, there: RemoteObject,
                should_stop: ShouldStop | None, reread: bool = False) -> str:
        """Prove the object at *key* is the file of *dig*; "checksum" or "re-read"."""
        if there.size != dig.size:
            raise OffloadError(f"{key}: the service holds {there.size} bytes, the file has "
                               f"{dig.size}")
        if there.sha256 != dig.hex:
            raise OffloadError(f"{key}: its recorded SHA-256 is not the file's")
        stored = there.checksum
        if stored == dig.expected_checksum():
            if not reread:
                return "checksum"
        elif stored:
            composite = "-" in stored  # base64 has no '-': "-N" marks a composite
            if composite == (len(dig.parts) > 1) and (
                    not composite or stored.endswith(f"-{len(dig.parts)}")):
                raise OffloadError(f"{key}: the checksum the service stores ({stored}) is "
                                   "not the file's")
            # a composite of other part sizes (another part_size setting): read it back
        got = self.read_sha256(key, should_stop)
        if got != dig.hex:
            raise OffloadError(f"{key}: read back, its SHA-256 is {got[:12]}, not the file's "
                               f"{dig.hex[:12]}")
        return "re-read"

    def read_sha256(self, key: str, should_stop: ShouldStop | None = None) -> str:
        """Read an object whole and return its SHA-256 (hex)."""
        h = hashlib.sha256()
        for chunk in self._stream(key, should_stop):
            h.update(chunk)
        return h.hexdigest()

    def _stream(self, key: str, should_stop: ShouldStop | None) -> Iterator[bytes]:
        with self._calls(f"reading {key}"):
            body = self.client.get_object(Bucket=self.location.bucket, Key=key)["Body"]
            try:
                while True:
                    if should_stop is not None and should_stop():
                        raise Stopped("stop requested")
                    chunk = body.read(CHUNK)
                    if not chunk:
                        break
                    yield chunk
            finally:
                body.close()

    def verify_remote(self, env: str, name: str, *, should_stop: ShouldStop | None = None
                      ) -> RemoteObject:
        """Read an object back whole and check it against the SHA-256 in its metadata."""
        there = self.find(env, name)
        if there is None:
            raise OffloadError(f"{self.key(env, name)}: not in the bucket")
        if not there.sha256:
            raise OffloadError(f"{there.key}: no SHA-256 recorded; cannot be verified")
        got = self.read_sha256(there.key, should_stop)
        if got != there.sha256:
            raise OffloadError(f"{there.key}: corrupt: its content's SHA-256 is {got[:12]}, "
                               f"recorded {there.sha256[:12]}")
        return there

    # deleting and restoring

    def delete(self, env: str, name: str) -> None:
        """Delete the object of backup *name* (no error when it is already gone)."""
        key = self.key(env, name)
        with self._calls(f"deleting {key}"):
            self.client.delete_object(Bucket=self.location.bucket, Key=key)
        log.info("offload: deleted %s", key)

    def download(self, env: str, name: str, dest_dir_fd: int, dest_name: str, *,
                 should_stop: ShouldStop | None = None, progress: Progress | None = None
                 ) -> RemoteObject:
        """Fetch backup *name* into *dest_name* of *dest_dir_fd* (never over an existing
        file): a temporary file, its SHA-256 compared with the recorded one, the original
        mtime, fsync, rename. A corrupt object leaves nothing behind (OffloadError)."""
        there = self.find(env, name)
        if there is None:
            raise OffloadError(f"{self.key(env, name)}: not in the bucket")
        if not there.sha256:
            raise OffloadError(f"{there.key}: no SHA-256 recorded; cannot be verified")
        _sweep(dest_dir_fd)
        tmp = f"{DL_TMP_PREFIX}{os.urandom(6).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dest_dir_fd)
        try:
            h = hashlib.sha256()
            done = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in self._stream(there.key, should_stop):
                    out.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, there.size)
                out.flush()
                if done != there.size or h.hexdigest() != there.sha256:
                    raise OffloadError(f"{there.key}: corrupt: {done} bytes with SHA-256 "
                                       f"{h.hexdigest()[:12]}, recorded {there.size} bytes "
                                       f"with {there.sha256[:12]}; not restored")
                if there.mtime_ns is not None:
                    os.utime(out.fileno(), ns=(there.mtime_ns, there.mtime_ns))
                os.fsync(out.fileno())
            rename_noreplace(dest_dir_fd, tmp, dest_name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dest_dir_fd)
            raise
        os.fsync(dest_dir_fd)
        return there

    def abort_stale_uploads(self, env: str) -> int:
        """Abort unfinished multipart uploads under our prefix for *env* (left by a crash);
        how many. Call only while holding the run lock."""
        prefix = self.env_prefix(env)
        n = 0
        with self._calls(f"listing unfinished uploads in {self.location}/{prefix}"):
            r = self.client.list_multipart_uploads(Bucket=self.location.bucket, Prefix=prefix)
            for up in r.get("Uploads", ()):
                self.client.abort_multipart_upload(Bucket=self.location.bucket,
                                                   Key=up["Key"], UploadId=up["UploadId"])
                n += 1
                log.info("offload: aborted an unfinished upload of %s", up["Key"])
        return n


def _from_head(key: str, name: str, h: Mapping[str, Any]) -> RemoteObject:
    meta = {str(k).lower(): str(v) for k, v in (h.get("Metadata") or {}).items()}
    sha = meta.get(META_SHA256)
    if sha is not None and (len(sha) != 64 or not _is_hex(sha)):
        sha = None
    mtime = _parse_ns(meta.get(META_MTIME, ""))
    lm = h.get("LastModified")
    return RemoteObject(key, name, int(h.get("ContentLength", 0)),
                        lm.timestamp() if lm is not None else 0.0, sha, mtime,
                        h.get("ChecksumSHA256"))


def _is_hex(text: str) -> bool:
    try:
        binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return False
    return True


def _ns_text(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def _parse_ns(text: str) -> int | None:
    sec, _, frac = text.partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()):
        return None
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _unchanged(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and name.isprintable()


def _sweep(dir_fd: int) -> None:
    with contextlib.suppress(OSError), os.scandir(dir_fd) as it:
        for entry in it:
            if entry.name.startswith(DL_TMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=dir_fd)
