"""Build the data for, train, and evaluate the shipped default adapter (assistant/adapters/default).

Generalisation is measured honestly: the handbook's top-level folders under content/ are sorted
by name and every other one (0th, 2nd, 4th) goes to TRAINING, together with the sample corpus
(assistant/sample_docs); questions over the OTHER folders (1st, 3rd, 5th) form the held-out set
the before/after table reports. No document is in both.

    # 1. on any machine: build the training set and the held-out set
    python scripts/train_default_adapter.py build \
        --handbook ../shared/corpora/sourcegraph-handbook/content --out data/default-adapter
    # 2. on a GPU (or CPU, slowly): train, evaluate before/after, write the adapter and the table
    python scripts/train_default_adapter.py train \
        --data data/default-adapter --model bundled --out runs/default
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.finetune import data as D  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def build(args) -> None:
    train_folders, heldout_folders = D.split_folders(args.handbook)
    docs = D.documents_from_markdown(args.handbook, folders=train_folders)
    docs += D.documents_from_files(REPO / "assistant" / "sample_docs", prefix="sample/")
    examples = D.synthesise(docs, seed=args.seed, per_doc=args.per_doc)
    train, val = D.split_by_document(examples, validation=0.05, seed=args.seed)
    held_docs = D.documents_from_markdown(args.handbook, folders=heldout_folders)
    held = D.synthesise(held_docs, seed=args.seed + 1, per_doc=2)
    held = random.Random(args.seed).sample(held, min(args.heldout, len(held)))
    report = D.write_dataset(
        args.out,
        train,
        val,
        meta={
            "train_folders": train_folders,
            "heldout_folders": heldout_folders,
            "sample_corpus": True,
            "seed": args.seed,
        },
    )
    (args.out / "heldout.jsonl").write_text(
        "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in held), encoding="utf-8"
    )
    print(
        json.dumps(
            {
                "train": report.train,
                "validation": report.validation,
                "heldout": len(held),
                "kinds": report.kinds,
                "fingerprint": report.fingerprint,
                "train_folders": train_folders,
                "heldout_folders": heldout_folders,
            }
        )
    )


def train(args) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file, save_file

    from assistant.finetune import evaluate as E
    from assistant.finetune import train as T
    from assistant.llm.loading import ensure_model_dir, load_model

    t0 = time.time()
    model_dir = ensure_model_dir(args.model, cache_dir=args.cache_dir)
    print(f"model folder ready in {time.time() - t0:.0f} s: {model_dir}", flush=True)
    manifest = D.read_manifest(args.data)
    train_set = D.read_split(args.data, "train")
    held = [json.loads(x) for x in (args.data / "heldout.jsonl").read_text().splitlines() if x.strip()][
        : args.eval_limit
    ]
    bs = 64 if torch.cuda.is_available() else 8
    model, tok = load_model(model_dir)
    results, samples = {}, []
    base_scores, base_answers = E.evaluate(model, tok, held, batch_size=bs)
    results["base model"] = base_scores
    print(E.format_table(results), flush=True)
    cfg = T.TrainConfig(
        method="lora",
        r=args.r,
        alpha=2 * args.r,
        dropout=0.05,
        lr=args.lr,
        epochs=args.epochs,
        max_steps=args.max_steps,
        global_batch=32,
        micro_batch=32 if torch.cuda.is_available() else 4,
        max_seq_len=1024,
        save_every=50,
        seed=0,
    )
    model.train()
    res = T.train_model(
        model, tok, train_set, cfg, out_dir=args.out / "run", data_fingerprint=manifest["fingerprint"]
    )
    print(
        f"trained {res.steps} steps in {res.seconds:.0f} s, {res.tokens_per_s:,.0f} tokens/s, loss "
        f"{res.losses[0]:.3f} -> {res.losses[-1]:.3f}",
        flush=True,
    )
    del model
    base, tok = load_model(model_dir)
    tuned = PeftModel.from_pretrained(base, str(res.adapter_dir))
    scores, answers = E.evaluate(tuned, tok, held, batch_size=bs)
    results["with adapter"] = scores
    table = E.format_table(results)
    print(table, flush=True)
    for ex, a0, a1 in list(zip(held, base_answers, answers))[:12]:
        samples.append(
            {
                "question": ex["question"],
                "kind": ex["kind"],
                "expected": ex["answer"],
                "base": a0,
                "adapter": a1,
            }
        )
    # ship the adapter in bf16 (half the size; it is upcast on load)
    ship = args.out / "adapter"
    ship.mkdir(parents=True, exist_ok=True)
    state = load_file(str(res.adapter_dir / "adapter_model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(ship / "adapter_model.safetensors"))
    (ship / "adapter_config.json").write_text((res.adapter_dir / "adapter_config.json").read_text())
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
                "config": cfg.__dict__ | {"target_modules": list(cfg.target_modules)},
                "train_examples": len(train_set),
                "heldout_examples": len(held),
                "table": table,
                "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            },
            indent=1,
            default=str,
        )
        + "\n"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument(
        "--handbook", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook/content"
    )
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--per-doc", type=int, default=4)
    b.add_argument("--heldout", type=int, default=300)
    t = sub.add_parser("train")
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--model", default="bundled", help="'bundled', a .gguf file or a Hugging Face folder")
    t.add_argument(
        "--cache-dir",
        "--data-dir",
        dest="cache_dir",
        type=Path,
        default=Path.home() / ".cache" / "workplace-assistant",
        help="where GGUF conversions are cached (settings.model_cache_dir)",
    )
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--r", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--epochs", type=float, default=2.0)
    t.add_argument("--eval-limit", type=int, default=300)
    t.add_argument("--max-steps", type=int, default=None, help="stop early (smoke runs)")
    args = ap.parse_args()
    {"build": build, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
