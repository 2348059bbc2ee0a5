"""Embedding throughput: torch (sentence-transformers) vs ONNX Runtime int8, on handbook paragraphs.

    python scripts/bench_embeddings.py [CORPUS] [--n 2000] [--threads 2] [--cache-dir DIR]

Takes the first ``--n`` paragraphs (blank-line separated, 40+ characters, files in sorted order) of
the Markdown corpus, embeds them with each backend (truncated at 256 tokens, as at ingestion) and
prints a Markdown table: load time, chunks/s, CPU time per chunk (less sensitive to other load on
the machine than wall time), speed-up over torch, and cosine similarity to the
torch vectors (mean and worst). Both backends get the same number of CPU threads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.embeddings import OnnxEmbedder, bundled_model_path  # noqa: E402
from assistant.embeddings import SentenceTransformerEmbedder as Embedder  # noqa: E402


def paragraphs(corpus: Path, n: int) -> list[str]:
    out: list[str] = []
    for path in sorted(corpus.rglob("*.md")):
        out += [
            p.strip()
            for p in path.read_text(encoding="utf-8", errors="replace").split("\n\n")
            if len(p.strip()) >= 40
        ]
        if len(out) >= n:
            break
    return out[:n]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def timed_cpu(fn):
    """(result, wall seconds, CPU seconds of this process over all threads)."""
    cpu = time.process_time()
    result, wall = timed(fn)
    return result, wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "corpus", nargs="?", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook"
    )
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="ONNX cache (default: a fresh temp dir, so the first load includes export + quantization)",
    )
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    texts = paragraphs(args.corpus, args.n)
    print(f"{len(texts)} paragraphs from {args.corpus}, {args.threads} threads, batch size {args.batch_size}")

    rows = []
    torch_emb, load = timed(lambda: Embedder(batch_size=args.batch_size, device="cpu"))
    torch_emb.embed(texts[:32])  # warm-up
    ref, secs, cpu = timed_cpu(lambda: torch_emb.embed(texts))
    rows.append(("torch fp32 (sentence-transformers)", load, None, secs, cpu, ref))

    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        onnx_emb, build = timed(
            lambda: OnnxEmbedder(
                bundled_model_path(), cache_dir=cache, batch_size=args.batch_size, threads=args.threads
            )
        )
        _, load = timed(lambda: OnnxEmbedder(bundled_model_path(), cache_dir=cache, threads=args.threads))
        onnx_emb.embed(texts[:32])
        vecs, secs, cpu = timed_cpu(lambda: onnx_emb.embed(texts))
        rows.append(("onnxruntime int8", load, build, secs, cpu, vecs))

    base, base_cpu = rows[0][3], rows[0][4]
    print(
        "\n| backend | load s (cached) | first build s | chunks/s | CPU ms / chunk | speed-up wall / CPU "
        "| cosine to torch mean / min |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, load, build, secs, cpu, vecs in rows:
        cos = (vecs * ref).sum(axis=1)
        print(
            f"| {name} | {load:.1f} | {'-' if build is None else f'{build:.1f}'} | {len(texts) / secs:.1f} | "
            f"{1000 * cpu / len(texts):.1f} | {base / secs:.2f}x / {base_cpu / cpu:.2f}x | "
            f"{cos.mean():.4f} / {cos.min():.4f} |"
        )


if __name__ == "__main__":
    main()
