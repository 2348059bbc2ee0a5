"""Train the answer-unit scorer (assistant/sentence_scorer.py) on questions generated from the TRAINING half
of the handbook, and fit its refusal threshold on the same data with near-miss negatives. CPU only.

    PYTHONPATH=. .venv/bin/python scripts/train_sentence_scorer.py \\
        --data-dir /tmp/handbook-copy --questions /work/data/gpu_out/questions.jsonl \\
        --out assistant/models/sentence_scorer.json --report scripts/results/sentence_scorer --limit 600

(about 5-15 s per question on a shared 2-core machine; the features are checkpointed every 25 questions, so
a run can be stopped and refitted with --reuse. The shipped weights come from the checkpoint after 301
questions of that command, refitted with --reuse.)

For every generated (question, answer span, doc_path) whose span is verbatim in its passage, the question
runs through the answerer's own candidate path (retrieval → passage rerank → excerpts → answer units):
- *answerable* group: the units of the excerpts; positive = a unit whose quote holds the answer span;
  a question whose excerpts hold no such unit is a retrieval miss and is skipped;
- *near-miss* group: the same question with its own document removed from the hits (the retriever's
  next-best documents, usually of the same folder); all units negative; skipped when another document
  states the span too.
A logistic regression (numpy, L2, Newton steps) is fitted on the units of 80 % of the documents; the
other 20 % (held out by document) give the reported metrics: top-1 unit accuracy on answerable groups,
and refusal precision/recall with the threshold on the best unit's probability. The threshold is chosen
on the training documents, with near-miss groups weighted to 1/5 of questions (about the share of
unanswerable questions people ask), as the one where refusal precision and recall are closest to each
other. tests/data/dev_questions.jsonl is never read.

Features are cached in ``<report>/features.npz`` (re-run with --reuse to refit without recomputing).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def norm(text: str) -> str:
    text = _LINK.sub(r"\1", text)
    text = re.sub(r"[*_`“”\"']", "", text.lower())
    return " ".join(text.split())


def collect(args, *, checkpoint: Path | None = None) -> dict:
    from assistant import sentence_scorer as ss
    from assistant.cli_context import who
    from assistant.passages import build_excerpts
    from assistant.retrieval import Audience
    from assistant.service import Assistant
    from assistant.settings import Settings

    rows = [json.loads(line) for line in open(args.questions)]
    rows = [r for r in rows if r.get("answer") and norm(r["answer"]) in norm(r["passage"])]
    random.Random(args.seed).shuffle(rows)
    rows = rows[: args.limit] if args.limit else rows
    settings = Settings(data_dir=args.data_dir, llm={"model": "none"}, answering={"sentence_model": "none"})
    assistant = Assistant(settings, llm=None)
    answerer = assistant.answerer()
    a = settings.answering
    audience = Audience.of(who(None, []))
    xs, ys, groups, kinds, docs = [], [], [], [], []
    stats = {"questions": len(rows), "answerable": 0, "near_miss": 0, "miss": 0, "capped_out": 0}
    t0 = time.time()
    for qi, r in enumerate(rows):
        q, span = r["question"], norm(r["answer"])
        hits = assistant.engine.retriever.search(q, who=audience, k=a.candidates, per_doc=4)
        gold = [h for h in hits if h.path.endswith(r["doc_path"])]
        for kind, hs in (("answerable", hits), ("near_miss", [h for h in hits if h not in gold])):
            if not hs or (kind == "near_miss" and not gold):
                continue
            excerpts = build_excerpts(
                assistant.engine.store,
                answerer._rank_chunks(q, hs),
                max_docs=a.sources,
                max_chars=a.passage_chars,
                windows_per_doc=a.windows_per_doc,
            )
            cands = answerer._candidates(q, excerpts)
            units = [c[3] for c in cands]
            y = np.array([span in norm(u.quote) for u in units], dtype=np.float32)
            if kind == "answerable" and not y.any():
                shown = any(span in norm(e.hit.text) for e in excerpts)
                stats["capped_out" if shown else "miss"] += 1
                continue
            if kind == "near_miss" and (y.any() or any(span in norm(e.hit.text) for e in excerpts)):
                continue
            xs.append(ss.featurize(q, units, answerer.embedder))
            ys.append(y)
            groups.append(len(groups))
            kinds.append(kind)
            docs.append(r["doc_path"])
            stats[kind] += 1
        if qi % 25 == 0 or qi == len(rows) - 1:
            print(f"[{qi + 1}/{len(rows)}] {time.time() - t0:.0f}s {stats}", flush=True)
            if xs and checkpoint is not None:  # a long run can be stopped and refitted with --reuse
                np.savez_compressed(checkpoint, **_pack(xs, ys, kinds, docs, {**stats, "questions": qi + 1}))
    assistant.close()
    return _pack(xs, ys, kinds, docs, stats)


def _pack(xs, ys, kinds, docs, stats) -> dict:
    sizes = np.array([len(y) for y in ys])
    return {
        "x": np.concatenate(xs),
        "y": np.concatenate(ys),
        "group": np.repeat(np.arange(len(ys)), sizes),
        "kind": np.array(kinds),
        "doc": np.array(docs),
        "stats": json.dumps(stats),
    }


def fit_lr(x: np.ndarray, y: np.ndarray, *, l2: float, iters: int = 30) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton steps; x standardised. Returns (coef, intercept)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])  # (n, d+1)
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-6)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w[:-1], float(w[-1])


def evaluate(prob, y, group, kind, threshold, *, near_weight: float = 0.25) -> dict:
    """Top-1 accuracy on answerable groups; refusal P/R (near-miss groups weighted by ``near_weight``)."""
    top1, tp, fp, fn = [], 0.0, 0.0, 0.0
    for gi in np.unique(group):
        m = group == gi
        best = int(np.argmax(prob[m]))
        refuse = prob[m][best] < threshold
        if kind[gi] == "answerable":
            top1.append(bool(y[m][best]))
            fp += refuse
        else:
            tp += near_weight * refuse
            fn += near_weight * (not refuse)
    return {
        "top1": float(np.mean(top1)) if top1 else None,
        "refusal_precision": tp / (tp + fp) if tp + fp else None,
        "refusal_recall": tp / (tp + fn) if tp + fn else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="an ingested handbook (a copy)")
    ap.add_argument("--questions", type=Path, required=True, help="generated questions (training half)")
    ap.add_argument("--out", type=Path, required=True, help="weights JSON to write")
    ap.add_argument("--report", type=Path, required=True, help="folder for metrics.json and features.npz")
    ap.add_argument("--limit", type=int, default=900, help="questions to use (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--reuse", action="store_true", help="reuse <report>/features.npz")
    ap.add_argument("--drop", default="", help="comma-separated features left out of the fit (weight 0)")
    args = ap.parse_args(argv)
    from assistant import sentence_scorer as ss

    args.report.mkdir(parents=True, exist_ok=True)
    cache = args.report / "features.npz"
    if args.reuse and cache.is_file():
        data = dict(np.load(cache))
    else:
        data = collect(args, checkpoint=cache)
        np.savez_compressed(cache, **data)
    x, y, group, kind, doc = data["x"], data["y"], data["group"], data["kind"], data["doc"]
    dropped = [ss.FEATURES.index(f) for f in filter(None, args.drop.split(","))]
    x = x.copy()
    x[:, dropped] = 0.0  # a constant column: standardised to 0, so its weight stays 0
    rng = random.Random(args.seed)
    udocs = sorted(set(doc.tolist()))
    rng.shuffle(udocs)
    val_docs = set(udocs[: len(udocs) // 5])
    val_group = np.array([d in val_docs for d in doc])  # per group
    is_val = val_group[group]  # per unit

    def fit(mask):
        mean, scale = x[mask].mean(0), x[mask].std(0) + 1e-6
        coef, b = fit_lr((x[mask] - mean) / scale, y[mask], l2=args.l2)
        return ss.SentenceScorer(mean, scale, coef.astype(np.float32), b, 0.5)

    def pick_threshold(scorer, mask, gmask):
        prob = scorer.probability(x[mask])
        g_ids = np.unique(group[mask])
        remap = {int(gi): i for i, gi in enumerate(g_ids)}
        gg = np.array([remap[int(gi)] for gi in group[mask]])
        best = (9.0, 0.5)
        for t in np.linspace(0.01, 0.9, 90):
            m = evaluate(prob, y[mask], gg, kind[gmask], t)
            if m["refusal_precision"] is None or m["refusal_recall"] is None:
                continue
            gap = abs(m["refusal_precision"] - m["refusal_recall"])
            best = min(best, (gap, float(t)))
        return best[1]

    def evaluate_on(scorer, mask, gmask):
        prob = scorer.probability(x[mask])
        g_ids = np.unique(group[mask])
        remap = {int(gi): i for i, gi in enumerate(g_ids)}
        gg = np.array([remap[int(gi)] for gi in group[mask]])
        return evaluate(prob, y[mask], gg, kind[gmask], scorer.threshold)

    held = fit(~is_val)
    held = ss.SentenceScorer(
        held.mean, held.scale, held.coef, held.intercept, pick_threshold(held, ~is_val, ~val_group)
    )
    val_metrics = evaluate_on(held, is_val, val_group)
    baseline = {}
    for name in ("cos_ctx", "lex_idf"):
        col = ss.FEATURES.index(name)
        top1 = []
        for gi in np.unique(group[is_val]):
            m = group == gi
            if kind[gi] == "answerable":
                top1.append(bool(y[m][int(np.argmax(x[m, col]))]))
        baseline[f"top1_by_{name}"] = float(np.mean(top1))
    final = fit(np.ones_like(is_val))
    final = ss.SentenceScorer(
        final.mean,
        final.scale,
        final.coef,
        final.intercept,
        pick_threshold(final, np.ones_like(is_val), np.ones_like(val_group)),
    )
    stats = json.loads(str(data["stats"]))
    metrics = {
        "collection": stats,
        "units": int(len(y)),
        "groups": {
            "answerable": int((kind == "answerable").sum()),
            "near_miss": int((kind == "near_miss").sum()),
        },
        "validation_by_document": {**val_metrics, **baseline, "threshold_fit_on_train_docs": held.threshold},
        "final_threshold": final.threshold,
        "l2": args.l2,
        "dropped": [ss.FEATURES[i] for i in dropped],
        "weights": dict(zip(ss.FEATURES, [round(float(c), 3) for c in final.coef])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(final.to_json(trained_on=str(args.questions.name), metrics=metrics), indent=1)
    )
    (args.report / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
