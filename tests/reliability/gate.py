#!/usr/bin/python3
"""Start the CLI at a signal: import everything, wait until the gate file exists, then run
``architect_cleanup.cli.main`` with the remaining arguments (so two runs start within a
millisecond of each other)."""

from __future__ import annotations

import os
import sys
import time

from architect_cleanup.cli import main

if __name__ == "__main__":
    gate = sys.argv[1]
    while not os.path.exists(gate):
        time.sleep(0.0002)
    sys.exit(main(sys.argv[2:]))
