"""Hypothesis strategies for POST bodies, and an independent oracle of which ones are valid.

The oracle is written from the API's contract (api_schema's module doc), not from its code, so
the property tests compare two readings of the contract.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import strategies as st

ENVIRONMENTS = ["prod", "qa", "dev", "test"]
AGE_KEYS = ["log_age_days", "task_age_days", "error_age_days", "prompt_age_days"]

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=8)


def bodies(targets: list[str]) -> st.SearchStrategy[Any]:
    """Anything JSON, objects of the real keys with near-miss values, and valid objects."""
    near_ints = (st.integers(-3, 5) | st.integers(30, 40) | st.integers(36_495, 36_505)
                 | st.integers(99_995, 100_005)
                 | st.sampled_from([10.0, 1.5, 0.0, -0.0, 1e300, True, False, "10"]))
    retention = near_ints | st.dictionaries(
        st.sampled_from([*ENVIRONMENTS, "default", "staging", ""]), near_ints | json_values,
        max_size=5)
    fields = {
        "dry_run": st.booleans() | st.sampled_from([0, 1, 0.0, "false", "true", None, [], {}]),
        "backup_retention": retention | json_values,
        **{k: near_ints | json_values for k in AGE_KEYS},
        "targets": st.lists(st.sampled_from([*targets, "bogus", ""]), max_size=4)
        | json_values,
        "dryrun": json_values,
        "keep": json_values,
    }
    valid = {
        "dry_run": st.booleans(),
        "backup_retention": st.integers(1, 100_000) | st.dictionaries(
            st.sampled_from([*ENVIRONMENTS, "default"]), st.integers(1, 100_000), max_size=5),
        **{k: st.integers(1, 36_500) for k in AGE_KEYS},
        "targets": st.lists(st.sampled_from(targets), min_size=1, unique=True),
    }
    return (json_values | st.fixed_dictionaries({}, optional=fields)
            | st.fixed_dictionaries({}, optional=valid))


def _count(v: Any, hi: int) -> bool:
    return type(v) is int and 1 <= v <= hi


def _finite(doc: Any) -> bool:
    if isinstance(doc, float):
        return math.isfinite(doc)
    if isinstance(doc, list):
        return all(_finite(x) for x in doc)
    if isinstance(doc, dict):
        return all(_finite(x) for x in doc.values())
    return True


def offending_keys(doc: Any, targets: list[str]) -> list[str]:
    """The keys a correct API must name (``["body"]`` for a body that is not an object)."""
    if not isinstance(doc, dict) or not _finite(doc):
        return ["body"]  # NaN/Infinity are not JSON: the body does not even parse
    bad = []
    for key, v in doc.items():
        if key == "dry_run":
            ok = type(v) is bool
        elif key == "backup_retention":
            ok = _count(v, 100_000) or (type(v) is dict and all(
                e in [*ENVIRONMENTS, "default"] and _count(n, 100_000) for e, n in v.items()))
        elif key in AGE_KEYS:
            ok = _count(v, 36_500)
        elif key == "targets":
            ok = (type(v) is list and len(v) > 0 and len(set(map(str, v))) == len(v)
                  and all(type(t) is str and t in targets for t in v))
        else:
            ok = False
        if not ok:
            bad.append(key)
    return bad


def is_real_run(doc: Any) -> bool:
    """Only a literal ``false`` asks for a real run."""
    return isinstance(doc, dict) and doc.get("dry_run", True) is False
