"""Entry point: ``python -m benchmarks``."""

from .suite import main

raise SystemExit(main())
