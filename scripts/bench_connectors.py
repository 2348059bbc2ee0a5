"""Connector throughput against the local fakes.

    python scripts/bench_connectors.py gdrive|onedrive|slack [options of that benchmark]

Each connector's benchmark lives in scripts/bench_connector_<name>.py; this is the one entry point.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = {"gdrive": "gdrive", "google_drive": "gdrive", "onedrive": "onedrive", "slack": "slack"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in NAMES:
        sys.exit("usage: python scripts/bench_connectors.py gdrive|onedrive|slack [options]")
    path = HERE / f"bench_connector_{NAMES[argv[0]]}.py"
    sys.path[:0] = [str(HERE.parent)]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(argv[1:])


if __name__ == "__main__":
    main()
