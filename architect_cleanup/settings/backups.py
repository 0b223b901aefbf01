"""``[backups]``: where the backups are, how many each environment keeps (a number or a
policy), and their verification, compression and offload."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import ClassVar

from architect_cleanup.retention import COUNT_RULES, POLICY_KEYS, Policy
from architect_cleanup.settings.problems import Problem
from architect_cleanup.settings.readers import (
    Reader,
    absolute,
    boolean,
    choice,
    duration,
    file_patterns,
    http_url,
    kept,
    not_configured,
    optional,
    per_env,
    refuse,
    relative,
    text,
    whole,
)
from architect_cleanup.settings.tables import Scope, Table, key, nested, parse_section, section
from architect_cleanup.settings.units import parse_free_space, parse_size, parse_span

#: The built-in ``backups.retention`` numbers (the shipped file's).
DEFAULT_RETENTION = {"prod": 10, "qa": 5, "dev": 5, "test": 3, "default": 5}
#: Where the unit's LoadCredential= reads the offload credentials from (the documented path).
DEFAULT_CREDENTIALS = "/etc/architect-cleanup/credentials/s3"

#: ``[backups.policy.<env>]``: how each key is read (the defaults are Policy's).
_POLICY: dict[str, Reader] = {
    **{name: whole(0) for name, _ in COUNT_RULES},
    "keep_within": duration(example="7d", parse=parse_span),
    "max_total_size": parse_size,
    "min_free_space": parse_free_space,
    "keep_min": kept("would let min_free_space delete every backup"),
}


def _parse_policy(t: Table) -> Policy | None:
    """One ``[backups.policy.<env>]`` table; None (with the problems recorded) when invalid."""
    before = len(t.problems)
    values = t.read(_POLICY)
    if len(t.problems) > before:
        return None
    policy = Policy(**values)
    if not policy.has_rules:
        t.error("", "keeps nothing but the newest backup: set at least one of "
                    + ", ".join(k for k in POLICY_KEYS[:7])
                    + " (to keep as many as fit in max_total_size, use a large keep_last)")
        return None
    return policy


def _policies(t: Table, name: str, scope: Scope) -> Mapping[str, Policy]:
    """``[backups.policy]`` (or ``[backups.offload.policy]``): a policy per configured
    environment or ``default``."""
    pt = t.table(name)
    policies: dict[str, Policy] = {}
    for env, raw in pt.raw.items():
        pt.seen.add(env)
        if env != "default" and env not in scope.environments:
            pt.error(env, not_configured(scope.environments))
            continue
        sub = Table(raw, pt.key(env), pt.problems)
        if not isinstance(raw, dict):
            continue
        policy = _parse_policy(sub)
        sub.finish()
        if policy is not None:
            policies[env] = policy
    pt.finish()
    return MappingProxyType(policies)


def _retention(t: Table, name: str, scope: Scope) -> Mapping[str, int]:
    """``[backups.retention]``: the newest N per configured environment or ``default``."""
    rt = t.table(name)
    # [backups.policy.default] stands in for the built-in per-environment numbers: only a
    # backups.retention.<env> written in a file is more specific than it.
    retention = dict(DEFAULT_RETENTION)
    if "default" in scope.read["policy"]:
        retention = {"default": retention["default"]}
    number = kept("would delete every backup")
    refused = refuse(not_configured(scope.environments))
    retention |= rt.read({env: number if env == "default" or env in scope.environments
                          else refused for env in rt.raw})
    rt.finish()
    return MappingProxyType(retention)


def _s3_url(v: str) -> str | None:
    from architect_cleanup.offload import OffloadError, parse_url  # noqa: PLC0415

    try:
        parse_url(v)
    except OffloadError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class VerifyConfig:
    check: str = key(text(choice("quick", "full", "off")), "quick",
                     "quick (PRAGMA quick_check), full (integrity_check) or off")
    remove_corrupt_after: timedelta | None = key(
        duration(), None, "corrupt backups older than this are removed (unset: kept)")


@dataclass(frozen=True)
class CompressConfig:
    after: timedelta | None = key(duration(positive=False), None,
                                  "compress kept backups older than this (unset: never)")
    level: int = key(whole(1, 19), 3, "zstd level (1-19)")


@dataclass(frozen=True)
class OffloadConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("policy", "url")

    url: str = key(text(optional(_s3_url)), "", "s3://BUCKET/PREFIX (\"\": no offload)")
    endpoint: str = key(text(optional(http_url(" (the S3 service's endpoint)"))), "",
                        "the S3-compatible service (\"\": AWS S3)")
    region: str = key(text(), "", "the bucket's region (\"\": us-east-1)")
    credentials: str = key(text(absolute), DEFAULT_CREDENTIALS,
                           "AWS shared-credentials file, root-only (the unit's LoadCredential=)")
    upload: str = key(text(choice("before_delete", "all")), "before_delete",
                      "before_delete: what local retention removes; all: every good backup")
    bandwidth: int | None = key(parse_size, None, "upload limit in bytes per second (\"10M\")")
    policy: Mapping[str, Policy] = nested(_policies, {}, "[backups.offload.policy.<env>]: "
                                          "remote retention (none: remote copies are kept)")

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def policy_for(self, env: str) -> tuple[Policy, str] | None:
        """The remote policy of *env* (or ``default``), None: remote copies are never deleted."""
        for name in (env, "default"):
            if name in self.policy:
                return self.policy[name], f"backups.offload.policy.{name}"
        return None


def _offload(t: Table, name: str, scope: Scope) -> OffloadConfig:
    """``[backups.offload]`` and its remote policies; a configured offload also needs boto3
    and a credentials file that only root can read."""
    ot = t.table(name)
    before = len(ot.problems)
    cfg: OffloadConfig = parse_section(OffloadConfig, ot, scope.environments)
    if cfg.enabled and len(ot.problems) == before:
        problem = offload_problem(cfg)
        if problem is not None:
            ot.problems.append(problem)
    return cfg


def offload_problem(cfg: OffloadConfig, environ: Mapping[str, str] | None = None
                    ) -> Problem | None:
    """What keeps a configured offload from working before any request is made: boto3
    missing, or a credentials file that is missing or readable by others."""
    from architect_cleanup.offload import (  # noqa: PLC0415
        OffloadError,
        credentials_path,
        require_boto3,
    )

    try:
        require_boto3()
    except OffloadError as exc:
        return Problem("backups.offload.url", str(exc))
    path = credentials_path(cfg.credentials, environ)
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        why: str | None = ("no such file (an AWS shared-credentials file, mode 0600, owned "
                            "by root)")
    except OSError:
        return None  # not ours to read here (e.g. `config check` as another user)
    else:
        why = _credentials_refused(st)
    return None if why is None else Problem("backups.offload.credentials", f"{path}: {why}")


def _credentials_refused(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not by root; refused"
    if st.st_mode & 0o077:
        return (f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others read it; refused "
                "(chmod 600)")
    return None


@dataclass(frozen=True)
class BackupsConfig:
    READ_FIRST: ClassVar[tuple[str, ...]] = ("dir", "shared_dir", "policy")

    enabled: bool = key(boolean, True, "apply the retention policies")
    dir: str = key(text(relative, per_env), "data/{env}/backups",
                   "each environment's backup directory, relative to root")
    shared_dir: str = key(text(optional(relative)), "data/backups",
                          "backups of no environment (policy \"default\"); \"\" for none")
    patterns: tuple[str, ...] = key(file_patterns(), (
        "*.db", "*.sqlite", "*.sqlite3", "*.bak", "*.db.gz", "*.sql.gz", "*.db.backup.*",
        "*.db.zst", "*.sqlite.zst", "*.sqlite3.zst", "*.bak.zst"),
        "names of backup files")
    min_age: timedelta = key(duration(positive=False), timedelta(hours=1),
                             "younger backups may still be being written: kept, not counted")
    retention: Mapping[str, int] = nested(_retention, DEFAULT_RETENTION,
                                          "newest N kept per environment (and default)")
    policy: Mapping[str, Policy] = nested(_policies, {},
                                          "[backups.policy.<env>] tables (and default)")
    verify: VerifyConfig = section(VerifyConfig, "[backups.verify]")
    compress: CompressConfig = section(CompressConfig, "[backups.compress]")
    offload: OffloadConfig = nested(_offload, OffloadConfig(), "[backups.offload]")

    def keep_for(self, env: str) -> int:
        """How many backups the policy keeps for *env* (``default`` when not listed)."""
        return self.retention.get(env, self.retention["default"])

    def policy_for(self, env: str) -> tuple[Policy, str]:
        """The policy of *env* and the key it comes from: the first that exists of
        ``backups.policy.<env>``, ``backups.retention.<env>``, ``backups.policy.default``,
        ``backups.retention.default``."""
        if env in self.policy:
            return self.policy[env], f"backups.policy.{env}"
        if env in self.retention:
            return Policy.newest(self.retention[env]), f"backups.retention.{env}"
        if "default" in self.policy:
            return self.policy["default"], "backups.policy.default"
        return Policy.newest(self.retention["default"]), "backups.retention.default"
