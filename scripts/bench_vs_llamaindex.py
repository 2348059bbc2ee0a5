"""Our ingestion + retrieval vs LlamaIndex on the same corpus, embedding model and FAISS, in one run.

    pip install -e '.[bench]'
    python scripts/bench_vs_llamaindex.py ../shared/corpora/sourcegraph-handbook [--limit N]

Each side runs in its own subprocess (so peak RSS is its own): ingest wall time, chunks/s, peak RSS,
query latency p50, and document hit@5 on the dev question set (tests/data/dev_questions.jsonl).
LlamaIndex: SimpleDirectoryReader → SentenceSplitter(256 tokens, overlap 32, the MiniLM tokenizer)
→ HuggingFaceEmbedding(bundled MiniLM) → FaissVectorStore(IndexFlatIP) — its documented defaults
otherwise. Ours: `assistant ingest` (heading-aware chunks, hybrid dense + BM25 retrieval).
The ratio ours/theirs is printed last.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "tests" / "data" / "dev_questions.jsonl"


def _questions():
    return [json.loads(l) for l in DEV.read_text().splitlines() if l.strip()]


def _hit5(ranked: list[list[str]], qs) -> float:
    from assistant.evaluation import first_gold_rank

    gold = [(r, q["gold_docs"]) for r, q in zip(ranked, qs) if q.get("gold_docs")]
    hits = [first_gold_rank(r, tuple(g)) for r, g in gold]
    return sum(1 for h in hits if h is not None and h <= 5) / len(gold)


def _files(corpus: Path, limit: int) -> list[Path]:
    files = sorted(p for p in corpus.rglob("*.md") if p.is_file())
    return files[:limit] if limit else files


def run_ours(corpus: Path, limit: int, backend: str) -> dict:
    import shutil

    from assistant.documents import Principals
    from assistant.engine import Engine
    from assistant.settings import load_settings
    from connectors.local_files import LocalFilesConnector

    src = corpus
    if limit:
        src = Path(tempfile.mkdtemp(prefix="bench-subset-"))
        for f in _files(corpus, limit):
            (src / f.relative_to(corpus)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, src / f.relative_to(corpus))
    data = tempfile.mkdtemp(prefix="bench-ours-")
    s = load_settings(environ={}, overrides={"data_dir": data, "embedding": {"backend": backend}})
    with Engine.open(s) as eng:
        _ = eng.embedder
        t = time.perf_counter()
        rep = eng.sync(LocalFilesConnector(src))
        wall = time.perf_counter() - t
        qs = _questions()
        who = Principals(email="bench@example.com")
        ranked, lat = [], []
        for q in qs:
            t = time.perf_counter()
            hits = eng.search(q["question"], who=who, k=10)
            lat.append((time.perf_counter() - t) * 1e3)
            ranked.append([h.path for h in hits])
    return {
        "side": f"ours ({backend})",
        "docs": rep.added,
        "chunks": rep.chunks,
        "ingest_s": wall,
        "chunks_per_s": rep.chunks / wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "query_p50_ms": statistics.median(lat),
        "hit5": _hit5(ranked, qs),
    }


def run_llamaindex(corpus: Path, limit: int) -> dict:
    import faiss
    from llama_index.core import Settings, SimpleDirectoryReader, StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.faiss import FaissVectorStore
    from transformers import AutoTokenizer

    from assistant.embeddings import bundled_model_path

    model = str(bundled_model_path())
    tok = AutoTokenizer.from_pretrained(model)
    Settings.llm = None
    Settings.tokenizer = tok.encode  # keeps tiktoken (which downloads its vocabulary) out of it
    embed = HuggingFaceEmbedding(model_name=model, device="cpu", embed_batch_size=64, max_length=256)
    t = time.perf_counter()
    files = _files(corpus, limit)
    docs = SimpleDirectoryReader(input_files=[str(f) for f in files]).load_data()
    nodes = SentenceSplitter(chunk_size=256, chunk_overlap=32, tokenizer=tok.encode).get_nodes_from_documents(
        docs
    )
    store = FaissVectorStore(faiss_index=faiss.IndexFlatIP(384))
    index = VectorStoreIndex(
        nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
    )
    wall = time.perf_counter() - t
    retriever = index.as_retriever(similarity_top_k=50)
    qs = _questions()
    ranked, lat = [], []
    for q in qs:
        t = time.perf_counter()
        res = retriever.retrieve(q["question"])
        lat.append((time.perf_counter() - t) * 1e3)
        paths = []
        for r in res:
            p = str(Path(r.node.metadata.get("file_path", "")).resolve().relative_to(corpus.resolve()))
            if p not in paths:
                paths.append(p)
        ranked.append(paths[:10])
    return {
        "side": "llamaindex",
        "docs": len(files),
        "chunks": len(nodes),
        "ingest_s": wall,
        "chunks_per_s": len(nodes) / wall,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "query_p50_ms": statistics.median(lat),
        "hit5": _hit5(ranked, qs),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="only the first N files (sorted), for a quick run")
    ap.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx-int8"])
    ap.add_argument("--side", choices=["ours", "llamaindex"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.side:
        out = (
            run_ours(a.corpus, a.limit, a.backend) if a.side == "ours" else run_llamaindex(a.corpus, a.limit)
        )
        print("RESULT " + json.dumps(out))
        return
    results = []
    for side in ("ours", "llamaindex"):
        cmd = [
            sys.executable,
            __file__,
            str(a.corpus),
            "--side",
            side,
            "--limit",
            str(a.limit),
            "--backend",
            a.backend,
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{p.stderr[-3000:]}")
        results.append(json.loads(line[7:]))
    print(
        "| side | docs | chunks | ingest (s) | chunks/s | peak RSS (MB) | query p50 (ms) | hit@5 |\n|---|---|---|---|---|---|---|---|"
    )
    for r in results:
        print(
            f"| {r['side']} | {r['docs']} | {r['chunks']} | {r['ingest_s']:.1f} | {r['chunks_per_s']:.1f} | "
            f"{r['rss_mb']:.0f} | {r['query_p50_ms']:.1f} | {r['hit5']:.2f} |"
        )
    ours, theirs = results
    print(
        f"\nours/llamaindex: ingest time {ours['ingest_s'] / theirs['ingest_s']:.2f}x, "
        f"docs/s {(ours['docs'] / ours['ingest_s']) / (theirs['docs'] / theirs['ingest_s']):.2f}x, "
        f"hit@5 {ours['hit5']:.2f} vs {theirs['hit5']:.2f}"
    )


if __name__ == "__main__":
    main()
