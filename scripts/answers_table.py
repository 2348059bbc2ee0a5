"""One Markdown table from the passes of scripts/gpu_answers_h200.sh (issue #16 §3).

Reads ``OUT/eval-concurrent/metrics.json`` (every dev question, CONC at once against ``serve-llm``),
``OUT/eval-sequential/metrics.json`` (the first SEQ_N questions one at a time: the latency a person
sees when the server is otherwise idle), ``OUT/eval-bundled/metrics.json`` when present, and
``OUT/train/summary.json``; prints the table (the script tees it to ``OUT/table.md``). Quality columns
come from the concurrent pass, the latency rows from both, labelled with their concurrency.

    python scripts/answers_table.py OUT --concurrency 8 --seq-n 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _load(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    return {m["config"]: m for m in json.loads(path.read_text())}


def _f(v, pct: bool = True) -> str:
    return "–" if v is None else (f"{v:.2f}" if pct else f"{v:.0f}")


def table(out: Path, *, concurrency: int, seq_n: int, where: str = "behind `assistant serve-llm`") -> str:
    conc = _load(out / "eval-concurrent" / "metrics.json")
    conc.update(_load(out / "eval-bundled" / "metrics.json"))
    seq = _load(out / "eval-sequential" / "metrics.json")
    names = list(conc)
    kinds = sorted({k for m in conc.values() for k in m.get("accuracy_by_kind", {})})
    rows: list[tuple[str, list[str]]] = [
        ("questions", [str(conc[n]["n"]) for n in names]),
        ("answer accuracy", [_f(conc[n]["accuracy"]) for n in names]),
        *((f"accuracy: {k}", [_f(conc[n].get("accuracy_by_kind", {}).get(k)) for n in names]) for k in kinds),
        ("citation precision", [_f(conc[n]["citation_precision"]) for n in names]),
        ("refusal precision", [_f(conc[n]["refusal_precision"]) for n in names]),
        ("refusal recall", [_f(conc[n]["refusal_recall"]) for n in names]),
        ("key fact in passages shown", [_f(conc[n]["key_fact_in_passages"]) for n in names]),
        ("hit@5", [_f(conc[n].get("hit", {}).get("5")) for n in names]),
        (
            "ask p50 / p95 (ms), questions at once as given",
            [
                f"{_f(conc[n]['answer_p50_ms'], False)} / {_f(conc[n]['answer_p95_ms'], False)} "
                f"(×{conc[n].get('concurrency', 1)})"
                for n in names
            ],
        ),
        (
            f"ask p50 / p95 (ms), one at a time, first {seq_n} questions",
            [
                f"{_f(seq[n]['answer_p50_ms'], False)} / {_f(seq[n]['answer_p95_ms'], False)}"
                if n in seq
                else "–"
                for n in names
            ],
        ),
    ]
    head = "| metric | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    body = "\n".join(f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows)
    notes = [f"\nQuality from every question answered {concurrency} at a time, the model {where}."]
    summary = out / "train" / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        c = s.get("config", {})
        notes.append(
            f"Adapter: LoRA r={c.get('r')} on {','.join(c.get('target_modules', []))}, {s.get('steps')} steps "
            f"in {s.get('seconds', 0):.0f} s on {s.get('device')}, {s.get('train_examples')} training "
            f"examples, loss {s.get('loss_first', 0):.3f} -> {s.get('loss_last', 0):.3f}, "
            f"{s.get('adapter_bytes', 0) / 1e6:.1f} MB."
        )
    return head + body + "\n" + "\n".join(notes) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seq-n", type=int, default=20)
    ap.add_argument(
        "--where", default="behind `assistant serve-llm`", help="how the model was run (for the note)"
    )
    args = ap.parse_args(argv)
    print(table(args.out, concurrency=args.concurrency, seq_n=args.seq_n, where=args.where), end="")


if __name__ == "__main__":
    main()
