"""``architect-cleanup backups list|restore``: what the backups target sees, and getting one back.

``list`` runs the backups target as a dry run (nothing changes; verification results are
cached as in a run) and prints every backup with its state (good / corrupt / unverified),
whether it is compressed, whether a verified copy is in the bucket, and what the next real run
would do with it and why. ``--remote`` also asks the bucket (one HEAD per object).

``restore NAME`` fetches a backup from its directory or, when it is not there, from the
bucket (SHA-256 checked against the one recorded at upload), decompresses it, runs
``PRAGMA quick_check``, and only then moves it with its side files into ``--to`` (default:
the backup directory), never over an existing file and never onto a live database.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from architect_cleanup import backup_compress as bc
from architect_cleanup.backup_offload import make_offload
from architect_cleanup.backup_verify import State, verify
from architect_cleanup.config import Config
from architect_cleanup.fs import display, libc
from architect_cleanup.offload import Offload, OffloadError
from architect_cleanup.retention import format_size
from architect_cleanup.stats import TargetResult
from architect_cleanup.targets.backups import Backups, backup_dirs
from architect_cleanup.targets.base import RunContext

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RESTORE_TMP = ".architect-cleanup-restore."
RENAME_NOREPLACE = 1


def add_parser(sub: Any) -> list[argparse.ArgumentParser]:
    """The ``backups`` command and its two subcommands; returned for the help's epilog."""
    bk = sub.add_parser("backups", help="list and restore database backups",
                        description="list and restore database backups")
    bsub = bk.add_subparsers(dest="backups_command", metavar="list|restore", required=True)
    ls = bsub.add_parser("list", help="every backup with its state and what a run would do",
                         description="every backup with its state (good, corrupt, unverified), "
                                     "compression, upload, and what a run would do and why")
    ls.add_argument("--env", metavar="E", help="only this environment (or \"shared\")")
    ls.add_argument("--remote", action="store_true",
                    help="also ask the bucket (and list copies no longer on disk)")
    ls.add_argument("--json", action="store_true")
    rs = bsub.add_parser("restore", help="fetch, verify, decompress and check one backup",
                         description="fetch a backup (from disk or the bucket), verify its "
                                     "SHA-256, decompress, quick_check, and write it with its "
                                     "side files under --to")
    rs.add_argument("name", metavar="NAME", help="the backup's file name (with or without .zst)")
    rs.add_argument("--to", metavar="DIR",
                    help="where to write it (default: its backup directory)")
    rs.add_argument("--env", metavar="E", help="the environment to look in (default: all)")
    return [ls, rs]


