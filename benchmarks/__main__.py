"""Entry point: ``python -m benchmarks`` (the suite), ``python -m benchmarks production|sweep|all``."""

import sys

if len(sys.argv) > 1 and sys.argv[1] in ("production", "sweep", "all"):
    from .production import main
else:
    from .suite import main

raise SystemExit(main())
