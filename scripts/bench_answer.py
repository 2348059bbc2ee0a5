"""Answering benchmark on CPU: model load, time to first token, tokens/s, ask latency and quality.

    python scripts/bench_answer.py --data-dir DIR [--questions tests/data/dev_questions.jsonl] [-n 30]

DIR must already hold an index of the handbook (`assistant ingest ../shared/corpora/sourcegraph-handbook`).
Prints one Markdown table: cached model load, time to first token and decode tokens/s on a
RAG-sized prompt, `ask` latency p50/p95 over n questions, and on those questions retrieval hit@5,
answers containing the key fact, and refusal rate on unanswerable ones.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from assistant import evaluation as ev
from assistant.documents import Principals
from assistant.prompting import Passage, build_messages
from assistant.service import Assistant
from assistant.settings import load_settings

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--questions", type=Path, default=REPO / "tests" / "data" / "dev_questions.jsonl")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--adapter", default="default")
    a = ap.parse_args(argv)
    s = load_settings(overrides={"data_dir": str(a.data_dir), "llm": {"adapter": a.adapter}})
    with Assistant(s) as asst:
        _ = asst.engine.embedder
        t = time.perf_counter()
        llm = asst.llm
        load_s = time.perf_counter() - t
        hits = asst.search("What is the parental leave policy?", who=Principals(everything=True), k=5)
        msgs = build_messages(
            "What is the parental leave policy?",
            [Passage(i + 1, h.title, h.text) for i, h in enumerate(hits)],
        )
        prompt_tokens = llm.count_message_tokens(msgs)
        t = time.perf_counter()
        first, n_tok, text = None, 0, ""
        for delta in llm.stream(msgs, max_new_tokens=96, adapter=asst.default_adapter()):
            first = first or time.perf_counter()
            text += delta
        end = time.perf_counter()
        n_tok = llm.count_tokens(text)
        qs = ev.load_questions(a.questions)[: a.n]
        recs = ev.run_config("bench", asst, qs, who=Principals(email="bench@example.com"))
        m = ev.score("bench", recs)
    rows = [
        ("model load (cached, in-process, imports excluded)", f"{load_s:.2f} s"),
        ("prompt tokens (5 sources)", str(prompt_tokens)),
        ("time to first token", f"{(first - t) * 1e3:.0f} ms"),
        ("decode tokens/s", f"{n_tok / max(1e-6, end - first):.1f}"),
        (
            f"ask latency p50 / p95 ({len(recs)} questions)",
            f"{m.answer_p50_ms / 1e3:.2f} s / {m.answer_p95_ms / 1e3:.2f} s",
        ),
        ("retrieval hit@5", f"{m.hit.get(5, 0):.2f}"),
        ("answer contains the key fact", "–" if m.accuracy is None else f"{m.accuracy:.2f}"),
        ("refusal recall / precision", f"{m.refusal_recall} / {m.refusal_precision}"),
    ]
    print(f"| metric ({a.questions.name}, adapter={a.adapter}) | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
