"""Embedding throughput on a GPU: the project's Embedder (sentence-transformers, fp16 on CUDA, length-sorted
batches) over handbook-length chunks.

    python scripts/bench_embeddings_gpu.py [--model FOLDER] [--n 1000000] [--corpus DIR]

Texts are the handbook's paragraphs (and, to reach ``--n``, the same paragraphs again with a counter, so
lengths stay realistic). One warm-up call, then ``--runs`` timed calls of ``--n`` texts; prints the median
and min–max chunks/s and the cosine of fp16 vs fp32 vectors on a sample. Meant for a CUDA host; on a CPU it
runs, slowly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.embeddings import SentenceTransformerEmbedder as Embedder


def paragraphs(corpus: Path) -> list[str]:
    out = []
    for p in sorted(corpus.rglob("*.md")):
        out += [
            x.strip()
            for x in p.read_text(encoding="utf-8", errors="replace").split("\n\n")
            if len(x.strip()) >= 40
        ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    base = paragraphs(args.corpus)
    texts = [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(args.n)]
    emb = Embedder(args.model, device="auto")
    emb.embed(texts[:20_000])  # warm-up: kernels, allocator
    rates = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        emb.embed(texts)
        rates.append(args.n / (time.perf_counter() - t0))
    ref = Embedder(args.model, device="cpu").embed(base[:200])
    cos = float(np.min(np.sum(ref * emb.embed(base[:200]), axis=1)))
    words = statistics.median(len(t.split()) for t in base)
    print("| texts | median words | runs | chunks/s median | min–max | min cosine fp16 vs fp32 (200) |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.n:,} | {words:.0f} | {args.runs} | {statistics.median(rates):,.0f} | "
        f"{min(rates):,.0f}–{max(rates):,.0f} | {cos:.4f} |"
    )


if __name__ == "__main__":
    main()
