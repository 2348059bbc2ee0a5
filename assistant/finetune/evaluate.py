"""Before/after evaluation of an adapter on held-out examples (the validation split).

For each example the model answers from the same prompt it was trained on (greedy decoding), and
four things a user would notice are scored:

- key fact: for answerable questions, at least 60% of the key sentence's content words appear
  in the answer (the words are the facts; the phrasing may differ);
- citation: the answer cites the gold passage ``[n]`` and no other;
- refusal: unanswerable questions are refused, answerable ones are not;
- length: average answer length in words.

Not here: the verification and rewriting that ``assistant.answering`` adds on top at run time;
this measures the raw model, so an adapter's effect is not masked by that safety net.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from assistant.finetune.data import messages_of
from assistant.prompting import REFUSAL

_STOP = set(
    """a an the and or of to in on at for by with from is are was were be been being it its this that these
those as if then than so such not no do does did you your we our they their he she his her i my me can
could should would will may might must shall have has had there here what which who whom when where why
how all any each every about into over under""".split()
)
_WORD = re.compile(r"[a-z0-9][a-z0-9'’-]*")


def content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1]


def is_refusal(answer: str) -> bool:
    a = answer.strip().lower()
    return a.startswith(REFUSAL.lower()[:30]) or REFUSAL.lower() in a


def cited(answer: str) -> set[int]:
    return {int(n) for n in re.findall(r"\[(\d+)\]", answer)}


@dataclass
class Scores:
    n: int = 0
    answerable: int = 0
    unanswerable: int = 0
    key_fact: int = 0
    citation: int = 0
    refused_correctly: int = 0  # unanswerable and refused
    false_refusals: int = 0  # answerable but refused
    words: int = 0

    def add(self, example: dict, answer: str) -> None:
        self.n += 1
        self.words += len(answer.split())
        refused = is_refusal(answer)
        if example["kind"] == "refusal":
            self.unanswerable += 1
            self.refused_correctly += refused
            return
        self.answerable += 1
        self.false_refusals += refused
        key = set(content_words(example.get("key_fact") or ""))
        if key and not refused:
            self.key_fact += len(key & set(content_words(answer))) >= 0.6 * len(key)
        gold = set(example.get("cite") or [])
        self.citation += bool(gold) and cited(answer) == gold

    def table(self) -> dict[str, float]:
        a, u = max(1, self.answerable), max(1, self.unanswerable)
        return {
            "key fact contained": self.key_fact / a,
            "citation correct": self.citation / a,
            "refusal correct (unanswerable)": self.refused_correctly / u,
            "false refusals (answerable)": self.false_refusals / a,
            "avg answer words": self.words / max(1, self.n),
            "examples": self.n,
        }


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    examples: list[dict],
    *,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    max_prompt_tokens: int = 1536,
) -> list[str]:
    """Greedy answers, batched with left padding (prompts longer than max_prompt_tokens keep their end)."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    out: list[str] = []
    try:
        for i in range(0, len(examples), batch_size):
            prompts = [
                tokenizer.apply_chat_template(messages_of(ex), add_generation_prompt=True, tokenize=False)
                for ex in examples[i : i + batch_size]
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v[:, -max_prompt_tokens:].to(device) for k, v in enc.items()}
            gen = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            for row in gen[:, enc["input_ids"].shape[1] :]:
                out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = side
    return out


def evaluate(model, tokenizer, examples: list[dict], **kwargs) -> tuple[dict[str, float], list[str]]:
    answers = generate_answers(model, tokenizer, examples, **kwargs)
    s = Scores()
    for ex, a in zip(examples, answers):
        s.add(ex, a)
    return s.table(), answers


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table: one column per model ('base', 'adapter', ...)."""
    names = list(results)
    metrics = list(next(iter(results.values())))
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for m in metrics:
        cells = [
            (f"{results[n][m]:.0f}" if m in ("examples",) or m.startswith("avg") else f"{results[n][m]:.1%}")
            for n in names
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_report(
    path: Path, results: dict[str, dict[str, float]], *, samples: list[dict] | None = None
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"results": results, "samples": samples or []}, indent=1, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
