"""Scoring of the evaluation harness on hand-made records (no model needed)."""

from __future__ import annotations

import json

import pytest

from assistant.errors import ConfigError
from assistant.evaluation import Question, Record, load_questions, same_doc, score, table


def rec(q, *, paths, answer="", refused=False, cited=(), ms=100.0):
    ans = {
        "answer": answer,
        "refused": refused,
        "citations": [{"path": p} for p in cited],
        "timings_ms": {"total": ms},
    }
    return Record("cfg", q, ans, list(paths), 5.0)


def test_metrics_follow_their_definitions():
    fact = Question("1", "q", must_contain=("16 weeks",), gold_docs=("content/a.md",))
    multi = Question("2", "q", must_contain=("x",), gold_docs=("content/b.md", "content/c.md"), kind="multi")
    unans = Question("3", "q", kind="unanswerable")
    recs = [
        rec(
            fact,
            paths=["content/z.md", "content/a.md"],
            answer="You get 16 Weeks.",
            cited=["content/a.md", "content/z.md"],
        ),
        rec(multi, paths=["content/c.md"], answer="nope", cited=["content/c.md"]),
        rec(unans, paths=["content/q.md"], refused=True, answer="I couldn't find this"),
    ]
    m = score("cfg", recs)
    assert m.hit[1] == 0.5 and m.hit[5] == 1.0 and m.mrr == pytest.approx((0.5 + 1.0) / 2)
    assert m.accuracy == 0.5
    assert m.citation_precision == pytest.approx(2 / 3)
    assert m.refusal_precision == 1.0 and m.refusal_recall == 1.0
    assert "| hit@5 | 1.00 |" in table([m])


def test_gold_paths_match_by_path_suffix():
    assert same_doc("sourcegraph-handbook/content/a/b.md", "content/a/b.md")
    assert same_doc("content/a/b.md", "content/a/b.md")
    assert not same_doc("content/a/bb.md", "content/a/b.md")


def test_question_file_errors_name_the_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "x"}) + "\n" + '{"question": "no id"}\n')
    with pytest.raises(ConfigError, match=r"q.jsonl:2"):
        load_questions(f)
    f.write_text(json.dumps({"id": "a", "question": "x", "kind": "weird"}) + "\n")
    with pytest.raises(ConfigError, match="kind"):
        load_questions(f)
