#!/usr/bin/python3
"""Backups bench (issue 15): compression, verification and upload beside their anchors.

  1. compression throughput of :func:`backup_compress.compress_backup` (zstd level 3, all
     cores, SHA-256, fsync, read back and verified) beside ``zstd -3 -T0`` on the same files
     (goal: at least 0.8x its MB/s);
  2. verification MB/s: ``PRAGMA quick_check`` of the databases, and the zstd frame checksum
     of the compressed copies (informational);
  3. upload throughput of :meth:`offload.Offload.upload` (SHA-256, ChecksumSHA256 on every
     request, HEAD verification) beside a plain boto3 ``upload_file`` of the same files to
     a SeaweedFS server on loopback (goal: at least 0.9x).

Each side runs ROUNDS times, alternating, and the best round counts (the machine is shared).
Data is generated under .cache/bench-backups (same file system as the repository).
Usage: ``.venv/bin/python tests/bench/backups.py [--mb 256] [--rounds 3] [--json FILE]``.
Exit 0 when the goals are met, 1 when one is not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from seaweed import ACCESS_KEY, SECRET_KEY, Seaweed  # noqa: E402

from architect_cleanup import backup_compress, backup_verify, offload  # noqa: E402

MIB = 1 << 20
COMPRESS_GOAL = 0.8
UPLOAD_GOAL = 0.9


def log(text: str) -> None:
    print(text, flush=True)


def make_db(path: Path, mb: int) -> None:
    """A dashboard-like database of about *mb* MiB (text rows, an index)."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("CREATE TABLE tasks(id INTEGER PRIMARY KEY, status TEXT, created TEXT, "
                "payload TEXT)")
    con.execute("CREATE INDEX tasks_status ON tasks(status, created)")
    rows = mb * 1024 * 1024 // 245
    statuses = ("done", "failed", "queued", "running")
    with con:
        con.executemany(
            "INSERT INTO tasks(status, created, payload) VALUES (?, ?, ?)",
            ((statuses[i % 4], f"2026-11-{i % 28 + 1:02d}T{i % 24:02d}:00:00",
              f'{{"task": {i}, "worker": "w{i % 17}", "out": "{os.urandom(60).hex()}"}}')
             for i in range(rows)))
    con.close()


def best(fn: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="total size of the backups (MiB)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    ap.add_argument("--threads", type=int, default=-1,
                    help="zstd worker threads of ours (-1: one per CPU, like -T0; 0: none)")
    args = ap.parse_args()
    work = REPO / ".cache" / "bench-backups"
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    names = [f"architect_2026110{i}_030000.db" for i in range(1, 5)]
    stamp = src / f".generated-{args.mb}"
    if not stamp.exists():
        for p in src.iterdir():
            p.unlink()
        for n in names:
            log(f"== generating {n} (about {args.mb // 4} MiB)")
            make_db(src / n, args.mb // 4)
        stamp.touch()
    total = sum((src / n).stat().st_size for n in names) / MIB
    figures: dict[str, float] = {"data_mib": round(total, 1)}
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)

    # 1. compression
    out = work / "zstd"

    def zstd_cli() -> None:
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        for n in names:
            subprocess.run(["zstd", "-3", "-T0", "-q", "-f", str(src / n), "-o",
                            str(out / (n + ".zst"))], check=True)

    def ours() -> None:
        for n in names:
            (src / (n + ".zst")).unlink(missing_ok=True)
        for n in names:
            backup_compress.compress_backup(sfd, n, level=3, threads=args.threads)

    t_cli = t_ours = float("inf")
    for _ in range(args.rounds):
        t_cli = min(t_cli, best(zstd_cli, 1))
        t_ours = min(t_ours, best(ours, 1))
    figures["zstd_cli_mib_s"] = round(total / t_cli, 1)
    figures["compress_mib_s"] = round(total / t_ours, 1)
    figures["compress_ratio"] = round(t_cli / t_ours, 3)
    zsize = sum((src / (n + ".zst")).stat().st_size for n in names) / MIB

    # 2. verification
    t_q = best(lambda: [backup_verify.verify(sfd, n) for n in names], args.rounds)
    t_z = best(lambda: [backup_verify.verify(sfd, n + ".zst") for n in names], args.rounds)
    figures["quick_check_mib_s"] = round(total / t_q, 1)
    figures["zstd_check_mib_s"] = round(total / t_z, 1)  # of decompressed data

    # 3. upload (the compressed copies, as offload sends them)
    shutil.rmtree(work / "seaweed", ignore_errors=True)
    with Seaweed(str(work / "seaweed")) as sw:
        cred = offload.Credentials(ACCESS_KEY, SECRET_KEY)
        off = offload.Offload(offload.Settings(url="s3://bench-ours/p", credentials=cred,
                                               endpoint=sw.endpoint), hostname="bench")
        client = off.client
        import boto3.s3.transfer as tr

        round_no = [0]

        def plain() -> None:
            round_no[0] += 1
            for n in names:
                client.upload_file(str(src / (n + ".zst")), "bench-plain",
                                   f"r{round_no[0]}/{n}.zst", Config=tr.TransferConfig())

        def ours_up() -> None:
            for n in names:
                off.delete("prod", n + ".zst")
            for n in names:
                up = off.upload(sfd, n + ".zst", "prod")
                assert not up.skipped

        for b in ("bench-ours", "bench-plain"):
            client.create_bucket(Bucket=b)
        t_plain = t_up = float("inf")
        for _ in range(args.rounds):
            t_plain = min(t_plain, best(plain, 1))
            t_up = min(t_up, best(ours_up, 1))
        figures["upload_plain_mib_s"] = round(zsize / t_plain, 1)
        figures["upload_mib_s"] = round(zsize / t_up, 1)
        figures["upload_ratio"] = round(t_plain / t_up, 3)
    os.close(sfd)

    ok_c = figures["compress_ratio"] >= COMPRESS_GOAL
    ok_u = figures["upload_ratio"] >= UPLOAD_GOAL
    log(f"\nbackups bench on {total:.0f} MiB in {len(names)} databases "
        f"({zsize:.0f} MiB compressed), best of {args.rounds}")
    log(f"  compression  ours (threads={args.threads}) {figures['compress_mib_s']:8.1f} MiB/s   "
        f"zstd -3 -T0 "
        f"{figures['zstd_cli_mib_s']:8.1f} MiB/s   ratio {figures['compress_ratio']:.2f} "
        f"(goal >= {COMPRESS_GOAL})  {'ok' if ok_c else 'MISSED'}")
    log(f"  verification quick_check {figures['quick_check_mib_s']:8.1f} MiB/s   zstd frame "
        f"checksum {figures['zstd_check_mib_s']:8.1f} MiB/s (of original data)")
    log(f"  upload       ours {figures['upload_mib_s']:8.1f} MiB/s   boto3 upload_file "
        f"{figures['upload_plain_mib_s']:8.1f} MiB/s   ratio {figures['upload_ratio']:.2f} "
        f"(goal >= {UPLOAD_GOAL})  {'ok' if ok_u else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0 if ok_c and ok_u else 1


if __name__ == "__main__":
    sys.exit(main())
