"""Benchmark: sync a fake Slack workspace (default 10 channels × ~500 messages) through the Engine.

    python scripts/bench_connector_slack.py [--channels 10] [--messages 500] [--latency-ms 0]
                                            [--embedder bundled|lexical] [--page-size 200]

Prints one row per phase: the connector alone (listing + fetch, no indexing), a full sync through
the Engine (parse, chunk, embed, store, index), and an incremental sync with nothing changed.
Columns: messages, threads (documents), seconds, messages/s, Web API requests. The workspace is
the local fake (tests/fakes/slack.py) filled with handbook paragraphs; ``--latency-ms`` adds a
per-request delay to imitate the network. ``--embedder lexical`` swaps the model for a hashing
stand-in to measure everything but the embedding.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repo importable
    sys.path.insert(0, str(ROOT))


def _lexical_embedder():
    import zlib

    import numpy as np
    from transformers import AutoTokenizer

    from assistant.embeddings import bundled_model_path

    class Lexical:
        name, dim, max_seq_length = "lexical-bench", 384, 256
        tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()))
        texts_embedded = calls = 0

        def embed(self, texts):
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            for i, t in enumerate(texts):
                for w in t.lower().split():
                    out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

        def embed_query(self, text):
            return self.embed([text])[0]

    return Lexical()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=10)
    ap.add_argument("--messages", type=int, default=500, help="messages per channel (roots + replies)")
    ap.add_argument("--page-size", type=int, default=200)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--embedder", choices=["bundled", "lexical"], default="bundled")
    args = ap.parse_args(argv)

    from assistant.engine import Engine
    from assistant.settings import load_settings
    from connectors.slack import SlackConfig, SlackConnector
    from tests.fakes.slack import FakeSlack

    roots = max(1, args.messages // 2)  # every 2nd root gets 2 replies: 2 messages per root
    rows = []
    with FakeSlack(latency_s=args.latency_ms / 1000) as fake, tempfile.TemporaryDirectory() as tmp:
        fake.populate(
            channels=args.channels,
            roots_per_channel=roots,
            replies_every=2,
            replies=2,
            private_every=4,
            files_every=25,
            users=12,
            start_ago=6 * 86400,
        )
        n_messages = sum(len(m) for m in fake.messages.values())

        def make():
            return SlackConnector(
                SlackConfig(bot_token=fake.token, api_url=fake.url, page_size=args.page_size)
            )

        fake.clear_requests()
        t0 = time.perf_counter()
        conn = make()
        refs = [r for page in conn.changes(None) for r in page.upserts]
        for r in refs:
            conn.fetch(r)
        dt = time.perf_counter() - t0
        threads = sum(1 for r in refs if not r.id.startswith("file:"))
        rows.append(("connector only (list + fetch)", n_messages, threads, dt, fake.api_call_count()))

        embedder = _lexical_embedder() if args.embedder == "lexical" else None
        engine = Engine.open(load_settings(environ={}, overrides={"data_dir": tmp}), embedder=embedder)
        _ = engine.embedder  # load the model outside the timed part
        for label, full in (
            (f"full sync via Engine ({args.embedder})", True),
            ("incremental, nothing changed", False),
        ):
            fake.clear_requests()
            t0 = time.perf_counter()
            rep = engine.sync(make(), full=full)
            dt = time.perf_counter() - t0
            assert rep.failed == 0, rep.failures[:3]
            threads = sum(1 for i in engine.store.document_ids("slack") if not i.startswith("file:"))
            rows.append((label, n_messages, threads, dt, fake.api_call_count()))
        engine.close()

    print(
        f"Slack connector benchmark: {args.channels} channels, {n_messages} messages, page size {args.page_size}, "
        f"latency {args.latency_ms:g} ms/request"
    )
    print(f"{'phase':38} {'messages':>9} {'threads':>8} {'seconds':>8} {'msg/s':>9} {'requests':>9}")
    for label, msgs, docs, secs, reqs in rows:
        print(f"{label:38} {msgs:>9} {docs:>8} {secs:>8.2f} {msgs / secs if secs else 0:>9.0f} {reqs:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
