"""Entry point of the twin's child process: read the payload (JSON on stdin), run the harness,
write the record (JSON on stdout). A failure exits 1 with one line on stderr."""

from __future__ import annotations

import json
import sys


def main() -> int:
    payload = json.load(sys.stdin)
    try:
        from .harness import run_scenario

        record = run_scenario(
            payload["scenario"], payload["policy"], payload["seed"], payload["sample_interval"], payload.get("adaptive")
        )
    except Exception as err:  # one readable line for the parent, which raises TwinRunFailed
        sys.stderr.write(f"{type(err).__name__}: {err}".replace("\n", " ")[:400] + "\n")
        return 1
    json.dump(record, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
