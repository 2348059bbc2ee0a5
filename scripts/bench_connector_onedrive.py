"""Benchmark: sync a 2,000-file OneDrive/SharePoint world through the Engine against the Graph fake.

Every Graph and download call pays ``--latency-ms`` (20 ms by default) in the fake, which is what
bounds a real sync; the fetch workers overlap those waits. Half the files sit in a user's OneDrive,
half in a SharePoint library; contents are handbook pages (cycled). Prints one table row for the
full sync, a no-change incremental sync and an incremental sync after editing 5% of the files:
files synced, seconds, files/s, HTTP requests (token, Graph and download host) and requests per file.

Embedding is not what this measures, so ``--embedder hash`` (default) swaps the model for a
deterministic hashing embedder that still uses the bundled tokenizer for chunking; ``--embedder
bundled`` runs the real MiniLM (slow on CPU). Run: ``python scripts/bench_connector_onedrive.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class HashEmbedder:
    """Deterministic stand-in: a seeded unit vector per text; the real tokenizer for chunking."""

    name, dim = "hash-bench", 384

    def __init__(self) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the chunker measures long texts on purpose

        from assistant.embeddings import bundled_model_path

        self.tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()), local_files_only=True)
        self.max_seq_length = 256

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def build_world(n_files: int, page_size: int):
    from tests.fakes.graph import GraphWorld, handbook_pages, populate

    pages = [(rel, text) for rel, text in handbook_pages() if len(text.strip()) > 80]  # a few pages are empty
    if not pages:
        raise SystemExit("The handbook corpus (../shared/corpora/sourcegraph-handbook) is missing.")
    world = GraphWorld(page_size=page_size)
    user = world.add_user_drive("alice@contoso.com")
    _, (site,) = world.add_site("Eng")
    populate(world, user, pages, n_files // 2)
    populate(world, site, pages[len(pages) // 2 :] + pages[: len(pages) // 2], n_files - n_files // 2)
    return world


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--page-size", type=int, default=200, help="delta page size (Graph uses about 200)")
    ap.add_argument("--workers", type=int, default=8, help="sync.fetch_workers")
    ap.add_argument("--embedder", choices=["hash", "bundled"], default="hash")
    args = ap.parse_args(argv)

    from assistant.engine import Engine
    from assistant.settings import load_settings
    from connectors.onedrive import OneDriveConfig, OneDriveConnector
    from tests.fakes.graph import FakeGraph

    embedder = HashEmbedder() if args.embedder == "hash" else None
    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(args.files, args.page_size)
        with FakeGraph(Path(tmp), world) as fg:
            world.latency_s = args.latency_ms / 1000
            settings = load_settings(
                environ={},
                overrides={"data_dir": str(Path(tmp) / "data"), "sync": {"fetch_workers": args.workers}},
            )
            engine = Engine.open(settings, embedder=embedder)
            if embedder is None:
                _ = engine.embedder  # load the model before the clock starts
            conn = OneDriveConnector(
                OneDriveConfig(
                    **fg.settings(
                        user_drives=("alice@contoso.com",),
                        site_urls=("https://contoso.sharepoint.com/sites/Eng",),
                        workers=args.workers,
                    )
                )
            )
            rows = []
            for label in ("full sync", "incremental, no changes", "incremental, 5% edited"):
                if label.endswith("edited"):
                    for item in world.live_files()[::20]:
                        world.edit(item.id, item.content + b"\n\nEdited for the benchmark.\n")
                before = len(world.requests) + len(world.downloads) + fg.identity.token_requests()
                t0 = time.perf_counter()
                rep = engine.sync(conn)
                secs = time.perf_counter() - t0
                reqs = len(world.requests) + len(world.downloads) + fg.identity.token_requests() - before
                files = rep.added + rep.updated + rep.unchanged
                rows.append((label, files, secs, reqs, rep.failed))
                for f in rep.failures[:3]:
                    print(f"  failed: {f.item_id} at {f.stage}: {f.reason[:120]}", file=sys.stderr)
            engine.close()
    print(
        f"OneDrive connector, {args.files} files, {args.latency_ms:.0f} ms per call, "
        f"{args.workers} fetch workers, embedder={args.embedder}"
    )
    print(
        f"| {'run':<24} | {'files':>6} | {'seconds':>8} | {'files/s':>8} | {'requests':>8} | {'requests/file':>13} | {'failed':>6} |"
    )
    print(f"|{'-' * 26}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 15}|{'-' * 8}|")
    for label, files, secs, reqs, failed in rows:
        rate = f"{files / secs:8.1f}" if files else f"{'-':>8}"
        per = f"{reqs / files:13.2f}" if files else f"{'-':>13}"
        print(f"| {label:<24} | {files:>6} | {secs:>8.1f} | {rate} | {reqs:>8} | {per} | {failed:>6} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
