"""Verification of model answers: table rows with their header, multi-part answers, irrelevant-but-true
sentences, and a refusal when nothing the model said survives (real embedder: meaning matters here)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from assistant.answering import split_question
from assistant.documents import Principals
from assistant.prompting import REFUSAL
from assistant.service import Assistant
from assistant.settings import AnsweringSettings
from assistant.verification import verify_claims
from connectors.local_files import LocalFilesConnector
from tests.conftest import SAMPLE_DOCS, make_settings
from tests.doubles import ScriptedLLM

SEGMENTS = (
    "## Customer segments\n\n"
    "We size accounts by the number of developers.\n\n"
    "| Segment | Size |\n| --- | --- |\n| SMB | 1 - 100 devs |\n| Mid-Market | 100 - 500 devs |\n"
    "| Enterprise | 500+ devs |\n"
)
LEAVE = (
    "Primary caregivers get 16 weeks of fully paid leave. Secondary caregivers get 6 weeks.\n\n"
    "The office is closed on public holidays and during the winter break."
)
PTO = "Everyone gets 25 days of PTO per year, accrued monthly."


def _verify(embedder, question: str, reply: str, texts: list[str]):
    return verify_claims(
        question,
        reply,
        [SimpleNamespace(text=t) for t in texts],
        embedder=embedder,
        scorer=None,
        calibrated=False,
        settings=AnsweringSettings(),
        parts=split_question(question),
    )


@pytest.mark.parametrize(
    "reply",
    [
        "Mid-Market | 100 - 500 devs [1]",
        "Segment: Mid-Market, Size: 100 - 500 devs [1].",
        "A company with 300 engineers falls into the Mid-Market segment (100 - 500 devs) [1].",
    ],
)
def test_a_table_answer_supported_by_its_row_and_header_is_kept(embedder, reply):
    q = "A company with 300 engineers falls into which of our customer segments?"
    kept, used = _verify(embedder, q, reply, [SEGMENTS])
    assert len(kept) == 1 and "Mid-Market" in kept[0] and kept[0].endswith("[1]")
    assert used == {0}


@pytest.mark.parametrize(
    "reply",
    [
        "A company with 300 engineers is in the Enterprise segment [1].",  # no number from the source
        "Enterprise | 100 - 500 devs [1]",  # a row that does not exist
        "A company with 300 engineers falls into Mid-Market (100 - 800 devs) [1].",  # 800 is invented
    ],
)
def test_a_table_answer_the_rows_do_not_support_is_dropped(embedder, reply):
    q = "A company with 300 engineers falls into which of our customer segments?"
    kept, _ = _verify(embedder, q, reply, [SEGMENTS])
    assert kept == []


def test_a_multi_part_answer_keeps_one_sentence_per_part_with_its_own_source(embedder):
    q = "How many weeks of paid leave do primary caregivers get, and how many PTO days do we have per year?"
    reply = (
        "Primary caregivers get 16 weeks of fully paid leave [1]. Everyone gets 25 days of PTO per year [2]."
    )
    kept, used = _verify(embedder, q, reply, [LEAVE, PTO])
    assert len(kept) == 2
    assert "16 weeks" in kept[0] and kept[0].endswith("[1]")
    assert "25 days" in kept[1] and kept[1].endswith("[2]")
    assert used == {0, 1}


def test_a_true_sentence_that_does_not_answer_the_question_is_dropped(embedder):
    q = "How many weeks of paid parental leave does a primary caregiver get?"
    reply = "The office is closed during the winter break [1]. Primary caregivers get 16 weeks of fully paid leave [1]."
    kept, _ = _verify(embedder, q, reply, [LEAVE])
    assert len(kept) == 1 and "16 weeks" in kept[0] and "winter" not in kept[0]


# -- through the answerer: what the person reads -------------------------------------------------

BOB = Principals(email="bob@northwind.example")


@pytest.fixture(scope="module")
def sample(tmp_path_factory, embedder):
    from assistant.engine import Engine

    settings = make_settings(tmp_path_factory.mktemp("verification") / "data")
    eng = Engine.open(settings, embedder=embedder)
    eng.sync(LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml"))
    yield settings, eng
    eng.close()


def test_a_multi_part_model_answer_reaches_the_person_part_by_part(sample):
    settings, engine = sample
    a = Assistant(
        settings,
        engine=engine,
        llm=ScriptedLLM(
            "Primary caregivers get 16 weeks of fully paid leave [1]. "
            "Everyone gets 25 days of PTO per year [2]."
        ),
    )
    ans = a.ask(
        "How long is parental leave for a primary caregiver, and how many days of PTO do I get per year?",
        who=BOB,
    )
    assert not ans.refused
    assert "16 weeks" in ans.answer and "25 days" in ans.answer
    paths = {c.path for c in ans.citations}
    assert {"handbook/parental-leave.md", "handbook/pto-and-holidays.md"} <= paths


def test_nothing_survives_and_no_quote_answers_so_the_answer_is_a_refusal(sample):
    settings, engine = sample
    a = Assistant(
        settings, engine=engine, llm=ScriptedLLM("The chess tournament in 2019 was won by Dana [1].")
    )
    ans = a.ask("Who won the company chess tournament in 2019?", who=BOB)
    assert ans.refused and ans.answer.startswith(REFUSAL) and "closest documents" in ans.answer
    assert "Dana" not in ans.answer and ans.citations == []


def test_a_citation_after_the_full_stop_belongs_to_the_sentence_before_it(embedder):
    q = "How many weeks of paid leave do primary caregivers get, and how many PTO days do we have per year?"
    reply = (
        "Primary caregivers get 16 weeks of fully paid leave. [1] Everyone gets 25 days of PTO per year. [2]"
    )
    kept, used = _verify(embedder, q, reply, [LEAVE, PTO])
    assert len(kept) == 2 and kept[0].endswith("[1]") and kept[1].endswith("[2]") and used == {0, 1}


def _sources_in(prompt: list[dict]) -> int:
    import re

    return len(re.findall(r"^\[\d+\] ", prompt[-1]["content"], re.M))


def test_a_long_context_model_reads_more_and_larger_passages(sample):
    settings, engine = sample
    question = "When do carried-over PTO days expire?"
    long_settings = make_settings(
        settings.data_dir,
        llm={"context_tokens": 32768},
        answering={"model_sources": 8, "model_passage_chars": 6000, "sources": 2, "passage_chars": 300},
    )
    wide = ScriptedLLM("Everyone gets 25 days of PTO per year [1].")
    wide.context_tokens = 32768
    Assistant(long_settings, engine=engine, llm=wide).ask(question, who=BOB)
    narrow_settings = make_settings(settings.data_dir, answering={"sources": 2, "passage_chars": 300})
    narrow = ScriptedLLM("Everyone gets 25 days of PTO per year [1].")
    Assistant(narrow_settings, engine=engine, llm=narrow).ask(question, who=BOB)  # 2048-token context
    assert _sources_in(narrow.prompts[0]) <= 2 < _sources_in(wide.prompts[0])
    assert len(wide.prompts[0][-1]["content"]) > 2 * len(narrow.prompts[0][-1]["content"])
