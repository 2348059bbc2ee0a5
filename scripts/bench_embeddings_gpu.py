"""Embeddings on a GPU (issue #20 §3): the project's Embedder (MiniLM, fp16 on CUDA, batches of ≥ 512,
length-sorted by sentence-transformers) — the whole-handbook ingest with it, chunks/s on the handbook's
chunks, and chunks/s at scale on synthetic chunks of the handbook's length.

On the H200 (the command in GPU_READY.md; about 3–5 minutes, most of it the 5 handbook ingests):

    PYTHONPATH=. python scripts/bench_embeddings_gpu.py --model BUNDLE/minilm --corpus BUNDLE/handbook \\
        --out results/gpu_embed

CPU smoke run (a minute; checks the script end to end, the figures mean nothing):

    PYTHONPATH=. python scripts/bench_embeddings_gpu.py --out /tmp/gpu_smoke --smoke

What it measures, in this order, printing progress (cold and warm timings are never mixed: every
shape is warmed up first and reported apart):
1. model load (cold, reported alone) and a warm-up call;
2. the whole handbook ingested into a fresh data_dir (``Engine.sync`` of the folder: parse, chunk,
   embed on the GPU, SQLite + FAISS writes), after one warm-up ingest of a 100-file subset:
   ``--ingest-runs`` runs, each in a new data_dir; wall seconds, docs/s, chunks/s, and the share of
   the time spent inside ``embed`` (the rest is CPU work the GPU cannot speed up);
3. chunks/s on exactly the handbook's chunk texts (as ingest embeds them: title > headings + text),
   one ``embed`` call of all of them per run;
4. chunks/s at scale: ``--sample`` synthetic chunks (the handbook's chunk texts, cycled, each with a
   counter so no two are equal: the same length distribution), ``--runs`` runs; then ONE timed run of
   ``--full`` (1,000,000) chunks if the sample's median rate predicts it finishes within
   ``--full-max-s``; otherwise the 1M figure is an extrapolation from the sample, and the output says so;
5. where the time goes on the sample (up to 100k chunks): tokenizing alone (CPU), sentence-transformers'
   plain ``encode`` (what the Embedder did before ``assistant.embeddings.cuda``: tokenize, then run,
   batch after batch) and the model's forward pass alone on pre-tokenized, length-sorted batches
   already on the GPU (fp16 and bf16);
6. fp16 vs fp32 cosine on 256 chunks (quality check of the fp16 path).
Writes ``embed_gpu.json`` (every timing) and ``embed_gpu.md`` (tables) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TOKENIZERS_PARALLELISM"] = "true"  # batch tokenization on every core (no fork happens here)

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.embeddings import SentenceTransformerEmbedder as Embedder
from assistant.engine import Engine
from assistant.settings import load_settings
from connectors.local_files import LocalFilesConnector


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


class TimedEmbedder:
    """Wraps the Embedder: counts seconds inside ``embed`` and keeps the texts of one run."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.texts: list[str] = []
        self.record = False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def embed(self, texts: list[str]) -> np.ndarray:
        t = time.perf_counter()
        out = self.inner.embed(texts)
        _sync()
        self.seconds += time.perf_counter() - t
        if self.record:
            self.texts.extend(texts)
        return out

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def ingest_once(folder: Path, emb: TimedEmbedder, workdir: Path, model: str) -> dict:
    data = Path(tempfile.mkdtemp(prefix="hb-", dir=workdir))
    settings = load_settings(
        environ={},
        overrides={
            "data_dir": str(data),
            "model_cache_dir": str(workdir / "cache"),
            "embedding": {"model": model, "backend": "torch"},
            "index": {"save_every_s": 0},
        },
    )
    emb.seconds = 0.0
    t = time.perf_counter()
    with Engine.open(settings, embedder=emb) as eng:
        rep = eng.sync(LocalFilesConnector(folder, name="handbook"))
    wall = time.perf_counter() - t
    shutil.rmtree(data, ignore_errors=True)
    return {
        "wall_s": wall,
        "docs": rep.added,
        "failed": rep.failed,
        "chunks": rep.chunks,
        "embed_s": emb.seconds,
        "docs_per_s": rep.added / wall,
        "chunks_per_s": rep.chunks / wall,
    }


