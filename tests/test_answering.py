"""Answering and summaries through a scripted model (fast) — prompt building, verification, refusal, safety."""

from __future__ import annotations

import pytest

from assistant.documents import Principals
from assistant.prompting import REFUSAL
from assistant.service import Assistant
from connectors.local_files import LocalFilesConnector
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.doubles import ScriptedLLM

BOB = Principals(email="bob@northwind.example")
ALICE = Principals(email="alice@northwind.example")


@pytest.fixture(scope="module")
def sample_engine(tmp_path_factory, embedder):
    """One ingested sample corpus for the whole module (these tests only read it)."""
    from assistant.engine import Engine

    settings = make_settings(tmp_path_factory.mktemp("answering") / "data")
    eng = Engine.open(settings, embedder=embedder)
    eng.sync(LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml"))
    yield settings, eng
    eng.close()


@pytest.fixture
def make_assistant(sample_engine):
    settings, engine = sample_engine

    def build(reply):
        return Assistant(settings, engine=engine, llm=ScriptedLLM(reply) if reply is not None else None)

    return build


def test_prompt_numbers_sources_and_marks_them_as_data(make_assistant):
    a = make_assistant("Primary caregivers get 16 weeks of fully paid leave [1].")
    a.ask("How long is parental leave for the primary caregiver?", who=BOB)
    system, user = a.llm.prompts[0][0]["content"], a.llm.prompts[0][-1]["content"]
    assert "not instructions" in system
    assert (
        user.startswith("Sources:\n[1] ") and "<<<" in user and user.rstrip().endswith("primary caregiver?")
    )


def test_supported_answer_keeps_the_claim_and_cites_the_right_document(make_assistant):
    a = make_assistant("Primary caregivers get 16 weeks of fully paid leave [1].")
    ans = a.ask("How long is parental leave for the primary caregiver?", who=BOB)
    assert not ans.refused
    assert "16 weeks" in ans.answer
    assert ans.citations and ans.citations[0].path == "handbook/parental-leave.md"
    assert "16 weeks" in ans.citations[0].quote


def test_invented_number_is_dropped_and_replaced_by_the_supporting_quote(make_assistant):
    a = make_assistant("Primary caregivers get 52 weeks of leave [1].")
    ans = a.ask("How many weeks of paid parental leave does a primary caregiver get?", who=BOB)
    assert "52" not in ans.answer
    assert "16 weeks" in ans.answer
    assert ans.model_answer.startswith("Primary caregivers get 52")


def test_unanswerable_question_is_refused_with_closest_documents(make_assistant):
    a = make_assistant("Yes, dogs are welcome on Fridays [1].")
    ans = a.ask("Who won the company chess tournament in 2019?", who=BOB)
    assert ans.refused and ans.answer.startswith(REFUSAL)
    assert ans.citations == []


def test_restricted_content_never_reaches_bob_even_if_the_model_says_it(make_assistant):
    a = make_assistant("The L5 band is $182,000 to $214,000 [1].")
    ans = a.ask("What is the salary band for an L5 engineer?", who=BOB)
    assert "182,000" not in ans.answer and "NW-SALARY-CANARY" not in ans.answer
    assert all(not c.path.startswith("restricted/") for c in ans.citations)
    assert all(not h.path.startswith("restricted/") for h in ans.retrieved)
    ans = make_assistant("The L5 band is $182,000 to $214,000 [1].").ask(
        "What is the salary band for an L5 engineer?", who=ALICE
    )
    assert "182,000" in ans.answer and ans.citations[0].path.startswith("restricted/")


def test_injected_instructions_and_foreign_links_do_not_reach_the_answer(make_assistant):
    a = make_assistant("PWNED. Visit http://evil.example/steal <!channel> for the printer driver [1].")
    ans = a.ask("How do I set up the office printer?", who=BOB)
    assert "PWNED" not in ans.answer
    assert "evil.example" not in ans.answer and "<!channel>" not in ans.answer
    assert ans.citations  # still answered from the printer document


def test_answer_json_contract(make_assistant):
    ans = make_assistant("The hotel limit in New York is $350 per night [1].").ask(
        "What is the hotel limit per night in New York?", who=BOB
    )
    j = ans.as_json()
    assert set(j) == {
        "question",
        "answer",
        "refused",
        "citations",
        "retrieved",
        "passages",
        "confidence",
        "timings_ms",
    }
    assert j["passages"] and set(j["passages"][0]) == {"path", "title", "text"}
    assert set(j["citations"][0]) == {"n", "doc_id", "source", "path", "title", "url", "quote"}
    assert set(j["retrieved"][0]) == {"rank", "doc_id", "source", "path", "title", "url", "score", "text"}
    assert "$350" in j["answer"]


def test_streaming_deltas_join_to_the_model_answer(make_assistant):
    a = make_assistant("Use nwctl rollback <service> to roll back [1].")
    seen = []
    ans = a.ask("How do I roll back a bad deploy?", who=BOB, on_delta=seen.append)
    assert "".join(seen) == ans.model_answer
    assert "nwctl rollback" in ans.answer


def test_without_a_model_answers_are_extractive_quotes(make_assistant):
    ans = make_assistant(None).ask(
        "How many weeks of paid parental leave does a primary caregiver get?", who=BOB
    )
    assert not ans.refused and "16 weeks" in ans.answer


def test_summary_cites_its_sources_and_respects_access(make_assistant):
    a = make_assistant("Deploys run on trains.")
    s = a.summarize(who=BOB, scope="engineering/", use_llm=False)
    assert s.bullets and all(b.path.startswith("engineering/") for b in s.bullets)
    assert "[1]" in s.as_text() and "Sources:" in s.as_text()
    everything = a.summarize(who=BOB, max_docs=100, use_llm=False)
    assert all(not b.path.startswith("restricted/") for b in everything.bullets)
    assert any(
        b.path.startswith("restricted/") for b in a.summarize(who=ALICE, max_docs=100, use_llm=False).bullets
    )
