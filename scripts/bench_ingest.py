"""Ingestion and search benchmark on a folder (default: the Sourcegraph handbook).

    python scripts/bench_ingest.py ../shared/corpora/sourcegraph-handbook [--backend torch|onnx-int8]

Measures a full ingest into an empty data dir (wall time, docs/s, chunks/s, peak RSS), a no-op
re-sync, and search latency p50/p95 over 200 queries with the model already loaded. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from assistant.documents import Principals
from assistant.engine import Engine
from assistant.settings import load_settings
from connectors.local_files import LocalFilesConnector

REPO = Path(__file__).resolve().parents[1]


def queries(n: int) -> list[str]:
    qs = [
        json.loads(l)["question"]
        for l in (REPO / "tests" / "data" / "dev_questions.jsonl").read_text().splitlines()
        if l.strip()
    ]
    rnd = random.Random(0)
    return [qs[i % len(qs)] if i < len(qs) else rnd.choice(qs) + f" {i}" for i in range(n)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx-int8"])
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args(argv)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    settings = load_settings(
        environ={}, overrides={"data_dir": str(data_dir), "embedding": {"backend": args.backend}}
    )
    rows = []
    with Engine.open(settings) as eng:
        t = time.perf_counter()
        _ = eng.embedder  # model load is reported separately
        load_s = time.perf_counter() - t
        conn = LocalFilesConnector(args.folder)
        t = time.perf_counter()
        rep = eng.sync(conn)
        full_s = time.perf_counter() - t
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t = time.perf_counter()
        rep2 = eng.sync(LocalFilesConnector(args.folder))
        noop_s = time.perf_counter() - t
        qs = queries(args.queries)
        who = Principals(email="bench@example.com")
        eng.search("warm up", who=who)
        lat = []
        for q in qs:
            t = time.perf_counter()
            eng.search(q, who=who, k=5)
            lat.append((time.perf_counter() - t) * 1e3)
        lat.sort()
        rows = [
            ("embedding backend", args.backend),
            ("documents", f"{rep.added} ({rep.failed} failed)"),
            ("chunks", f"{eng.store.chunk_count()}"),
            ("embedder load", f"{load_s:.1f} s"),
            ("full ingest", f"{full_s:.1f} s"),
            ("docs/s", f"{rep.added / full_s:.1f}"),
            ("chunks/s", f"{rep.chunks / full_s:.1f}"),
            ("peak RSS", f"{rss_mb:.0f} MB"),
            ("no-op re-sync", f"{noop_s:.2f} s ({rep2.unchanged} unchanged, {rep2.chunks} embedded)"),
            ("search p50", f"{statistics.median(lat):.1f} ms"),
            ("search p95", f"{lat[int(len(lat) * 0.95) - 1]:.1f} ms"),
        ]
    print("| metric | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