def subset(corpus: Path, n: int, workdir: Path) -> Path:
    """The first ``n`` Markdown files of the corpus, copied (their folders kept) into ``workdir``."""
    out = workdir / f"subset-{n}"
    for p in sorted(corpus.rglob("*.md"))[:n]:
        dst = out / p.relative_to(corpus)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dst)
    return out


def rate(emb: Embedder, texts: list[str], runs: int) -> dict:
    secs = []
    for i in range(runs):
        t = time.perf_counter()
        emb.embed(texts)
        _sync()
        secs.append(time.perf_counter() - t)
        log(
            f"  run {i + 1}/{runs}: {len(texts):,} chunks in {secs[-1]:.2f} s = {len(texts) / secs[-1]:,.0f}/s"
        )
    rates = [len(texts) / s for s in secs]
    return {"n": len(texts), "seconds": summary(secs), "chunks_per_s": summary(rates)}


def synthetic(base: list[str], n: int) -> list[str]:
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(n)]


def breakdown(emb: Embedder, texts: list[str], runs: int, *, model_path: str, smoke: bool = False) -> dict:
    """Tokenizing alone (CPU); sentence-transformers' own ``encode`` (tokenize, then run, batch after
    batch); then the forward pass alone on pre-tokenized, length-sorted GPU batches: fp16 (the
    Embedder's own model) and bf16 (a fresh copy cast from the fp32 weights)."""
    import torch

    model, bs = emb.model, emb.batch_size
    prepare = getattr(model, "preprocess", None) or model.tokenize  # sentence-transformers >= 6 | 5
    order = np.argsort([-len(t) for t in texts], kind="stable")  # as sentence-transformers sorts
    ordered = [texts[i] for i in order]
    tok_s = []
    for _ in range(runs):
        t = time.perf_counter()
        batches = [prepare(ordered[i : i + bs]) for i in range(0, len(ordered), bs)]
        tok_s.append(time.perf_counter() - t)
    tokens = int(sum(int(b["attention_mask"].sum()) for b in batches))
    padded = int(sum(b["input_ids"].numel() for b in batches))
    out = {
        "n": len(texts),
        "batch_size": bs,
        "tokens": tokens,
        "padding_share": 1 - tokens / padded,
        "tokenize_chunks_per_s": summary([len(texts) / s for s in tok_s]),
    }
    st_s = []
    for _ in range(runs):  # the plain sentence-transformers encode, for comparison with the Embedder's
        t = time.perf_counter()
        model.encode(texts, batch_size=bs, normalize_embeddings=True, convert_to_numpy=True)
        _sync()
        st_s.append(time.perf_counter() - t)
    out["sentence_transformers_encode_chunks_per_s"] = summary([len(texts) / s for s in st_s])
    log(
        f"  sentence-transformers encode (not pipelined): {len(texts) / statistics.median(st_s):,.0f} chunks/s"
    )
    if not torch.cuda.is_available():
        if not smoke:
            return out
        batches = batches[:1]  # a CPU smoke run still goes through the forward-only code, on one batch
    dev = next(model.parameters()).device
    gpu = [
        {k: v.to(dev, non_blocking=True) if hasattr(v, "to") else v for k, v in b.items()} for b in batches
    ]
    for dtype in (torch.float16, torch.bfloat16):
        m = model if dtype == torch.float16 else Embedder(model_path, device="cpu").model.to(dev, dtype=dtype)
        with torch.inference_mode():
            m(dict(gpu[0]))  # warm-up of this dtype's kernels
            _sync()
            secs = []
            for _ in range(runs):
                t = time.perf_counter()
                for b in gpu:
                    e = m(dict(b))["sentence_embedding"]
                    torch.nn.functional.normalize(e, dim=1)
                _sync()
                secs.append(time.perf_counter() - t)
        n = sum(len(b["input_ids"]) for b in gpu)
        out[f"forward_{str(dtype).split('.')[-1]}_chunks_per_s"] = summary([n / s for s in secs])
        log(f"  forward only {dtype}: {n / statistics.median(secs):,.0f} chunks/s")
        del m
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bundled", help="'bundled' or a sentence-transformers folder")
    ap.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook")
    ap.add_argument("--out", type=Path, required=True, help="folder for embed_gpu.json and embed_gpu.md")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per embedding shape")
    ap.add_argument("--ingest-runs", type=int, default=5, help="timed whole-handbook ingests")
    ap.add_argument("--sample", type=int, default=100_000, help="synthetic chunks per timed run")
    ap.add_argument("--breakdown-runs", type=int, default=3, help="timed runs of each breakdown step")
    ap.add_argument("--full", type=int, default=1_000_000, help="the one large run (chunks)")
    ap.add_argument("--full-max-s", type=float, default=60.0, help="run --full only if predicted this fast")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, for a CPU check of the script")
    a = ap.parse_args()
    if a.smoke:
        a.runs, a.ingest_runs, a.sample, a.full, a.full_max_s, a.breakdown_runs = 2, 1, 64, 128, 60.0, 1
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="embed-gpu-"))
    import torch

    res: dict = {
        "command": " ".join(sys.argv),
        "host": platform.node(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tokenizers_parallelism": os.environ["TOKENIZERS_PARALLELISM"],
        "cpu_count": os.cpu_count(),
    }
    log(f"torch {res['torch']}, GPU {res['gpu']}, {res['cpu_count']} CPUs")

    t = time.perf_counter()
    inner = Embedder(a.model, device="auto")
    _sync()
    res["model_load_s"] = time.perf_counter() - t
    res["device"], res["batch_size"] = str(inner.model.device), inner.batch_size
    res["dtype"] = str(next(inner.model.parameters()).dtype)
    if a.smoke:
        inner.pipelined = True  # the CPU smoke run goes through the CUDA path's encoder too
    inner.embed(["warm-up text"] * (16 if a.smoke else 2048))
    log(
        f"model loaded in {res['model_load_s']:.1f} s on {res['device']} ({res['dtype']}, batch {inner.batch_size})"
    )

    emb = TimedEmbedder(inner)
    folder = a.corpus if not a.smoke else subset(a.corpus, 4, work)
    log("ingest warm-up: a 100-file subset")
    res["ingest_warmup"] = ingest_once(subset(a.corpus, 100 if not a.smoke else 2, work), emb, work, a.model)
    runs = []
    for i in range(a.ingest_runs):
        emb.record, emb.texts = i == 0, emb.texts if i else []
        r = ingest_once(folder, emb, work, a.model)
        runs.append(r)
        log(
            f"ingest {i + 1}/{a.ingest_runs}: {r['docs']} docs, {r['chunks']} chunks in {r['wall_s']:.1f} s "
            f"({r['chunks_per_s']:,.0f} chunks/s; {r['embed_s']:.1f} s inside embed)"
        )
    emb.record = False
    res["ingest"] = {
        "folder": str(folder),
        "runs": runs,
        "wall_s": summary([r["wall_s"] for r in runs]),
        "embed_s": summary([r["embed_s"] for r in runs]),
        "chunks_per_s": summary([r["chunks_per_s"] for r in runs]),
    }
    base = emb.texts if not a.smoke else emb.texts[:24]
    lens = [len(inner.tokenizer(t, add_special_tokens=True)["input_ids"]) for t in base[:2000]]
    res["chunk_tokens"] = {
        "median": statistics.median(lens),
        "mean": statistics.fmean(lens),
        "max": max(lens),
    }
    log(f"{len(base):,} handbook chunks; tokens per chunk median {res['chunk_tokens']['median']:.0f}")

    log("handbook chunks, one embed call per run")
    inner.embed(base)  # warm-up at this shape
    res["handbook"] = rate(inner, base, a.runs)

    texts = synthetic(base, a.sample)
    log(f"synthetic sample: {a.sample:,} chunks")
    inner.embed(texts[: min(len(texts), 20_000 if not a.smoke else 16)])  # warm-up
    res["sample"] = rate(inner, texts, a.runs)
    med = res["sample"]["chunks_per_s"]["median"]
    predicted = a.full / med
    res["full"] = {"n": a.full, "predicted_s": predicted}
    if predicted <= a.full_max_s:
        log(f"the full run: {a.full:,} chunks (predicted {predicted:.0f} s)")
        big = synthetic(base, a.full)
        t = time.perf_counter()
        inner.embed(big)
        _sync()
        secs = time.perf_counter() - t
        res["full"].update({"measured": True, "seconds": secs, "chunks_per_s": a.full / secs})
        log(f"  {a.full:,} chunks in {secs:.1f} s = {a.full / secs:,.0f}/s (one run)")
        del big
    else:
        res["full"].update({"measured": False, "chunks_per_s": med})
        log(
            f"the full run would take ~{predicted:.0f} s > {a.full_max_s:.0f} s: extrapolated from the sample"
        )

    sample = base[:256]  # the reference: fp32 weights on the CPU, never cast
    cos = np.sum(Embedder(a.model, device="cpu").embed(sample) * inner.embed(sample), axis=1)
    res["cosine_fp16_vs_fp32"] = {"n": len(sample), "min": float(cos.min()), "mean": float(cos.mean())}
    log(f"fp16 vs fp32 cosine: min {cos.min():.5f}")

    log("breakdown on the sample: tokenizer alone, forward alone")
    res["breakdown"] = breakdown(
        inner, texts[: 16 if a.smoke else 100_000], a.breakdown_runs, model_path=a.model, smoke=a.smoke
    )

    (a.out / "embed_gpu.json").write_text(json.dumps(res, indent=1))
    (a.out / "embed_gpu.md").write_text(markdown(res))
    print(markdown(res))
    shutil.rmtree(work, ignore_errors=True)
    log(f"wrote {a.out / 'embed_gpu.json'} and {a.out / 'embed_gpu.md'}")


def _mmm(s: dict, fmt: str = ",.0f") -> str:
    return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"


def markdown(r: dict) -> str:
    ing, b = r["ingest"], r["breakdown"]
    full = r["full"]
    full_line = (
        f"| {full['n']:,} synthetic chunks, one run | {full['chunks_per_s']:,.0f} | measured: {full['seconds']:.1f} s |"
        if full.get("measured")
        else f"| {full['n']:,} synthetic chunks | ~{full['chunks_per_s']:,.0f} | NOT run: extrapolated from the "
        f"sample's median (~{full['predicted_s']:.0f} s) |"
    )
    lines = [
        f"GPU: {r['gpu']} · torch {r['torch']} · {r['device']} {r['dtype']} · batch {r['batch_size']} · "
        f"model load {r['model_load_s']:.1f} s (cold) · chunk tokens median {r['chunk_tokens']['median']:.0f}, "
        f"max {r['chunk_tokens']['max']}",
        "",
        "| what | chunks/s median (min–max) | notes |",
        "|---|---:|---|",
        f"| whole-handbook ingest ({ing['runs'][0]['docs']} docs, {ing['runs'][0]['chunks']:,} chunks) | "
        f"{_mmm(ing['chunks_per_s'])} | wall {_mmm(ing['wall_s'], '.1f')} s, of which embed "
        f"{_mmm(ing['embed_s'], '.1f')} s; {len(ing['runs'])} runs after a warm-up |",
        f"| handbook chunks, one call ({r['handbook']['n']:,}) | {_mmm(r['handbook']['chunks_per_s'])} | "
        f"{len(r['handbook']['chunks_per_s']['runs'])} runs after a warm-up |",
        f"| synthetic sample ({r['sample']['n']:,}) | {_mmm(r['sample']['chunks_per_s'])} | "
        f"{len(r['sample']['chunks_per_s']['runs'])} runs after a warm-up |",
        full_line,
        f"| tokenizer alone ({b['n']:,}, CPU, {r['cpu_count']} cores) | {_mmm(b['tokenize_chunks_per_s'])} | "
        f"padding {b['padding_share']:.0%} of the batch tokens |",
    ]
    lines.append(
        f"| sentence-transformers encode, not pipelined ({b['n']:,}) | "
        f"{_mmm(b['sentence_transformers_encode_chunks_per_s'])} | what the Embedder did before |"
    )
    for k in ("forward_float16_chunks_per_s", "forward_bfloat16_chunks_per_s"):
        if k in b:
            lines.append(
                f"| model forward alone, {k.split('_')[1]} | {_mmm(b[k])} | pre-tokenized, on the GPU |"
            )
    c = r["cosine_fp16_vs_fp32"]
    lines += ["", f"fp16 vs fp32 cosine over {c['n']} chunks: min {c['min']:.5f}, mean {c['mean']:.5f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
