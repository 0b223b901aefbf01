"""architect-cleanup: systemd-native storage retention for Architect Dashboard servers.

The public Python API is :class:`CleanupWorker` and :class:`CleanupStats`::

    from architect_cleanup import CleanupWorker
    stats = CleanupWorker(dry_run=True, log_age_days=60).run_cleanup()
    print(stats.space_freed_mb)
"""

from __future__ import annotations

__version__ = "0.1.0"

from architect_cleanup.stats import CleanupStats, TargetResult
from architect_cleanup.worker import CleanupWorker, LockHeld

__all__ = ["CleanupStats", "CleanupWorker", "LockHeld", "TargetResult", "__version__"]
