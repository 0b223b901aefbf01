"""The cleanup targets, one module each, found through :data:`REGISTRY`.

Importing this package registers the targets; :data:`ORDER` is the run order: backups, logs,
tasks, errors, prompts, temp.
"""

from architect_cleanup.targets import (  # noqa: F401  (registration)
    backups,
    errors,
    logs,
    orphans,
    prompts,
    rules,
    tasks,
    temp,
)
from architect_cleanup.targets.base import (
    REGISTRY,
    Actor,
    Decision,
    Interrupted,
    RunContext,
    Target,
)
from architect_cleanup.targets.tree import TreeTarget, scan_tree

ORDER = ("backups", "logs", "tasks", "errors", "prompts", "temp", "rules", "orphans")


def ordered() -> list[str]:
    """Registered target names in the seed's order."""
    return [n for n in ORDER if n in REGISTRY] + [n for n in REGISTRY if n not in ORDER]


__all__ = ["ORDER", "REGISTRY", "Actor", "Decision", "Interrupted", "RunContext", "Target",
           "TreeTarget", "ordered", "scan_tree"]
