"""A booted systemd in a container: start, run commands, stop — and never leave one behind.

The host's PID 1 is not systemd, so ``machinectl`` and ``systemctl -M`` do not work. Instead:

- ``systemd-nspawn -b --volatile=overlay --register=no --keep-unit`` boots the rootfs with a
  tmpfs overlay on top: every container starts from the same pristine tree and nothing it
  writes survives it. ``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1`` gives it a cgroup v2 tree (the
  host mounts a hybrid hierarchy). ``--private-network``: the container has only a loopback
  interface, so ``apt install`` proves the package installs offline from what the rootfs has,
  and the API tier can still listen on 127.0.0.1.
- commands run with ``nsenter -t <container PID 1> -a`` in a clean environment.
- stopping is SIGTERM to the nspawn process we started (nspawn then asks the container's
  systemd for an orderly poweroff), a second SIGTERM if it hangs, and SIGKILL only as the last
  resort after both.

Nothing may outlive the test session: every container is in ``RUNNING`` until stopped;
``stop_all()`` runs from the fixtures' finalizers, from ``atexit`` and (through
KeyboardInterrupt) on SIGTERM/SIGINT/SIGHUP; and nspawn gets ``PR_SET_PDEATHSIG=SIGTERM``, so
even a SIGKILLed pytest takes its containers down with it. nspawn runs in its own session, so a
Ctrl-C on the terminal reaches only pytest, which then stops the containers in order.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "TERM": "dumb",
             "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
NSPAWN_ENV = {**CLEAN_ENV, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1

#: Containers started and not yet stopped, by nspawn PID (what stop_all() stops).
RUNNING: dict[int, Container] = {}
_counter = itertools.count(1)


class ContainerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Bind:
    """A host path shown read-only inside the container."""
    host: Path
    inside: str

    def option(self) -> str:
        return f"--bind-ro={self.host}:{self.inside}"


def _die_with_parent(sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets *sig* when we (the thread that forked it) die."""
    def preexec() -> None:  # runs in the child between fork and exec
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    return preexec


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    return out


def descendants(pid: int) -> list[int]:
    """All live descendants of *pid*, parents before children."""
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop(0)):
            found.append(child)
            todo.append(child)
    return found