def cmd_backups(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    if args.backups_command == "list":
        return cmd_list(args, cfg, out)
    return cmd_restore(args, cfg, out)


def _labels(cfg: Config) -> list[str]:
    return [label for label, _, _ in backup_dirs(cfg)]


def _error(text: str) -> None:
    print(f"architect-cleanup: {display(text)}", file=sys.stderr)


# --- list ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The target's per-item INFO lines are what the listing shows: keep them off stderr."""
    lg = logging.getLogger("architect_cleanup.targets.backups")
    old = lg.level
    lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        lg.setLevel(old)


def inventory(cfg: Config, *, remote: bool = False) -> tuple[list[dict[str, Any]], TargetResult]:
    """The backups target's rows from a dry run (see the module doc)."""
    target = Backups()
    target.remote = remote
    ctx = RunContext(config=cfg, now=datetime.now(UTC), dry_run=True, source="cli")
    result = TargetResult("backups")
    try:
        with _quiet():
            target.run(ctx, result)
    finally:
        ctx.close()
    return [dict(r) for r in target.inventory], result


def cmd_list(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    if args.env is not None and args.env not in _labels(cfg):
        _error(f"--env {args.env}: not a backup directory (choose from "
               f"{', '.join(_labels(cfg))})")
        return EXIT_USAGE
    if args.remote and not cfg.backups.offload.enabled:
        _error("--remote: no [backups.offload] url is configured")
        return EXIT_USAGE
    rows, result = inventory(cfg, remote=args.remote)
    problems = list(result.errors) + ([result.message] if result.failed else [])
    if args.remote:
        problems += _add_remote(cfg, rows, args.env)
    if args.env is not None:
        rows = [r for r in rows if r["env"] == args.env]
    rows.sort(key=lambda r: (str(r["env"]), -(r.get("mtime") or 0), str(r["name"])))
    if args.json:
        print(json.dumps({"backups": rows, "warnings": [str(p["warning"]) for p in
                                                         result.detail.values()
                                                         if p.get("warning")],
                          "problems": problems}, indent=2), file=out)
        return EXIT_FAILED if problems else EXIT_OK
    wide = max([len(display(str(r["name"]))) + 2 for r in rows] + [40])
    print(f"{'ENV':<8}{'BACKUP':<{wide}}{'STATE':<11}{'SIZE':>10}  {'ZST':<4}{'BUCKET':<9}"
          "VERDICT", file=out)
    for r in rows:
        where = r.get("where", "disk")
        size = format_size(int(r["size"])) if r.get("size") is not None else "?"
        bucket = ("yes" if r.get("uploaded") else "-") if where == "disk" else "only"
        if r.get("remote_verified") is False:
            bucket = "BAD"
        print(f"{display(str(r['env'])):<8}{display(str(r['name'])):<{wide}}"
              f"{r.get('state', '-')!s:<11}{size:>10}  "
              f"{'yes' if r.get('compressed') else '-':<4}{bucket:<9}"
              f"{r['verdict']}: {display(str(r['reason']))}", file=out)
        if r.get("state") == "corrupt":
            print(f"{'':<8}  {display(str(r['detail']))}", file=out)
    for p in result.detail.values():
        if p.get("warning"):
            print(f"warning: {display(str(p['warning']))}", file=out)
    for problem in problems:
        print(f"problem: {display(problem)}", file=out)
    return EXIT_FAILED if problems else EXIT_OK


def _add_remote(cfg: Config, rows: list[dict[str, Any]], env: str | None) -> list[str]:
    """Mark each local row with what the bucket holds; add rows for copies only there."""
    try:
        client = make_offload(cfg.backups.offload)
    except OffloadError as exc:
        return [str(exc)]
    problems: list[str] = []
    for label in _labels(cfg):
        if env is not None and label != env:
            continue
        try:
            objects = {o.name: o for o in client.list(label, metadata=True)}
        except OffloadError as exc:
            problems.append(str(exc))
            continue
        local = {str(r["name"]) for r in rows if r["env"] == label and not r.get("remote")}
        for r in rows:
            if r["env"] != label or r.get("remote"):
                continue
            o = objects.get(str(r["name"]))
            r["remote_key"] = o.key if o is not None else None
            if o is not None and r.get("uploaded_sha256"):
                r["remote_verified"] = o.sha256 == r["uploaded_sha256"]
        planned = {str(r["name"]): r for r in rows if r["env"] == label and r.get("remote")}
        for r in planned.values():
            rows.remove(r)
        for name, o in objects.items():
            if name in local or bc.sibling_of(name) is not None:
                continue
            plan = planned.get(name)
            rows.append({"env": label, "name": name, "backup": bc.original_name(name),
                         "where": "bucket", "key": o.key, "size": o.size,
                         "mtime": (o.mtime_ns / 1e9) if o.mtime_ns else o.last_modified,
                         "state": "uploaded" if o.sha256 else "unverified",
                         "compressed": bc.is_compressed(name), "uploaded": o.key,
                         "verdict": plan["verdict"] if plan else "keep",
                         "reason": plan["reason"] if plan else
                         ("kept by the bucket's policy" if cfg.backups.offload.policy_for(label)
                          else "no [backups.offload.policy]: remote copies are kept")})
    return problems


# --- restore ---------------------------------------------------------------------------------


class RestoreError(Exception):
    """The restore did not happen; nothing was written."""


@dataclass
class _Source:
    label: str
    directory: str | None  # the backup directory (absolute), None when it does not exist
    names: list[str]  # on disk: the backup's files (main last); remote: object names
    remote: Offload | None = None


def _live_databases(cfg: Config) -> set[str]:
    out = set()
    for tmpl in cfg.database.paths:
        for _, rel in cfg.expand_env(tmpl):
            out.add(os.path.realpath(cfg.resolve(rel)))
    return out


def _find(cfg: Config, base: str, env: str | None) -> _Source:
    dirs = [(label, cfg.resolve(rel)) for label, rel, _ in backup_dirs(cfg)
            if env is None or label == env]
    for label, directory in dirs:
        for main in (base, bc.compressed_name(base)):
            if os.path.isfile(os.path.join(directory, main)):
                sides = [main.replace(base, base + s, 1) if not bc.is_compressed(main)
                         else bc.compressed_name(base + s) for s in bc.DATA_SIDES]
                names = [n for n in sides if os.path.isfile(os.path.join(directory, n))]
                return _Source(label, directory, [*names, main])
    if not cfg.backups.offload.enabled:
        raise RestoreError(f"{base}: not found in {', '.join(d for _, d in dirs)} (and no "
                           "[backups.offload] to look in)")
    try:
        client = make_offload(cfg.backups.offload)
        for label, directory in dirs:
            for main in (bc.compressed_name(base), base):
                if client.find(label, main) is None:
                    continue
                zst = bc.is_compressed(main)
                sides = [bc.compressed_name(base + s) if zst else base + s
                         for s in bc.DATA_SIDES]
                names = [n for n in sides if client.find(label, n) is not None]
                return _Source(label, directory if os.path.isdir(directory) else None,
                               [*names, main], client)
    except OffloadError as exc:
        raise RestoreError(str(exc)) from None
    raise RestoreError(f"{base}: not found on disk nor in {cfg.backups.offload.url}")


def restore(cfg: Config, name: str, *, to: str | None = None, env: str | None = None
            ) -> tuple[str, str]:
    """Restore backup *name*; (the path written, how it was checked). Raises RestoreError."""
    base = bc.original_name(os.path.basename(name))
    if not base or base != os.path.basename(name).removesuffix(bc.SUFFIX):
        raise RestoreError(f"{name!r}: give the backup's file name")
    src = _find(cfg, base, env)
    dest = _destination(cfg, base, to if to is not None else src.directory)
    work = tempfile.mkdtemp(prefix=RESTORE_TMP, dir=dest)
    try:
        wfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            how = _fetch(src, wfd)
            check = verify(wfd, base, check="quick", scratch=work)
            if check.state is State.CORRUPT:
                raise RestoreError(f"{base}: restored content fails its check "
                                   f"({check.detail}); nothing written")
            how.append(check.detail)
            _install(wfd, dest, base)
        finally:
            os.close(wfd)
    except OSError as exc:
        raise RestoreError(f"{base}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return os.path.join(dest, base), "; ".join(how)


def _destination(cfg: Config, base: str, dest: str | None) -> str:
    """The directory to restore *base* into (absolute): one that exists, where none of the
    backup's names is taken and which is not where a live database of the dashboard is."""
    if dest is None:
        raise RestoreError(f"{base}: its backup directory does not exist; give --to DIR")
    dest = os.path.abspath(dest)
    if not os.path.isdir(dest):
        raise RestoreError(f"--to {dest}: not a directory")
    live = _live_databases(cfg)
    for suffix in ("", *bc.DATA_SIDES, "-shm"):
        target = os.path.join(dest, base + suffix)
        if os.path.realpath(target) in live or os.path.realpath(os.path.join(dest, base)) in live:
            raise RestoreError(f"{target}: that is a live database of the dashboard; refusing "
                               "(restore elsewhere with --to, then swap it in with the "
                               "dashboard stopped)")
        if os.path.lexists(target):
            raise RestoreError(f"{target}: already exists; not overwritten (use --to DIR)")
    return dest


def _install(wfd: int, dest: str, base: str) -> None:
    """Move the checked files from the work directory into *dest*, the main file last
    (never the ``-shm``, never over a file)."""
    dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        produced = sorted(os.listdir(wfd), key=lambda n: n == base)
        for n in produced:
            if n.endswith("-shm") or n.startswith("."):
                continue
            _move(wfd, dfd, n)
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _move(src_fd: int, dest_fd: int, name: str) -> None:
    """Rename *name* from the work directory into the destination, never over a file."""
    if libc().renameat2(src_fd, os.fsencode(name), dest_fd, os.fsencode(name),
                        RENAME_NOREPLACE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), name)


def _fetch(src: _Source, wfd: int) -> list[str]:
    """The backup's files, decompressed, in the work directory *wfd*; how each was checked."""
    if src.remote is None:
        return _fetch_from_disk(src, wfd)
    how = _download(src, src.remote, wfd)
    for n in src.names:
        if bc.is_compressed(n):
            try:
                bc.decompress_to(wfd, n, wfd, bc.original_name(n))
            except bc.CompressError as exc:
                raise RestoreError(str(exc)) from None
            os.unlink(n, dir_fd=wfd)
    return how


def _download(src: _Source, remote: Offload, wfd: int) -> list[str]:
    """The backup's objects, as they are in the bucket (SHA-256 checked), into *wfd*."""
    how: list[str] = []
    for n in src.names:
        there = remote.download(src.label, n, wfd, n)
        how.append(f"{there.key}: SHA-256 {there.sha256[:12] if there.sha256 else '?'} "
                   "verified")
    return how


def _fetch_from_disk(src: _Source, wfd: int) -> list[str]:
    """The backup's files from its directory into *wfd*: decompressed, or copied."""
    how: list[str] = []
    assert src.directory is not None
    sfd = os.open(src.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for n in src.names:
            if bc.is_compressed(n):
                bc.decompress_to(sfd, n, wfd, bc.original_name(n))
                how.append(f"{n}: zstd frame checksum verified")
            else:
                digest = _copy(sfd, n, wfd)
                how.append(f"{n}: copied (SHA-256 {digest[:12]})")
    finally:
        os.close(sfd)
    return how


def _copy(sfd: int, name: str, wfd: int) -> str:
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
    try:
        st = os.fstat(fd)
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                      dir_fd=wfd)
        try:
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view):]
            os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.fsync(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)
    return h.hexdigest()


def cmd_restore(args: argparse.Namespace, cfg: Config, out: TextIO) -> int:
    try:
        path, how = restore(cfg, args.name, to=args.to, env=args.env)
    except (RestoreError, bc.CompressError, OffloadError) as exc:
        _error(f"backups restore: {exc}")
        return EXIT_FAILED
    print(f"restored {display(path)} ({display(how)})", file=out)
    return EXIT_OK
