"""Evaluation: answer a JSONL question set under one or more configurations and score it.

Input lines: ``{"id","question","answer","must_contain":[…],"gold_docs":[paths],"kind"}`` (only id and
question are required). For every configuration this records what ``ask --json`` returns plus a
document-level retrieval ranking, then computes retrieval hit@1/5/10 and MRR against gold_docs,
answer accuracy (every must_contain string in the answer, case-insensitive) overall and per kind,
"key fact in passages shown" (every must_contain string in the text of the passages the answerer saw,
so a wrong answer can be blamed on retrieval or on the answerer), citation precision, refusal
precision/recall (kind "unanswerable" vs refused) and latency p50/p95. Results: one Markdown
table with the configurations side by side, ``answers.jsonl``, ``metrics.json`` and PNG plots.
Gold paths match a retrieved path when one is a path-suffix of the other, so a gold
``content/x.md`` matches a document ingested as ``content/x.md`` from the corpus root.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ConfigError

KINDS = {"fact", "multi", "table", "howto", "unanswerable"}
ANSWERABLE_KINDS = ("fact", "multi", "table", "howto")  # the order of the per-kind rows in the table


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str = ""
    must_contain: tuple[str, ...] = ()
    gold_docs: tuple[str, ...] = ()
    kind: str = "fact"


def load_questions(path: Path) -> list[Question]:
    out, seen = [], set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"Question file {path} does not exist.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(
                f"{path}:{n} is not valid JSON ({e.msg}). Each line must be one JSON object."
            ) from None
        if not isinstance(d, dict) or not d.get("id") or not d.get("question"):
            raise ConfigError(
                f'{path}:{n} needs at least "id" and "question", e.g. {{"id": "q1", "question": "…"}}'
            )
        kind = d.get("kind", "fact")
        if kind not in KINDS:
            raise ConfigError(f"{path}:{n}: kind {kind!r} is not one of {sorted(KINDS)}")
        if d["id"] in seen:
            raise ConfigError(f"{path}:{n}: duplicate id {d['id']!r}")
        seen.add(d["id"])
        out.append(
            Question(
                str(d["id"]),
                d["question"],
                d.get("answer", ""),
                tuple(d.get("must_contain", [])),
                tuple(d.get("gold_docs", [])),
                kind,
            )
        )
    if not out:
        raise ConfigError(f"{path} holds no questions.")
    return out


def same_doc(path: str, gold: str) -> bool:
    a, b = path.strip("/"), gold.strip("/")
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def first_gold_rank(paths: list[str], gold: tuple[str, ...]) -> int | None:
    for i, p in enumerate(paths, 1):
        if any(same_doc(p, g) for g in gold):
            return i
    return None


@dataclass
class Record:
    config: str
    q: Question
    answer: dict
    ranked_paths: list[str]
    search_ms: float

    def as_json(self) -> dict:
        return {
            "config": self.config,
            "id": self.q.id,
            "kind": self.q.kind,
            "gold_docs": list(self.q.gold_docs),
            "must_contain": list(self.q.must_contain),
            "ranked_paths": self.ranked_paths,
            "search_ms": round(self.search_ms, 1),
            **self.answer,
        }


@dataclass
class Metrics:
    config: str
    n: int = 0
    hit: dict[int, float] = field(default_factory=dict)
    mrr: float = 0.0
    accuracy: float | None = None
    accuracy_by_kind: dict[str, float | None] = field(default_factory=dict)
    key_fact_in_passages: float | None = None
    key_fact_by_kind: dict[str, float | None] = field(default_factory=dict)
    citation_precision: float | None = None
    refusal_precision: float | None = None
    refusal_recall: float | None = None
    answer_p50_ms: float = 0.0
    answer_p95_ms: float = 0.0
    search_p50_ms: float = 0.0
    concurrency: int = 1  # questions answered at once when the latencies were measured


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(p * (len(v) - 1))))]


def shown_text(answer: dict, *, shown: int = 5) -> str:
    """The text of the passages the answerer saw, joined.

    Uses ``answer["passages"]`` (``[{"path","title","text"}, …]``, exactly what was put in front of the
    answerer) when the answer carries it; otherwise falls back to the first ``shown`` hits of
    ``answer["retrieved"]`` (``answering.sources`` of them go into the prompt), which over-counts when
    the prompt trimmed a source to fit the context.
    """
    passages = answer.get("passages")
    if passages is None:
        passages = answer.get("retrieved", [])[:shown]
    return "\n".join(p.get("text") or "" for p in passages)


def _all_in(keys: tuple[str, ...], text: str) -> bool:
    low = text.lower()
    return all(s.lower() in low for s in keys)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def score(config: str, records: list[Record], *, shown: int = 5, concurrency: int = 1) -> Metrics:
    """Compute every metric over one configuration's records (see the module docstring).

    ``shown`` is how many retrieved hits count as "passages shown" for answers without ``passages``.
    """
    m = Metrics(config, n=len(records), concurrency=concurrency)
    with_gold = [r for r in records if r.q.gold_docs]
    if with_gold:
        ranks = [first_gold_rank(r.ranked_paths, r.q.gold_docs) for r in with_gold]
        for k in range(1, 11):
            m.hit[k] = sum(1 for r in ranks if r is not None and r <= k) / len(ranks)
        m.mrr = sum(1.0 / r for r in ranks if r is not None) / len(ranks)
    graded = [r for r in records if r.q.must_contain and r.q.kind != "unanswerable" and r.answer]
    correct = {
        id(r): not r.answer["refused"] and _all_in(r.q.must_contain, r.answer["answer"]) for r in graded
    }
    in_passages = {id(r): _all_in(r.q.must_contain, shown_text(r.answer, shown=shown)) for r in graded}
    m.accuracy = _share(list(correct.values()))
    m.key_fact_in_passages = _share(list(in_passages.values()))
    order = {k: i for i, k in enumerate(ANSWERABLE_KINDS)}
    for kind in sorted({r.q.kind for r in graded}, key=lambda k: (order.get(k, len(order)), k)):
        of_kind = [id(r) for r in graded if r.q.kind == kind]
        m.accuracy_by_kind[kind] = _share([correct[i] for i in of_kind])
        m.key_fact_by_kind[kind] = _share([in_passages[i] for i in of_kind])
    cited = [
        (c["path"], r.q.gold_docs)
        for r in records
        if r.q.gold_docs and r.answer
        for c in r.answer["citations"]
    ]
    if cited:
        m.citation_precision = sum(1 for p, gold in cited if any(same_doc(p, g) for g in gold)) / len(cited)
    answered = [r for r in records if r.answer]
    refused = [r for r in answered if r.answer["refused"]]
    unans = [r for r in answered if r.q.kind == "unanswerable"]
    if refused:
        m.refusal_precision = sum(1 for r in refused if r.q.kind == "unanswerable") / len(refused)
    if unans:
        m.refusal_recall = sum(1 for r in unans if r.answer["refused"]) / len(unans)
    lat = [r.answer["timings_ms"].get("total", 0.0) for r in answered]
    m.answer_p50_ms, m.answer_p95_ms = _pct(lat, 0.5), _pct(lat, 0.95)
    m.search_p50_ms = statistics.median([r.search_ms for r in records]) if records else 0.0
    return m


def _f(v: float | None, pct: bool = True) -> str:
    return "–" if v is None else (f"{v:.2f}" if pct else f"{v:.0f}")


def table(metrics: list[Metrics]) -> str:
    kinds = [k for k in ANSWERABLE_KINDS if any(k in m.accuracy_by_kind for m in metrics)]
    kinds += sorted({k for m in metrics for k in m.accuracy_by_kind} - set(kinds))
    rows = [
        ("questions", [str(m.n) for m in metrics]),
        ("hit@1", [_f(m.hit.get(1)) for m in metrics]),
        ("hit@5", [_f(m.hit.get(5)) for m in metrics]),
        ("key fact in passages shown", [_f(m.key_fact_in_passages) for m in metrics]),
        ("hit@10", [_f(m.hit.get(10)) for m in metrics]),
        ("MRR", [_f(m.mrr) for m in metrics]),
        ("answer accuracy", [_f(m.accuracy) for m in metrics]),
        *((f"accuracy: {k}", [_f(m.accuracy_by_kind.get(k)) for m in metrics]) for k in kinds),
        ("citation precision", [_f(m.citation_precision) for m in metrics]),
        ("refusal precision", [_f(m.refusal_precision) for m in metrics]),
        ("refusal recall", [_f(m.refusal_recall) for m in metrics]),
        ("answer p50 (ms)", [_f(m.answer_p50_ms, False) for m in metrics]),
        ("answer p95 (ms)", [_f(m.answer_p95_ms, False) for m in metrics]),
        ("search p50 (ms)", [f"{m.search_p50_ms:.1f}" for m in metrics]),
        ("questions answered at once", [str(m.concurrency) for m in metrics]),
    ]
    head = "| metric | " + " | ".join(m.config for m in metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    return head + "\n".join(f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows) + "\n"


def plots(metrics: list[Metrics], records: dict[str, list[Record]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in metrics:
        if m.hit:
            ks = sorted(m.hit)
            ax.plot(ks, [m.hit[k] for k in ks], marker="o", label=m.config)
    ax.set(xlabel="k (documents)", ylabel="hit@k", title="Retrieval: gold document in top k", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "hit_at_k.png", dpi=110)
    files.append(out / "hit_at_k.png")
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, recs in records.items():
        lat = [r.answer["timings_ms"].get("total", 0.0) / 1000 for r in recs if r.answer]
        if lat:
            ax.hist(lat, bins=20, alpha=0.5, label=name)
    ax.set(xlabel="seconds per question (ask, end to end)", ylabel="questions", title="Answer latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    files.append(out / "latency.png")
    plt.close(fig)
    return files


def run_config(
    name: str,
    assistant,
    questions: list[Question],
    *,
    who,
    answer: bool = True,
    progress=None,
    concurrency: int = 1,
) -> list[Record]:
    """Search and answer every question; the records come back in question order.

    ``concurrency`` > 1 answers that many questions at once from threads (worth it against a batching
    ``llm.endpoint`` such as ``assistant serve-llm``); each record's latency is still its own question's
    wall time, which under concurrency includes waiting for the shared model.
    """

    def one(q: Question) -> Record:
        t = time.perf_counter()
        hits = assistant.search(q.question, who=who, k=10)
        search_ms = (time.perf_counter() - t) * 1e3
        ans: dict = {}
        if answer:
            a = assistant.ask(q.question, who=who)
            ans = a.as_json() | {"model_answer": a.model_answer}
        if progress:
            progress(1)
        return Record(name, q, ans, [h.path for h in hits], search_ms)

    if concurrency <= 1:
        return [one(q) for q in questions]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval") as pool:
        return list(pool.map(one, questions))  # map keeps the question order
