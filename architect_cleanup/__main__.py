"""``python3 -m architect_cleanup`` is the CLI."""

from architect_cleanup.cli import main

raise SystemExit(main())
