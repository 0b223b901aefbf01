"""The REST API flooded: many clients POST at once, dry and real, while others ask for the
status, under gunicorn as it runs in production (socket-activated, gthread) with one and with
several worker processes. No request may get a 5xx, every answer is 200 or 409, and no two
runs may overlap: an observer in the server's gunicorn configuration records the monotonic
start and end of every run inside the lock (tests/reliability/flood_gunicorn_conf.py)."""

from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import kit
from conftest import needs_root
from kit import FIGURES, Arena

HERE = Path(__file__).resolve().parent
NOW = time.time()


def _site(arena: Arena):  # type: ignore[no-untyped-def]
    from gunicorn_server import Site
    site = Site(arena.base, token=secrets.token_hex(32))
    site.creds.mkdir(mode=0o700)
    (site.creds / "token").write_text(site.token + "\n")
    (site.creds / "token").chmod(0o600)
    return site


@needs_root
@pytest.mark.parametrize("workers", [1, 3])
def test_a_flood_of_concurrent_requests_gets_no_5xx_and_never_two_runs_at_once(
        arena: Arena, workers: int) -> None:
    from gunicorn_server import Server
    w = kit.build_world(arena, NOW, backups=40, logs=100, temp=100, caches=4, tasks=4000,
                        errors=500, prompts=500)
    arena.write_config(environments=["prod", "qa"], backups={"retention": {"prod": 3, "qa": 2}},
                       database={"batch_size": 100})
    site = _site(arena)
    log = arena.base / "runs.log"
    env = site.env(AC_FLOOD_WORKERS=str(workers), AC_FLOOD_LOG=str(log))
    clients, per_client = kit.scale(16, 32), kit.scale(6, 40)
    codes: Counter[int] = Counter()
    replies: list[tuple[int, dict]] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(per_client):
            try:
                if rng.random() < 0.25:
                    r = server.get("/api/system/cleanup/status", token=site.token, timeout=300)
                    doc = r.json()
                else:
                    body = {"dry_run": rng.random() < 0.5}
                    if rng.random() < 0.3:
                        body["log_age_days"] = rng.choice([2, 30, 365])  # keepers: 1 day
                    r = server.post_json(body, timeout=300)
                    doc = r.json()
                with lock:
                    codes[r.status] += 1
                    replies.append((r.status, doc))
            except Exception as exc:  # a reset or a timeout is a failure too
                with lock:
                    failures.append(repr(exc))

    with Server(site, config=str(HERE / "flood_gunicorn_conf.py"), env=env) as server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - t0
        server_log = server.log()
    FIGURES.attack(f"API flood ({workers} worker(s)): requests", sum(codes.values()))
    FIGURES.measure(f"API flood ({workers} worker(s)): answers",
                    ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    FIGURES.measure(f"API flood ({workers} worker(s)): took, s", round(took, 1))
    assert failures == [], failures[:5]
    assert set(codes) <= {200, 409}, (codes, server_log[-3000:])
    assert "Traceback" not in server_log, server_log[-5000:]
    runs = [tuple(int(x) for x in line.split()[:4]) for line in log.read_text().splitlines()]
    ran = sum(1 for code, doc in replies if code == 200 and "stats" in doc)
    assert len(runs) == ran > 0
    spans = sorted((start, end) for _pid, _tid, start, end in runs)
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    FIGURES.race(f"API flood ({workers} worker(s)): runs", ran, ran)
    assert overlaps == []
    for code, doc in replies:
        if code == 409:
            assert doc["success"] is False and "another cleanup is running" in doc["message"]
        elif "stats" in doc:
            assert {"success", "dry_run", "stats", "message"} <= set(doc)
    assert kit.holder_free(arena) and w.missing_keepers() == []
    FIGURES.lost(w.rows_lost())
    assert w.rows_lost() == 0
    assert set(w.integrity().values()) == {"ok"}
