"""Allow ``python -m btrsendd``."""

from btrsendd.cli import main

raise SystemExit(main())
