"""The Qwen adapter's training mix (scripts/train_qwen_adapter.py build): every answer target is one the
answerer's own verification keeps whole, multi-part targets answer part by part, refusals stay a minority."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from assistant.finetune import data as D
from assistant.grounding import sentences
from assistant.settings import AnsweringSettings
from assistant.verification import verify_claims
from tests.test_finetune_mix import PAGES, QUESTIONS

REPO = Path(__file__).resolve().parents[1]


def test_the_mix_holds_only_targets_verification_keeps_and_few_refusals(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    import train_qwen_adapter as S

    content = tmp_path / "content"
    for rel, text in PAGES.items():
        (content / rel).parent.mkdir(parents=True, exist_ok=True)
        (content / rel).write_text(text)
    qfile = tmp_path / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    out = tmp_path / "ds"
    S.main(
        ["build", "--handbook", str(content), "--questions", str(qfile), "--out", str(out), "--per-doc", "4"]
    )
    examples = D.read_split(out, "train") + D.read_split(out, "validation")
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["verification"]
    assert counts["answer"]["kept"] <= counts["answer"]["in"] and counts["refusal"]["in"] > 0

    refusals = [e for e in examples if e["kind"] == "refusal"]
    assert 0 < len(refusals) <= 0.15 * len(examples) + 1  # a minority, near misses only

    emb = S._LexicalEmbedder()
    answers = [e for e in examples if e["kind"] != "refusal"]
    assert answers
    for ex in answers:
        claims = [s.text for s in sentences(ex["answer"], min_chars=8)]
        kept, used = verify_claims(
            ex["question"],
            ex["answer"],
            [SimpleNamespace(text=p["text"]) for p in ex["passages"]],
            embedder=emb,
            scorer=None,
            calibrated=False,
            settings=AnsweringSettings(),
        )
        assert len(kept) == len(claims), ex  # nothing the adapter learns to say is dropped at answer time
        assert sorted(n + 1 for n in used) == ex["cite"]
        assert all(1 <= n <= len(ex["passages"]) for n in ex["cite"])
    assert any("16 weeks" in e["answer"] for e in answers)  # the generated question's fact is stated
    for ex in (e for e in answers if e["kind"] == "multi"):
        assert len(sentences(ex["answer"], min_chars=8)) >= 2  # one sentence per part
