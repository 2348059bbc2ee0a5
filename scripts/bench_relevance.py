"""CPU cost of the relevance model per question: score N passages + M sentences (ms, median).

    python scripts/bench_relevance.py --model <folder from train_relevance.py> [--questions 10]

Texts are real handbook chunks and sentences (training half), the way the answerer would score them.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import relevance_data as R
from assistant.chunking import Chunker
from assistant.relevance import CrossEncoderRelevance

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument(
        "--handbook", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook/content"
    )
    ap.add_argument("--questions", type=int, default=10)
    ap.add_argument("--passages", type=int, default=30)
    ap.add_argument("--sentences", type=int, default=60)
    ap.add_argument("--batch-sizes", default="16,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=256)
    args = ap.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(args.model), local_files_only=True)
    folders, _ = R.split_folders(args.handbook)
    pages = R.read_pages(args.handbook, folders)[:60]
    passages = R.passages_of(pages, Chunker(tok, max_tokens=256, min_tokens=256))
    sents = [s for p in passages for s in R.sentences(p.text)]
    rng = random.Random(0)
    questions = [
        "How many weeks of parental leave do primary caregivers get?",
        "What is the travel budget per trip?",
        "How long should my password be?",
        "Who approves expense reports?",
        "When is payroll run?",
    ]
    out = {}
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        rel = CrossEncoderRelevance(args.model, batch_size=bs, threads=args.threads, max_len=args.max_len)
        rel.score("warm up", [p.text for p in passages[:4]])
        times = []
        for i in range(args.questions):
            ps = [p.with_heading() for p in rng.sample(passages, args.passages)]
            ss = rng.sample(sents, args.sentences)
            t0 = time.perf_counter()
            rel.score(questions[i % len(questions)], ps)
            rel.score(questions[i % len(questions)], ss)
            times.append((time.perf_counter() - t0) * 1000)
        out[f"batch_size={bs}"] = {
            "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1),
            "runs": len(times),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
