"""The cleanup targets, one module each, found through :data:`REGISTRY`.

Importing this package registers the targets in run order: backups, logs, (the database
targets,) temp.
"""

from architect_cleanup.targets import backups, logs, temp  # noqa: F401  (registration)
from architect_cleanup.targets.base import (
    REGISTRY,
    Decision,
    Interrupted,
    RunContext,
    Target,
)
from architect_cleanup.targets.tree import TreeTarget, scan_tree

ORDER = ("backups", "logs", "tasks", "errors", "prompts", "temp")


def ordered() -> list[str]:
    """Registered target names in the seed's order."""
    return [n for n in ORDER if n in REGISTRY] + [n for n in REGISTRY if n not in ORDER]


__all__ = ["ORDER", "REGISTRY", "Decision", "Interrupted", "RunContext", "Target", "TreeTarget",
           "ordered", "scan_tree"]
