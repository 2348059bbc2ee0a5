"""Scale benchmark: a synthetic tenant of N chunks searched under access rules (issue #20 §1).

    python scripts/bench_scale.py --chunks 100000            # table on stdout, JSON in scripts/results/
    python scripts/bench_scale.py --chunks 1000000 --kinds flat,ivf,ivfpq --hnsw-max 200000

What it builds (no real embedder, so a million chunks take minutes):
- text: chunks of 4–9 sentences drawn from the Sourcegraph handbook, so FTS5 sees real vocabulary;
- vectors: 384-d unit vectors from a clustered low-dimensional latent model (2,000 topics in 48-d,
  projected, plus noise) — neighbourhoods like real embeddings, not the near-ties of pure noise;
- access: 10,000 users and 1,000 groups (Zipf-like sizes) at corp.example; 20 % of documents are
  company-wide (``domain:corp.example``), the rest readable by 1–5 principals (users or groups);
- askers: the administrator; an employee (own grants + 8 groups + company-wide); an external
  contractor reading ~5 %; a narrowly scoped external reading ~0.1 %; a Slack channel of 30
  employees (a chunk counts only if all 30 may read it).
What it measures: build time, disk size, start-up (Engine open: FAISS load + reconciliation with
SQLite), RSS after start-up and peak, hybrid search p50/p95 per asker (Engine.search, warm-up first,
then --queries handbook-like questions), and per index kind: build time, memory, recall@10 against
exact search (unfiltered and for the 5 % and 0.1 % askers) and per-query latency.
Start-up and search run in a fresh child process, so RSS is that of a process that just opened the data.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assistant.documents import Access, Chunk, Document, Principals

HANDBOOK = REPO.parent / "shared" / "corpora" / "sourcegraph-handbook"
if not HANDBOOK.exists():
    HANDBOOK = Path("/work/shared/corpora/sourcegraph-handbook")
DIM, LATENT, TOPICS, SEED = 384, 48, 2000, 20
USERS, GROUPS, DOMAIN = 10_000, 1_000, "corp.example"


# -- synthetic content --------------------------------------------------------------------------
def handbook_sentences() -> list[str]:
    out: list[str] = []
    for p in sorted(HANDBOOK.rglob("*.md")):
        text = re.sub(
            r"```.*?```|\[([^\]]*)\]\([^)]*\)|[#*>`|_]", r"\1", p.read_text(errors="ignore"), flags=re.DOTALL
        )
        for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text):
            s = " ".join(s.split())
            if 40 <= len(s) <= 300:
                out.append(s)
    return out


class LatentModel:
    """Clustered unit vectors: topic centre (48-d) + noise, projected to 384-d, plus a little noise."""

    def __init__(self, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.centres = rng.standard_normal((TOPICS, LATENT)).astype(np.float32)
        self.proj = (rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)

    def sample(self, topics: np.ndarray, rng: np.random.Generator, spread: float = 0.6) -> np.ndarray:
        z = self.centres[topics] + spread * rng.standard_normal((len(topics), LATENT)).astype(np.float32)
        v = z @ self.proj + 0.15 * rng.standard_normal((len(topics), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)  # (n, 384) float32


def group_weights() -> np.ndarray:
    w = 1.0 / (np.arange(GROUPS) + 10.0)
    return w / w.sum()


def doc_access(rng: np.random.Generator, gw: np.ndarray) -> Access:
    if rng.random() < 0.2:
        return Access(domains=frozenset([DOMAIN]))
    users, groups = set(), set()
    for _ in range(int(rng.integers(1, 6))):
        if rng.random() < 0.5:
            users.add(f"u{int(rng.integers(USERS))}@{DOMAIN}")
        else:
            groups.add(f"g{int(rng.choice(GROUPS, p=gw))}@{DOMAIN}")
    return Access(users=frozenset(users), groups=frozenset(groups))


# -- build ------------------------------------------------------------------------------------------
def build(data_dir: Path, n_chunks: int, *, batch_docs: int = 2000) -> tuple[dict, np.ndarray]:
    from assistant.store import Store

    sentences = handbook_sentences()
    rng = np.random.default_rng(SEED)
    model, gw = LatentModel(), group_weights()
    store = Store(data_dir / "store.sqlite")
    store.set_meta("embedding_model", f"synthetic:{DIM}")
    store.set_meta("embedding_dim", str(DIM))
    all_vecs = np.empty((n_chunks, DIM), dtype=np.float32)
    all_ids = np.empty(n_chunks, dtype=np.int64)
    t0, made, doc_no = time.perf_counter(), 0, 0
    while made < n_chunks:
        items = []
        for _ in range(batch_docs):
            if made >= n_chunks:
                break
            n = min(int(rng.integers(1, 20)), n_chunks - made)
            topic = int(rng.integers(TOPICS))
            topics = np.full(n, topic) if rng.random() < 0.7 else rng.integers(TOPICS, size=n)
            vecs = model.sample(topics, rng)
            title = sentences[int(rng.integers(len(sentences)))][:60]
            chunks = []
            for o in range(n):
                text = " ".join(
                    sentences[int(i)] for i in rng.integers(len(sentences), size=int(rng.integers(4, 10)))
                )
                chunks.append(
                    Chunk(
                        doc_id=f"d{doc_no}",
                        ordinal=o,
                        text=text,
                        heading_path=(title,),
                        start=0,
                        end=len(text),
                    )
                )
            doc = Document(
                source="synthetic",
                id=f"d{doc_no}",
                path=f"synthetic/d{doc_no}.md",
                title=title,
                mime="text/markdown",
                content=b"",
                access=doc_access(rng, gw),
                version="1",
            )
            items.append((doc, f"h{doc_no}", chunks, vecs))
            doc_no += 1
            made += n
        ids = store.add_documents_bulk(items)
        start = made - len(ids)
        all_ids[start:made] = ids
        all_vecs[start:made] = np.concatenate([it[3] for it in items])
        if doc_no % (batch_docs * 10) == 0:
            print(f"  {made:,} chunks, {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    t_store = time.perf_counter() - t0
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return {"store_s": round(t_store, 1), "documents": doc_no}, (all_ids, all_vecs)


def pick_askers(data_dir: Path, rng: np.random.Generator) -> dict:
    """Principals of each asker, chosen from the built tenant's real group sizes."""
    from assistant.store import Store

    store = Store(data_dir / "store.sqlite")
    docs = store.document_count()
    sizes = dict(
        store.execute(
            "SELECT principal, count(*) FROM access WHERE principal LIKE 'group:%' GROUP BY principal"
        )
    )
    store.close()
    by_size = sorted(sizes, key=sizes.get, reverse=True)
    gw = group_weights()

    def member_groups(k: int) -> list[str]:
        return [f"g{g}@{DOMAIN}" for g in rng.choice(GROUPS, size=k, replace=False, p=gw)]

    contractor, got = [], 0
    for g in by_size:  # biggest groups until ~5 % of documents
        if got >= 0.05 * docs:
            break
        contractor.append(g.split(":", 1)[1])
        got += sizes[g]
    narrow = min(by_size, key=lambda g: abs(sizes[g] - 0.001 * docs)).split(":", 1)[1]
    employees = [
        {"email": f"u{int(u)}@{DOMAIN}", "groups": member_groups(8)}
        for u in rng.choice(USERS, size=31, replace=False)
    ]
    return {
        "admin": {"everything": True},
        "employee": employees[0],
        "contractor_5pct": {"email": "c1@partner.example", "groups": contractor},
        "narrow_0.1pct": {"email": "c2@partner.example", "groups": [narrow]},
        "channel_30": {"members": employees[1:]},
    }


