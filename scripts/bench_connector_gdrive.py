"""Benchmark: the Google Drive connector against the local Drive fake, through the Engine's sync loop.

Builds a world of handbook pages (default 2,000 files over My Drive, two shared drives and nested
folders), makes the fake answer every API call after a fixed latency (default 20 ms, roughly a
real Drive round trip), then runs a full sync, a no-change re-sync, and the connector alone (list +
parallel fetch, no parsing or embedding). Prints files, seconds, files/s and API requests per file.

By default the Engine gets a hashing embedder (bag of words, no model) so the figure measures the
connector and the sync loop rather than CPU embedding speed; ``--embedder bundled`` uses MiniLM.
The fake runs in this process (its threads sleep through the latency, so they cost no CPU).

    python scripts/bench_connector_gdrive.py [--files 2000] [--latency-ms 20] [--workers 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))


class HashingEmbedder:
    """Bag-of-words hashing vectors with the bundled model's tokenizer (for chunking): costs ~nothing."""

    name, dim, max_seq_length = "hashing", 384, 256

    def __init__(self) -> None:
        from transformers import AutoTokenizer

        from assistant.embeddings import bundled_model_path

        self.tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()), local_files_only=True)
        self.texts_embedded = self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)  # (n, 384)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        self.calls += 1
        self.texts_embedded += len(texts)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def api_requests(world) -> int:
    with world.lock:
        return sum(1 for r in world.requests if r.path.startswith("/drive/"))


def run(n_files: int, latency_s: float, workers: int, embedder_kind: str) -> list[tuple]:
    from assistant.engine import Engine
    from assistant.settings import load_settings
    from connectors.google_drive import DriveConfig, GoogleDriveConnector
    from tests.fakes.gdrive import FakeDrive, populate

    rows = []
    with (
        FakeDrive(users=("alice@example.com", "bob@example.com")) as fake,
        tempfile.TemporaryDirectory() as tmp,
    ):
        w = fake.world
        populate(w, n_files)
        cfg = DriveConfig(
            credentials_info=w.service_account_info(),
            subject=w.admin,
            api_endpoint=fake.url,
            token_uri=fake.url + "/token",
            all_shared_drives=True,
            workers=workers,
        )
        settings = load_settings(environ={}, overrides={"data_dir": tmp, "sync": {"fetch_workers": workers}})
        embedder = HashingEmbedder() if embedder_kind == "hashing" else None
        engine = Engine.open(settings, embedder=embedder)
        try:
            _ = engine.embedder  # load the model outside the timed part
            w.latency_s = latency_s
            for label in (f"full sync (engine, {embedder_kind} embedder)", "re-sync, nothing changed"):
                before, t0 = api_requests(w), time.perf_counter()
                rep = engine.sync(GoogleDriveConnector(cfg))
                secs = time.perf_counter() - t0
                if rep.failed:
                    print(f"warning: {rep.failed} failures, e.g. {rep.failures[:2]}", file=sys.stderr)
                rows.append(
                    (
                        label,
                        rep.added or n_files,
                        secs,
                        rep.added / secs if rep.added else None,
                        (api_requests(w) - before) / n_files,
                    )
                )
        finally:
            engine.close()
        conn = GoogleDriveConnector(cfg)
        before, t0 = api_requests(w), time.perf_counter()
        refs = [r for page in conn.changes(None) for r in page.upserts]
        with ThreadPoolExecutor(workers) as pool:
            docs = list(pool.map(conn.fetch, refs))
        secs = time.perf_counter() - t0
        rows.append(
            (
                f"connector only (list + fetch, {workers} threads)",
                len(docs),
                secs,
                len(docs) / secs,
                (api_requests(w) - before) / len(docs),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="added by the fake to every API call")
    ap.add_argument("--workers", type=int, default=8, help="sync fetch workers and connector API concurrency")
    ap.add_argument("--embedder", choices=("hashing", "bundled"), default="hashing")
    args = ap.parse_args(argv)
    rows = run(args.files, args.latency_ms / 1000, args.workers, args.embedder)
    print(
        f"Google Drive connector vs local fake: {args.files} files, {args.latency_ms:g} ms per API call, "
        f"{args.workers} workers"
    )
    print(f"| {'run':<48} | {'files':>6} | {'seconds':>8} | {'files/s':>8} | {'requests/file':>13} |")
    print(f"|{'-' * 50}|{'-' * 8}|{'-' * 10}|{'-' * 10}|{'-' * 15}|")
    for label, files, secs, rate, rpf in rows:
        rate_s = f"{rate:8.1f}" if rate else f"{'-':>8}"
        print(f"| {label:<48} | {files:>6} | {secs:>8.2f} | {rate_s} | {rpf:>13.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
