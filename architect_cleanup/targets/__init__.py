"""The cleanup targets, one module each, found through :data:`REGISTRY`.

:data:`REGISTRY` is filled here, from one list (no module registers itself on import);
:data:`ORDER` is the run order: backups, logs, tasks, errors, prompts, temp, rules, orphans.
"""

from architect_cleanup.targets.backups import Backups
from architect_cleanup.targets.base import (
    REGISTRY,
    Actor,
    Decision,
    Interrupted,
    RunContext,
    Target,
)
from architect_cleanup.targets.errors import Errors
from architect_cleanup.targets.logs import Logs
from architect_cleanup.targets.orphans import Orphans
from architect_cleanup.targets.prompts import Prompts
from architect_cleanup.targets.rules import Rules
from architect_cleanup.targets.tasks import Tasks
from architect_cleanup.targets.temp import Temp
from architect_cleanup.targets.tree import TreeTarget, scan_tree

TARGETS: tuple[type[Target], ...] = (Backups, Errors, Logs, Orphans, Prompts, Rules, Tasks, Temp)
REGISTRY.update({cls.name: cls for cls in TARGETS})

ORDER = ("backups", "logs", "tasks", "errors", "prompts", "temp", "rules", "orphans")


def ordered() -> list[str]:
    """Registered target names in the seed's order."""
    return [n for n in ORDER if n in REGISTRY] + [n for n in REGISTRY if n not in ORDER]


__all__ = ["ORDER", "REGISTRY", "TARGETS", "Actor", "Decision", "Interrupted", "RunContext",
           "Target", "TreeTarget", "ordered", "scan_tree"]
