"""Build the data for, train, and evaluate the Qwen2.5-Coder-1.5B answering adapter (assistant/adapters/qwen15).

The base model over-refuses (25 of 53 answerable held-out questions), and the first adapter (refusals a
third of its mix, 700-character passages) refused even more, so the mix (``assistant.finetune.mix``
plus the steps here) teaches answering: paraphrased questions from ``scripts/gen_questions.py`` (when
given) plus template and table questions, 3-6 passages of up to 1,200 characters with the gold one(s)
at random positions, multi-part questions (two pages, and two questions about one page joined the way
people ask them), a share of questions reworded as people type them, and refusals whose passages are
NEAR MISSES (same page / same folder, answer absent), capped at 15 % of the mix. Every answer target
is run through the answerer's own verification (``assistant.verification.verify_claims``) and kept
only when it survives whole with its key fact(s); the target becomes exactly what verification keeps
("<fact sentence> [n]." per part), so what the adapter learns to say reaches the person unchanged.
Same split as the default adapter (``assistant.finetune.data.split_folders``): the handbook's
top-level content folders sorted, [0::2] (+ the sample corpus) for training, [1::2] held out. The
build imports our settings model (for verification's thresholds); training needs only torch,
transformers, peft (and gguf to convert).

    # 1. here (CPU, 1-3 min): the training set and the held-out set
    python scripts/train_qwen_adapter.py build --out data/qwen-adapter \
        [--questions data/relevance/questions.jsonl]
    # 2. the base model as a bf16 HF folder (once; `assistant models pull qwen2.5-coder-1.5b` does both)
    python -m assistant.llm.gguf_convert qwen2.5-coder-1.5b-instruct-q4_k_m.gguf /models/qwen15
    # 3. on one H200: ~3.7k examples of ~820 tokens (Qwen tokenizer) = ~3.0M tokens an epoch.
    #    Measured on an H200 (torch 2.11, transformers 5.17, peft 0.21) with the Qwen2.5-1.5B shapes
    #    (random weights), r=16 on q/k/v/o (4.36M LoRA parameters = 8.7 MB bf16), global batch 32:
    #    micro-batch 8: 23,600 tokens/s, 60 GiB peak; micro-batch 16: 27,700 tokens/s, 118 GiB peak.
    #    So 1 epoch is ~2 min at micro-batch 8, plus ~1-2 min for the before/after evaluation:
    python scripts/train_qwen_adapter.py train --data data/qwen-adapter --model /models/qwen15 \
        --out runs/qwen15 --r 16 --targets q_proj,k_proj,v_proj,o_proj --lr 2e-4 --epochs 1 \
        --global-batch 32 --micro-batch 8 --seq-len 2048 --eval-limit 300
    # then: cp -r runs/qwen15/adapter assistant/adapters/qwen15   (r=16 on attention: ~8.7 MB bf16)
    # The same data also trains through the CLI: `assistant finetune train --data data/qwen-adapter
    #   --name qwen15 --base qwen2.5-coder-1.5b --r 16 --alpha 32 --targets q_proj,k_proj,v_proj,o_proj
    #   --lr 2e-4 --epochs 1 --global-batch 32 --micro-batch 8 --seq-len 2048` (registers it instead).

``train`` writes ``<out>/adapter`` (bf16 weights, adapter_config.json, assistant-adapter.json with
the base fingerprint), ``<out>/eval.json`` (before/after on the held-out half) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.finetune import data as D
from assistant.finetune import mix as M

REPO = Path(__file__).resolve().parent.parent
HANDBOOK = REPO.parent / "shared/corpora/sourcegraph-handbook/content"


def items_for(
    docs: list[D.DocText],
    content: Path,
    folders: list[str],
    *,
    rng: random.Random,
    questions: list[dict],
    per_doc: int,
    max_chars: int,
) -> list[M.Item]:
    by_id = {d.doc_id: d for d in docs}
    items = M.question_items(questions, by_id, max_chars=max_chars)
    items += M.synthesised_items(docs, rng=rng, per_doc=per_doc, max_chars=max_chars)
    items += M.table_items(M.tables_from_markdown(content, folders=folders), rng=rng)
    return items


# ---------------------------------------------------------------- the mix, made to pass verification

_QWORDS = ("how", "what", "when", "where", "who", "which", "why", "is", "are", "can", "do", "does", "should")
_REWORD = (
    lambda q: q[0].lower() + q[1:].rstrip("?"),  # typed in a hurry
    lambda q: "Quick question: " + q[0].lower() + q[1:],
    lambda q: "Hey, " + q[0].lower() + q[1:] + " Thanks!",
    lambda q: "Do you know " + q[0].lower() + q[1:].rstrip("?") + "?",
)


def _range(spec: str) -> tuple[int, int]:
    lo, _, hi = spec.partition(",")
    return int(lo), int(hi or lo)


class _LexicalEmbedder:
    """Hashed bag-of-words vectors: enough for verification's "does this sentence address the question"
    check on the targets, with no model to load (the build runs on a CPU in a minute)."""

    dim = 1024

    def _vec(self, text: str):
        import numpy as np

        v = np.zeros(self.dim, dtype=np.float32)
        for w in M._WORD.findall(text.lower()):
            v[zlib.crc32(w.encode()) % self.dim] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def embed(self, texts: list[str]):
        import numpy as np

        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str):
        return self._vec(text)


def same_doc_multi(
    items: list[M.Item], pool: M.Pool, *, rng: random.Random, n: int, max_chars: int
) -> list[dict]:
    """Two questions about ONE page joined the way people ask them ("How long is X, and who approves Y?"),
    the gold passage(s) among near misses, the target answering part by part."""
    by_doc: dict[str, list[M.Item]] = {}
    for it in items:
        if it.kind in ("answer", "table"):
            by_doc.setdefault(it.doc_id, []).append(it)
    docs = [d for d, its in by_doc.items() if len(its) >= 2]
    out: list[dict] = []
    for _ in range(n if docs else 0):
        a, b = rng.sample(by_doc[rng.choice(docs)], 2)
        if M.norm(a.needles[0]) == M.norm(b.needles[0]) or a.question == b.question:
            continue
        q2 = b.question.strip()
        if q2.lower().startswith(_QWORDS):
            question = f"{a.question.strip().rstrip('?')}, and {q2[0].lower() + q2[1:]}"
        else:
            question = f"{a.question.strip()} {q2}"
        same = M.norm(b.passage) in M.norm(a.passage) or M.norm(a.passage) in M.norm(b.passage)
        golds = (
            [(a.title, a.passage if len(a.passage) >= len(b.passage) else b.passage)]
            if same
            else [
                (a.title, a.passage),
                (b.title, b.passage),
            ]
        )
        needles = [M.norm(b.needles[0]), M.norm(a.needles[0])]
        noise = [
            p
            for p in pool.near_misses(a, rng.randint(2, 4), rng=rng, max_chars=max_chars)
            if not any(x and x in M.norm(p[1]) for x in needles)
        ]
        ps, nums = M._place(golds, noise, rng)
        na, nb = (nums[0], nums[0]) if same else (nums[0], nums[1])
        answer = f"{M._cite(a.target, na)} {M._cite(b.target, nb)}"
        out.append(M._example(a.doc_id, "multi", question, ps, answer, sorted({na, nb}), a.needles[0]))
        out[-1]["key_facts"] = [a.needles[0], b.needles[0]]
    return out


def paraphrase(examples: list[dict], *, rng: random.Random, rate: float) -> list[dict]:
    """Reword a share of the single questions as people type them (lower case, no "?", a greeting)."""
    for ex in examples:
        if ex["kind"] != "multi" and len(ex["question"]) > 1 and rng.random() < rate:
            ex["question"] = rng.choice(_REWORD)(ex["question"].strip())
    return examples


def verify_targets(examples: list[dict]) -> tuple[list[dict], dict]:
    """Keep the answer examples whose target survives the answerer's own verification
    (``assistant.verification.verify_claims``) with its key fact(s) intact; the target becomes exactly
    what verification keeps, so the adapter learns answers that reach the person unchanged."""
    from types import SimpleNamespace

    from assistant.grounding import strip_citations as g_strip
    from assistant.settings import AnsweringSettings
    from assistant.verification import cites_inside, verify_claims

    settings = AnsweringSettings()
    emb = _LexicalEmbedder()
    kept_out: list[dict] = []
    counts: dict[str, dict[str, int]] = {}
    for ex in examples:
        c = counts.setdefault(ex["kind"], {"in": 0, "kept": 0})
        c["in"] += 1
        if ex["kind"] == "refusal":
            kept_out.append(ex)
            c["kept"] += 1
            continue
        sources = [SimpleNamespace(text=p["text"]) for p in ex["passages"]]
        kept, used = verify_claims(
            ex["question"],
            ex["answer"],
            sources,
            embedder=emb,
            scorer=None,
            calibrated=False,
            settings=settings,
        )
        said = M.norm(" ".join(kept))
        facts = ex.get("key_facts") or [ex.get("key_fact", "")]
        if not kept or not all(M.norm(f) in said for f in facts if f):
            continue
        # a sentence another kept sentence already says ("16 weeks [2]. Primary caregivers get 16 weeks…")
        # is dropped: the adapter learns to say each fact once
        keys = [M.norm(g_strip(k)) for k in kept]
        kept = [
            k
            for i, k in enumerate(kept)
            if not any(
                i != j and keys[i] in keys[j] and (keys[i] != keys[j] or j < i) for j in range(len(kept))
            )
        ]
        if ex["kind"] == "multi" and len(kept) < 2:
            continue
        if any(x in " ".join(kept) for x in ("](", "http", "[ ]", "[x]")):
            continue  # the prompt says "never include links"; a checklist box is not an answer
        ex["answer"] = " ".join(cites_inside(k) for k in kept)  # "X [2]." as the prompt asks
        ex["cite"] = sorted(n + 1 for n in used)
        kept_out.append(ex)
        c["kept"] += 1
    return kept_out, counts


def cap_refusals(examples: list[dict], *, share: float, rng: random.Random) -> list[dict]:
    """Drop refusals at random until they are ``share`` of the mix (they are near misses already)."""
    refusals = [e for e in examples if e["kind"] == "refusal"]
    others = [e for e in examples if e["kind"] != "refusal"]
    room = int(share / (1 - share) * len(others)) if share < 1 else len(refusals)
    out = others + rng.sample(refusals, min(room, len(refusals)))
    rng.shuffle(out)
    return out


def build(args) -> None:
    rng = random.Random(args.seed)
    train_folders, held_folders = D.split_folders(args.handbook)
    docs = D.documents_from_markdown(args.handbook, folders=train_folders)
    questions = M.read_questions(args.questions) if args.questions else []
    items = items_for(
        docs,
        args.handbook,
        train_folders,
        rng=rng,
        questions=questions,
        per_doc=args.per_doc,
        max_chars=args.max_chars,
    )
    sample = D.documents_from_files(REPO / "assistant" / "sample_docs", prefix="sample/")
    items += M.synthesised_items(sample, rng=rng, per_doc=args.per_doc, max_chars=args.max_chars)
    pool = M.Pool(docs + sample)
    examples = M.build_mix(
        items,
        pool,
        seed=args.seed,
        passages=_range(args.passages),
        max_chars=args.max_chars,
        refusal_rate=args.refusal_rate,
        multi_rate=args.multi_rate,
    )
    examples += same_doc_multi(
        items, pool, rng=rng, n=int(len(items) * args.same_doc_multi), max_chars=args.max_chars
    )
    examples = paraphrase(examples, rng=rng, rate=args.paraphrase_rate)
    examples, verification = verify_targets(examples)
    examples = cap_refusals(examples, share=args.refusal_share, rng=rng)
    examples = D._with_ids(examples)
    train, val = D.split_by_document(examples, validation=0.05, seed=args.seed)
    held_docs = D.documents_from_markdown(args.handbook, folders=held_folders)
    held_items = items_for(
        held_docs,
        args.handbook,
        held_folders,
        rng=random.Random(args.seed + 1),
        questions=[],
        per_doc=2,
        max_chars=args.max_chars,
    )
    held = M.build_mix(
        held_items,
        M.Pool(held_docs),
        seed=args.seed + 1,
        max_chars=args.max_chars,
        refusal_rate=args.refusal_rate,
        multi_rate=args.multi_rate,
    )
    held = random.Random(args.seed).sample(held, min(args.heldout, len(held)))
    report = D.write_dataset(
        args.out,
        train,
        val,
        meta={
            "train_folders": train_folders,
            "heldout_folders": held_folders,
            "sample_corpus": True,
            "seed": args.seed,
            "questions_file": str(args.questions or ""),
            "questions_used": sum(1 for it in items if it.question in {q.get("question") for q in questions}),
            "builder": "assistant.finetune.mix + scripts/train_qwen_adapter.py (verified targets)",
            "verification": verification,
            "refusal_share": args.refusal_share,
            "passages": args.passages,
            "max_chars": args.max_chars,
        },
    )
    (args.out / "heldout.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in held), encoding="utf-8"
    )
    held_kinds: dict[str, int] = {}
    for e in held:
        held_kinds[e["kind"]] = held_kinds.get(e["kind"], 0) + 1
    print(
        json.dumps(
            {
                "train": report.train,
                "validation": report.validation,
                "heldout": len(held),
                "kinds": report.kinds,
                "verification": verification,
                "heldout_kinds": held_kinds,
                "fingerprint": report.fingerprint,
                "train_folders": train_folders,
                "heldout_folders": held_folders,
            }
        )
    )


def train(args) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    from assistant.finetune import evaluate as E
    from assistant.finetune import train as T
    from assistant.llm.loading import ensure_model_dir, load_model, model_fingerprint

    cuda = torch.cuda.is_available()
    model_dir = ensure_model_dir(args.model, cache_dir=args.cache_dir)
    manifest = D.read_manifest(args.data)
    train_set = D.read_split(args.data, "train")
    held = [json.loads(x) for x in (args.data / "heldout.jsonl").read_text().splitlines() if x.strip()]
    held = held[: args.eval_limit]
    bs = 64 if cuda else 4
    model, tok = load_model(model_dir, device=args.device)
    results: dict[str, dict] = {}
    base_answers: list[str] = []
    if args.eval_limit:
        results["base model"], base_answers = E.evaluate(model, tok, held, batch_size=bs)
        print(E.format_table(results), flush=True)
    cfg = T.TrainConfig(
        method="lora",
        r=args.r,
        alpha=2 * args.r,
        dropout=0.05,
        target_modules=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        global_batch=args.global_batch,
        micro_batch=args.micro_batch,
        max_seq_len=args.seq_len,
        save_every=args.save_every,
        seed=0,
    )
    model.train()
    res = T.train_model(
        model, tok, train_set, cfg, out_dir=args.out / "run", data_fingerprint=manifest["fingerprint"]
    )
    print(
        f"trained {res.steps} steps in {res.seconds:.0f} s, {res.tokens_per_s:,.0f} tokens/s, loss "
        f"{res.losses[0]:.3f} -> {res.losses[-1]:.3f}, {res.dropped} examples over --seq-len dropped",
        flush=True,
    )
    del model
    answers: list[str] = []
    if args.eval_limit:
        base, tok = load_model(model_dir, device=args.device)
        tuned = PeftModel.from_pretrained(base, str(res.adapter_dir))
        results["with adapter"], answers = E.evaluate(tuned, tok, held, batch_size=bs)
        print(E.format_table(results), flush=True)
    ship = args.out / "adapter"  # bf16: half the size; upcast on load
    ship.mkdir(parents=True, exist_ok=True)
    state = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(ship / "adapter_model.safetensors"))
    (ship / "adapter_config.json").write_text((res.adapter_dir / "adapter_config.json").read_text())
    (ship / "assistant-adapter.json").write_text(
        json.dumps(
            {
                "name": "qwen15",
                "version": 1,
                "base_fingerprint": model_fingerprint(model_dir),
                "data_fingerprint": manifest["fingerprint"],
            },
            indent=2,
        )
        + "\n"
    )
    samples = [
        {"question": ex["question"], "kind": ex["kind"], "expected": ex["answer"], "base": a0, "adapter": a1}
        for ex, a0, a1 in list(zip(held, base_answers, answers))[:16]
    ]
    E.save_report(args.out / "eval.json", results, samples=samples)
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "data_fingerprint": manifest["fingerprint"],
                "steps": res.steps,
                "seconds": res.seconds,
                "tokens_per_s": res.tokens_per_s,
                "loss_first": res.losses[0],
                "loss_last": res.losses[-1],
                "losses": res.losses,
                "dropped": res.dropped,
                "config": cfg.__dict__ | {"target_modules": list(cfg.target_modules)},
                "train_examples": len(train_set),
                "heldout_examples": len(held),
                "table": E.format_table(results) if results else "",
                "adapter_bytes": (ship / "adapter_model.safetensors").stat().st_size,
                "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            },
            indent=1,
            default=str,
        )
        + "\n"
    )
    print(f"adapter written to {ship} ({(ship / 'adapter_model.safetensors').stat().st_size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="write train/validation/heldout JSONL")
    b.add_argument("--handbook", type=Path, default=HANDBOOK, help="the handbook's content/ folder")
    b.add_argument("--questions", type=Path, default=None, help="JSONL from scripts/gen_questions.py")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument(
        "--per-doc",
        type=int,
        default=1,
        help="template questions per page at most (the generated ones read better)",
    )
    b.add_argument("--max-chars", type=int, default=1200, help="characters per passage at most")
    b.add_argument("--heldout", type=int, default=400)
    b.add_argument(
        "--refusal-rate",
        type=float,
        default=0.7,
        help="near-miss refusal per answerable question with one specific answer",
    )
    b.add_argument(
        "--multi-rate", type=float, default=0.12, help="multi-part questions (two pages) per question"
    )
    b.add_argument(
        "--same-doc-multi",
        type=float,
        default=0.1,
        help="multi-part questions (two of one page) per question",
    )
    b.add_argument(
        "--paraphrase-rate", type=float, default=0.3, help="questions reworded as people type them"
    )
    b.add_argument(
        "--refusal-share",
        type=float,
        default=0.15,
        help="share of refusals (near-miss passages only) in the final mix; extra ones are dropped",
    )
    b.add_argument("--passages", default="3,6", help="passages per example, MIN,MAX")
    t = sub.add_parser("train", help="train, evaluate before/after, write the adapter")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument(
        "--model",
        required=True,
        help="a Hugging Face folder (the converted Qwen), a .gguf, "
        "'qwen2.5-coder-1.5b' (pulled) or 'bundled'",
    )
    t.add_argument(
        "--cache-dir",
        type=Path,
        default=Path.home() / ".cache" / "workplace-assistant",
        help="where GGUF conversions are cached (settings.model_cache_dir)",
    )
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--device", default="auto")
    t.add_argument("--r", type=int, default=16)
    t.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--global-batch", type=int, default=32)
    t.add_argument("--micro-batch", type=int, default=8)
    t.add_argument("--seq-len", type=int, default=2048)
    t.add_argument("--save-every", type=int, default=100)
    t.add_argument(
        "--eval-limit", type=int, default=300, help="held-out examples scored before/after (0: skip)"
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    {"build": build, "train": train}[args.cmd](args)
    print(f"done in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