def _status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(name + ":"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def processes_in_namespace(ns: str) -> list[int]:
    """Host PIDs of every process whose PID namespace is *ns* (``pid:[inode]``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == ns:
            pids.append(int(entry))
    return pids


class Container:
    """One booted container. Use :meth:`start`, then :meth:`run`; :meth:`stop` always."""

    def __init__(self, rootfs: Path, workdir: Path, binds: Sequence[Bind] = (),
                 name: str | None = None) -> None:
        self.rootfs = rootfs
        self.workdir = workdir
        self.binds = tuple(binds)
        self.name = name or f"systest-{os.getpid()}-{next(_counter)}"
        self.console_log = workdir / f"{self.name}.console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None  # the container's PID 1, as the host sees it
        self.pid_ns: str | None = None
        self.boot_seconds: float | None = None
        self.state: str | None = None  # "running" or "degraded" once booted

    # --- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        return ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.rootfs}",
                f"--machine={self.name}", "--volatile=overlay", "--register=no",
                "--keep-unit", "--private-network", "--link-journal=no",
                "--console=pipe", "--timezone=off", "--resolv-conf=off",
                *(b.option() for b in self.binds)]

    def start(self, timeout: float = BOOT_TIMEOUT) -> Container:
        """Boot and wait until ``systemctl is-system-running --wait`` answers."""
        t0 = time.monotonic()
        with open(self.console_log, "wb") as console:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT, env=NSPAWN_ENV, start_new_session=True,
                preexec_fn=_die_with_parent(signal.SIGTERM))  # noqa: PLW1509 (no threads)
        RUNNING[self.proc.pid] = self
        log.info("started %s: nspawn PID %d", self.name, self.proc.pid)
        try:
            self.leader = self._find_leader(t0 + timeout)
            self.pid_ns = pid_namespace(self.leader)
            self.state = self._wait_ready(t0 + timeout)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - t0
        log.info("%s is %s after %.1fs (PID 1 = host PID %d)", self.name, self.state,
                 self.boot_seconds, self.leader)
        return self

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise ContainerError(f"systemd-nspawn exited with {self.proc.returncode} during "
                                 f"boot:\n{self.console()}")

    def _find_leader(self, deadline: float) -> int:
        """The descendant of nspawn that is PID 1 of its PID namespace and runs systemd."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            self._check_alive()
            for pid in descendants(self.proc.pid):
                nspid = (_status_field(pid, "NSpid") or "").split()
                if len(nspid) > 1 and nspid[-1] == "1" and self._comm(pid) == "systemd":
                    return pid
            time.sleep(0.05)
        raise ContainerError(f"no systemd PID 1 appeared in {self.name}:\n{self.console()}")

    @staticmethod
    def _comm(pid: int) -> str:
        try:
            with open(f"/proc/{pid}/comm") as fh:
                return fh.read().strip()
        except OSError:
            return ""

    def _wait_ready(self, deadline: float) -> str:
        """``systemctl is-system-running --wait``, retried until PID 1's bus is up."""
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            left = max(1.0, deadline - time.monotonic())
            proc = self.run(["systemctl", "is-system-running", "--wait"], check=False,
                            timeout=left)
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return state
            last = f"{state!r} {proc.stderr.strip()}"
            time.sleep(0.1)
        raise ContainerError(f"{self.name} did not finish booting: {last}\n{self.console()}")

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM to nspawn and wait; again SIGTERM, then SIGKILL, only if it hangs.

        Returns nspawn's exit status. Afterwards no process of the container is left."""
        proc = self.proc
        if proc is None:
            return None
        try:
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGTERM, 10.0),
                              (signal.SIGKILL, 10.0)):
                if proc.poll() is not None:
                    break
                if sig == signal.SIGKILL:
                    log.error("%s: nspawn ignored two SIGTERMs; killing it", self.name)
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
            self._reap_namespace()
        finally:
            RUNNING.pop(proc.pid, None)
        log.info("stopped %s: nspawn exit %s", self.name, proc.returncode)
        return proc.returncode

    def _reap_namespace(self) -> None:
        """The PID namespace dies with its PID 1; wait until the kernel has emptied it."""
        if self.pid_ns is None:
            return
        deadline = time.monotonic() + 10
        while (left := processes_in_namespace(self.pid_ns)) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise ContainerError(f"{self.name}: processes {left} outlived the container")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- commands ----------------------------------------------------------------------------

    def run(self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 120.0,
            input: str | None = None, env: Mapping[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        """Run *cmd* inside the container (a string goes through ``/bin/sh -c``).

        nsenter dies with us (SIGKILL): left over, it would sit stopped forever after the
        container's shutdown SIGSTOPs its child, and keep that child's zombie in the
        container's PID namespace, holding up the poweroff for 90 seconds. (A command cut off
        by an interrupt still costs the poweroff systemd-shutdown's 10 s: its orphans may be
        reparented to a subreaper on the host, which the container cannot reap.)"""
        if self.leader is None:
            raise ContainerError(f"{self.name} is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full = ["nsenter", "-t", str(self.leader), "-a", *argv]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                              input=input, env={**CLEAN_ENV, **(env or {})},
                              stdin=None if input is not None else subprocess.DEVNULL,
                              preexec_fn=_die_with_parent(signal.SIGKILL),
                              check=False)
        shown = cmd if isinstance(cmd, str) else shlex.join(argv)
        log.debug("[%s] $ %s -> %d", self.name, shown, proc.returncode)
        if check and proc.returncode != 0:
            raise ContainerError(f"[{self.name}] `{shown}` exited {proc.returncode}\n"
                                 f"--- stdout:\n{proc.stdout[-3000:]}\n"
                                 f"--- stderr:\n{proc.stderr[-3000:]}")
        return proc

    def sh(self, cmd: str, **kw: object) -> str:
        """stdout of *cmd* (checked)."""
        return self.run(cmd, **kw).stdout  # type: ignore[arg-type]

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        q = shlex.quote(path)
        self.run(f"mkdir -p \"$(dirname {q})\" && cat > {q} && chmod {mode:o} {q}", input=text)

    def read_file(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path], check=False).returncode == 0


def leftovers(path: Path) -> list[str]:
    """What still uses *path* (a session directory): processes naming it on their command
    line (an nspawn and its children), host mounts below it, containers not stopped."""
    found = [f"container {c.name} (nspawn PID {pid})" for pid, c in RUNNING.items()]
    needle = str(path).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as fh:
                if needle in fh.read():
                    found.append(f"process {entry}")
    with open("/proc/self/mountinfo") as fh:
        found += [f"mount {line.split()[4]}" for line in fh if str(path) in line.split()[4]]
    return found


def stop_all() -> None:
    """Stop every container still running (finalizers, atexit, signals)."""
    for container in list(RUNNING.values()):
        try:
            container.stop()
        except Exception:  # keep stopping the others
            log.exception("stopping %s failed", container.name)


def _raise_interrupt(signum: int, _frame: object) -> None:
    # Turn SIGTERM/SIGHUP into what Ctrl-C does: pytest unwinds and runs every finalizer.
    signal.signal(signum, signal.SIG_DFL)  # a second signal ends us at once
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