def as_who(spec: dict):
    from assistant.retrieval import Audience

    if "members" in spec:
        return Audience(tuple(Principals(m["email"], frozenset(m["groups"])) for m in spec["members"]))
    if spec.get("everything"):
        return Principals(everything=True)
    return Principals(spec["email"], frozenset(spec["groups"]))


def queries(n: int, rng: np.random.Generator) -> list[str]:
    sents = handbook_sentences()
    out = []
    for i in rng.choice(len(sents), size=n, replace=False):
        words = sents[int(i)].split()
        a = int(rng.integers(0, max(1, len(words) - 8)))
        out.append("How do we " + " ".join(words[a : a + int(rng.integers(4, 9))]).rstrip(".?!") + "?")
    return out


def query_vectors(n: int) -> np.ndarray:
    rng = np.random.default_rng(SEED + 1)
    return LatentModel().sample(rng.integers(TOPICS, size=n), rng, spread=0.8)  # (n, 384)


# -- the child: start-up, RSS, hybrid latency ----------------------------------------------------
class SyntheticEmbedder:
    """Maps each benchmark question to its prepared vector; the engine never loads a real model."""

    name, dim, tokenizer = "synthetic", DIM, None

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self._v = dict(zip(texts, vectors))

    def embed_query(self, text: str) -> np.ndarray:
        return self._v[text]


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(data_dir: Path, kind: str, askers: dict, n_queries: int) -> dict:
    from assistant.engine import Engine
    from assistant.retrieval import Audience
    from assistant.settings import load_settings

    qs = queries(n_queries + 10, np.random.default_rng(SEED + 2))
    emb = SyntheticEmbedder(qs, query_vectors(len(qs)))
    settings = load_settings(environ={}, overrides={"data_dir": str(data_dir), "index": {"kind": kind}})
    t0 = time.perf_counter()
    engine = Engine.open(settings, embedder=emb)
    startup = time.perf_counter() - t0
    out = {
        "startup_s": round(startup, 2),
        "rss_after_load_mb": round(rss_mb()),
        "repaired": engine.repaired,
        "index_loaded": type(engine.index._inner()).__name__,
        "askers": {},
    }
    for name, spec in askers.items():
        who = as_who(spec)
        t1 = time.perf_counter()
        engine.search(qs[0], who=who, k=8, per_doc=None)  # cold: computes and caches the allowed ids
        cold = (time.perf_counter() - t1) * 1e3
        allowed = engine.retriever.allowed(Audience.of(who))
        for q in qs[1:10]:
            engine.search(q, who=who, k=8, per_doc=None)
        lat, parts = [], {"dense_ms": [], "keyword_ms": [], "acl_ms": []}
        n_hits = []
        for q in qs[10:]:
            t1 = time.perf_counter()
            hits, timings = engine.retriever.search_timed(q, who=who, k=8, per_doc=None)
            lat.append((time.perf_counter() - t1) * 1e3)
            n_hits.append(len(hits))
            for p, values in parts.items():
                values.append(timings.get(p, 0.0))
        out["askers"][name] = {
            "reads_chunks": None if allowed is None else len(allowed),
            "cold_first_ms": round(cold, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p95_ms": round(float(np.percentile(lat, 95)), 1),
            **{f"{p}_p50": round(float(np.percentile(v, 50)), 1) for p, v in parts.items()},
            "mean_hits": round(float(np.mean(n_hits)), 1),
        }
    out["rss_peak_mb"] = round(rss_mb("VmHWM"))
    engine.store.close()
    return out


# -- index kinds: recall and memory -------------------------------------------------------------------
def index_kinds(
    ids: np.ndarray,
    vecs: np.ndarray,
    kinds: list[str],
    allowed_sets: dict[str, np.ndarray],
    *,
    hnsw_max: int,
    n_q: int = 100,
) -> dict:
    from assistant.index import VectorIndex

    row_of = {"base": int(ids[0])}
    assert np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))), (
        "chunk ids are expected to be contiguous"
    )

    def source(want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        want = np.sort(want)
        return want, vecs[want - row_of["base"]]

    qv = query_vectors(n_q)
    out = {}
    for kind in kinds:
        sub_ids, sub_vecs = ids, vecs
        if kind == "hnsw" and len(ids) > hnsw_max:
            sub_ids, sub_vecs = ids[:hnsw_max], vecs[:hnsw_max]
        ix = VectorIndex(DIM, kind=kind, vector_source=source)
        t0 = time.perf_counter()
        ix.rebuild(sub_ids, sub_vecs)
        res = {
            "vectors": len(sub_ids),
            "build_s": round(time.perf_counter() - t0, 1),
            "memory_mb": round(ix.memory_bytes() / 2**20, 1),
            "inner": type(ix._inner()).__name__,
        }
        for label, allowed in [("all", None), *allowed_sets.items()]:
            mask_ids = sub_ids if allowed is None else np.intersect1d(allowed, sub_ids)
            if len(mask_ids) == 0:
                continue
            exact = mask_ids[np.argsort(-(vecs[mask_ids - row_of["base"]] @ qv.T), axis=0)[:10]]  # (10, n_q)
            rec, lat = [], []
            for j in range(n_q):
                t1 = time.perf_counter()
                got = ix.search(qv[j], 10, allowed=None if allowed is None else mask_ids)
                lat.append((time.perf_counter() - t1) * 1e3)
                rec.append(len({i for i, _ in got} & set(exact[:, j].tolist())) / min(10, len(mask_ids)))
            res[f"recall@10_{label}"] = round(float(np.mean(rec)), 3)
            res[f"p50_ms_{label}"] = round(float(np.percentile(lat, 50)), 2)
        out[kind] = res
        print(f"  index {kind}: {res}", file=sys.stderr, flush=True)
        del ix
    return out


def dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--data-dir", type=Path, default=None, help="default: /tmp/bench-scale-<chunks>")
    ap.add_argument("--serve-kind", default="auto", help="index kind the engine serves hybrid search with")
    ap.add_argument("--kinds", default="flat,hnsw,ivf,ivfpq", help="index kinds to measure recall/memory for")
    ap.add_argument(
        "--hnsw-max", type=int, default=300_000, help="HNSW is built on at most this many vectors"
    )
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--reuse", action="store_true", help="reuse an existing data dir (skip the build)")
    ap.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    ap.add_argument("--measure-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.measure_child:  # child process: start-up, RSS and latency on a fresh process
        spec = json.loads(args.measure_child.read_text())
        print(json.dumps(measure(Path(spec["data_dir"]), spec["kind"], spec["askers"], spec["queries"])))
        return

    data_dir = args.data_dir or Path(f"/tmp/bench-scale-{args.chunks}")
    result: dict = {"chunks": args.chunks, "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    t_all = time.perf_counter()
    if not args.reuse:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        print(f"building {args.chunks:,} chunks in {data_dir}", file=sys.stderr)
        stats, (ids, vecs) = build(data_dir, args.chunks)
    else:
        from assistant.store import Store

        store = Store(data_dir / "store.sqlite")
        ids, vecs = store.vectors(dim=DIM)
        store.close()
        stats = {"reused": True}
    from assistant.engine import Engine  # noqa: F401  (import cost outside the timings)
    from assistant.index import VectorIndex

    t0 = time.perf_counter()
    serve = VectorIndex(DIM, kind=args.serve_kind)
    serve.rebuild(ids, vecs)
    serve.save(data_dir / "index.faiss")
    stats["index_s"] = round(time.perf_counter() - t0, 1)
    stats["serve_index"] = type(serve._inner()).__name__
    del serve
    result["build"] = stats
    result["disk_mb"] = dir_mb(data_dir)

    askers = pick_askers(data_dir, np.random.default_rng(SEED + 3))
    spec_file = data_dir / "measure.json"
    spec_file.write_text(
        json.dumps(
            {"data_dir": str(data_dir), "kind": args.serve_kind, "askers": askers, "queries": args.queries}
        )
    )
    print("measuring start-up and hybrid search in a fresh process", file=sys.stderr, flush=True)
    child = subprocess.run(
        [sys.executable, __file__, "--measure-child", str(spec_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        sys.exit(f"measuring failed:\n{child.stderr[-4000:]}")
    result["serve"] = json.loads(child.stdout.strip().splitlines()[-1])

    from assistant.store import Store

    store = Store(data_dir / "store.sqlite")
    allowed_sets = {
        name: store.allowed_chunk_ids(as_who(askers[name]).tokens())
        for name in ("contractor_5pct", "narrow_0.1pct")
    }
    store.close()
    kinds = [k for k in args.kinds.split(",") if k]
    result["index_kinds"] = index_kinds(ids, vecs, kinds, allowed_sets, hnsw_max=args.hnsw_max)
    result["total_s"] = round(time.perf_counter() - t_all, 1)
    result["load_avg_end"] = os.getloadavg()[0]

    out_dir = REPO / "scripts" / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"bench_scale_{args.chunks}.json"
    out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"\nJSON: {out}")
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


def print_table(r: dict) -> None:
    s = r["serve"]
    print(
        f"\n{r['chunks']:,} chunks / {r['build'].get('documents', '?')} documents on {r['cpus']} CPUs "
        f"(load avg {r['load_avg_start']:.1f} -> {r['load_avg_end']:.1f})"
    )
    print(
        f"build: store {r['build'].get('store_s')} s + index {r['build']['index_s']} s ({r['build']['serve_index']}); "
        f"disk {r['disk_mb']:,} MB; start-up {s['startup_s']} s; RSS after load {s['rss_after_load_mb']:,} MB, "
        f"peak {s['rss_peak_mb']:,} MB; total {r['total_s']} s"
    )
    print(
        f"\n{'asker':<16}{'reads':>10}{'1st ms':>9}{'p50 ms':>8}{'p95 ms':>8}{'dense':>7}{'kw':>7}{'acl':>7}"
    )
    for name, a in s["askers"].items():
        reads = "all" if a["reads_chunks"] is None else f"{a['reads_chunks']:,}"
        print(
            f"{name:<16}{reads:>10}{a['cold_first_ms']:>9}{a['p50_ms']:>8}{a['p95_ms']:>8}"
            f"{a['dense_ms_p50']:>7}{a['keyword_ms_p50']:>7}{a['acl_ms_p50']:>7}"
        )
    print(
        f"\n{'index':<7}{'vectors':>10}{'build s':>9}{'MB':>8}{'R@10 all':>10}{'R@10 5%':>9}{'R@10 .1%':>9}"
        f"{'ms all':>8}{'ms 5%':>7}{'ms .1%':>7}"
    )
    for kind, x in r["index_kinds"].items():
        print(
            f"{kind:<7}{x['vectors']:>10,}{x['build_s']:>9}{x['memory_mb']:>8}"
            f"{x.get('recall@10_all', '-'):>10}{x.get('recall@10_contractor_5pct', '-'):>9}"
            f"{x.get('recall@10_narrow_0.1pct', '-'):>9}{x.get('p50_ms_all', '-'):>8}"
            f"{x.get('p50_ms_contractor_5pct', '-'):>7}{x.get('p50_ms_narrow_0.1pct', '-'):>7}"
        )


if __name__ == "__main__":
    main()
