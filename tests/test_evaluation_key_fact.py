"""The "key fact in passages shown" metric and the per-kind accuracy rows (hand-made records, no model)."""

from __future__ import annotations

import json

import pytest

from assistant.evaluation import Question, Record, load_questions, score, table


def rec(q, *, answer="", refused=False, passages=None, retrieved=()):
    ans = {
        "answer": answer,
        "refused": refused,
        "citations": [],
        "timings_ms": {"total": 10.0},
        "retrieved": [{"path": "content/r.md", "title": "R", "text": t} for t in retrieved],
    }
    if passages is not None:
        ans["passages"] = [{"path": "content/p.md", "title": "P", "text": t} for t in passages]
    return Record("cfg", q, ans, [], 1.0)


FACT = Question("f", "how many weeks?", must_contain=("16",), gold_docs=("content/a.md",))
MULTI = Question(
    "m", "two things?", must_contain=("Deel", "16"), gold_docs=("content/a.md", "content/b.md"), kind="multi"
)
TABLE = Question("t", "which band?", must_contain=("$182,000",), gold_docs=("content/c.md",), kind="table")
UNANS = Question("u", "car allowance?", kind="unanswerable")


def test_passages_shown_are_preferred_over_the_retrieved_hits():
    # the fact was retrieved but not put in front of the answerer: it does not count
    r = rec(FACT, answer="no idea", passages=["The co-working budget is $300."], retrieved=["up to 16 weeks"])
    assert score("cfg", [r]).key_fact_in_passages == 0.0
    r = rec(FACT, answer="no idea", passages=["Primary caregivers get 16 WEEKS."], retrieved=["nothing"])
    assert score("cfg", [r]).key_fact_in_passages == 1.0


def test_without_passages_the_first_shown_retrieved_hits_count():
    r = rec(FACT, retrieved=["a", "b", "c", "up to 16 weeks"])
    assert score("cfg", [r], shown=4).key_fact_in_passages == 1.0
    assert score("cfg", [r], shown=3).key_fact_in_passages == 0.0


def test_every_key_string_must_be_shown_but_may_sit_in_different_passages():
    split = rec(MULTI, passages=["Record it in Deel.", "You get 16 weeks."])
    half = rec(MULTI, passages=["Record it in Deel.", "Ask your manager."])
    m = score("cfg", [split, half])
    assert m.key_fact_in_passages == 0.5
    assert m.key_fact_by_kind == {"multi": 0.5}


def test_unanswerable_questions_are_not_part_of_the_passage_metric():
    recs = [rec(FACT, answer="16 weeks", passages=["16 weeks"]), rec(UNANS, refused=True, passages=["car"])]
    m = score("cfg", recs)
    assert m.key_fact_in_passages == 1.0
    assert set(m.accuracy_by_kind) == {"fact"}


def test_accuracy_is_broken_down_per_kind_in_the_table():
    recs = [
        rec(FACT, answer="You get 16 weeks.", passages=["16 weeks"]),
        rec(MULTI, answer="Use Deel.", passages=["Deel", "16"]),  # one part missing: wrong
        rec(TABLE, answer="L5 earns $182,000 to $214,000.", passages=["| L5 | $182,000 |"]),
        rec(TABLE, answer="$118,000", refused=False, passages=["| L3 | $118,000 |"]),
    ]
    m = score("cfg", recs)
    assert m.accuracy == pytest.approx(2 / 4)
    assert m.accuracy_by_kind == {"fact": 1.0, "multi": 0.0, "table": 0.5}
    assert m.key_fact_by_kind == {"fact": 1.0, "multi": 1.0, "table": 0.5}
    md = table([m])
    assert "| key fact in passages shown | 0.75 |" in md
    assert "| accuracy: table | 0.50 |" in md and "| accuracy: multi | 0.00 |" in md
    assert "accuracy: howto" not in md  # no such questions: no row
    assert md.index("hit@5") < md.index("key fact in passages shown") < md.index("answer accuracy")


def test_a_refused_answer_is_wrong_even_when_it_repeats_the_key_fact():
    r = rec(FACT, answer="I couldn't find this; see the 16-weeks page.", refused=True, passages=["16 weeks"])
    m = score("cfg", [r])
    assert m.accuracy == 0.0 and m.key_fact_in_passages == 1.0


def test_table_is_a_known_question_kind(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"id": "t1", "question": "x", "kind": "table", "must_contain": ["a"]}) + "\n")
    assert load_questions(f)[0].kind == "table"
