"""The learned answer-unit scorer: its features, its weights file (a hand-made one and the shipped one),
and its wiring into the answerer (which quote is shown, when the answer is a refusal).

The hand-made weights put all their weight on one feature, so which quote wins is known in advance;
the shipped weights are checked end to end with the real embedding model on a small corpus.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from assistant import sentence_scorer as ss
from assistant.answering import Answerer
from assistant.documents import Principals
from assistant.engine import Engine
from assistant.errors import ModelError
from assistant.prompting import REFUSAL
from connectors.local_files import LocalFilesConnector
from tests.conftest import make_settings
from tests.fakes.hash_embedder import HashEmbedder

EVERYONE = Principals(everything=True)

DOCS = {
    "leave.md": """# Parental leave

## Who is eligible

Every employee is eligible from the first day of work, in every country we
operate in; where local law is more generous, local law wins.

## How much leave you get

Primary caregivers get 16 weeks of fully paid leave.

Secondary caregivers get 6 weeks of fully paid leave.

The leave can be split into two blocks within a year of the birth.
""",
    "vacation.md": """# Vacation

We want everyone to rest. Teammates are expected to take at least 30 days off per year,
including public holidays.

Managers review time off every quarter.
""",
    "onboarding.md": """# Onboarding buddy

Every new hire gets a buddy from another team. The buddy answers questions about tools and people.

The pairing lasts 1 month and the buddy and the new hire meet once a week.
""",
}


def _unit(quote: str, *, rank: int = 0, prior: float = 0.5, heading: str = "") -> ss.Unit:
    return ss.Unit(quote, quote, "Doc", heading, rank, rank, prior, 0.0)


def _weights(path, *, feature: str, threshold: float = 0.5, weight: float = 4.0, bias: float = 0.0):
    coef = [weight if f == feature else 0.0 for f in ss.FEATURES]
    data = {
        "features": list(ss.FEATURES),
        "mean": [0.0] * len(ss.FEATURES),
        "scale": [1.0] * len(ss.FEATURES),
        "coef": coef,
        "intercept": bias,
        "threshold": threshold,
    }
    path.write_text(json.dumps(data))
    return path


def test_features_read_the_question_type_and_the_answer_type():
    emb = HashEmbedder()
    units = [
        _unit("Primary caregivers get 16 weeks of fully paid leave."),
        _unit("Every employee is eligible from the first day of work."),
    ]
    x = ss.featurize("How long is parental leave for primary caregivers?", units, emb)
    assert x.shape == (2, len(ss.FEATURES))
    col = ss.FEATURES.index
    assert x[0, col("q_dur_x_dur")] == 1.0 and x[1, col("q_dur_x_dur")] == 0.0
    assert x[0, col("lex_idf")] > x[1, col("lex_idf")]
    # the best unit's relative features are 0, the others' are below
    assert x[:, col("cos_ctx_rel")].max() == 0.0 and x[:, col("lex_idf_rel")].min() < 0.0
    assert ss.featurize("anything?", [], emb).shape == (0, len(ss.FEATURES))


def test_stemming_matches_word_forms():
    assert set(ss.terms("recording days off")) & set(ss.terms("record the day"))


def test_weights_file_round_trips_and_rejects_other_features(tmp_path):
    path = _weights(tmp_path / "w.json", feature="lex_idf")
    scorer = ss.load_sentence_scorer(str(path))
    x = np.zeros((2, len(ss.FEATURES)), dtype=np.float32)
    x[0, ss.FEATURES.index("lex_idf")] = 1.0
    p = scorer.probability(x)
    assert p[0] > 0.95 and p[1] == pytest.approx(0.5)
    again = ss.SentenceScorer.from_json(scorer.to_json())
    assert np.allclose(again.probability(x), p)
    bad = json.loads(path.read_text())
    bad["features"] = bad["features"][:-1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ModelError, match="train_sentence_scorer"):
        ss.load_sentence_scorer(str(tmp_path / "bad.json"))
    with pytest.raises(ModelError, match="No sentence scorer weights"):
        ss.load_sentence_scorer(str(tmp_path / "missing.json"))
    assert ss.load_sentence_scorer("none") is None


def test_shipped_weights_load_and_fit_the_features():
    scorer = ss.load_sentence_scorer("default")
    assert scorer is not None, "assistant/models/sentence_scorer.json is missing from the package"
    assert 0.0 < scorer.threshold < 1.0
    assert scorer.coef.shape == (len(ss.FEATURES),)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    return folder


def _engine(tmp_path_factory, corpus, embedder, **answering):
    settings = make_settings(tmp_path_factory.mktemp("data"), answering=answering)
    eng = Engine.open(settings, embedder=embedder)
    eng.sync(LocalFilesConnector(corpus, name="t"))
    return settings, eng


def _ask(settings, eng, question):
    return Answerer(eng.retriever, None, eng.embedder, settings=settings).ask(question, who=EVERYONE)


def test_hand_made_weights_decide_the_quote_and_the_refusal(tmp_path_factory, corpus):
    weights = tmp_path_factory.mktemp("w")
    # all weight on the share of (IDF-weighted) question words: the sentence repeating them wins
    lex = _weights(weights / "lex.json", feature="lex_idf", threshold=0.6, bias=-1.0)
    settings, eng = _engine(
        tmp_path_factory, corpus, HashEmbedder(), sentence_model=str(lex), learned_refusal=True
    )
    try:
        ans = _ask(settings, eng, "How many weeks of fully paid leave do secondary caregivers get?")
        assert not ans.refused
        assert "Secondary caregivers get 6 weeks" in ans.answer
        assert ans.confidence is not None and ans.confidence >= 0.6
        # the same weights with a threshold no unit reaches: a refusal listing the closest documents
        high = _weights(weights / "high.json", feature="lex_idf", threshold=0.999, bias=-1.0)
        strict = settings.model_copy(
            update={"answering": settings.answering.model_copy(update={"sentence_model": str(high)})}
        )
        ans = _ask(strict, eng, "How many weeks of fully paid leave do secondary caregivers get?")
        assert ans.refused and ans.answer.startswith(REFUSAL) and "closest documents" in ans.answer
    finally:
        eng.close()


def test_second_unit_of_the_same_section_is_joined_in_reading_order(tmp_path_factory, corpus):
    weights = tmp_path_factory.mktemp("w2")
    lex = _weights(weights / "lex.json", feature="lex_idf", threshold=0.1, weight=1.0)
    settings, eng = _engine(
        tmp_path_factory, corpus, HashEmbedder(), sentence_model=str(lex), second_unit_ratio=0.5
    )
    try:
        ans = _ask(settings, eng, "How many weeks of paid leave do primary and secondary caregivers get?")
        quote = re.findall(r"“([^”]*)”", ans.answer)[0]
        assert "16 weeks" in quote and "6 weeks" in quote
        assert quote.index("Primary") < quote.index("Secondary")
        assert "first day of work" not in quote  # another section is never joined
    finally:
        eng.close()


@pytest.mark.parametrize(
    ("question", "facts"),
    [
        ("Is there a minimum amount of vacation I'm expected to take in a year?", ["30 days"]),
        ("How long does the pairing with an onboarding buddy last?", ["1 month"]),
        ("How many weeks of paid leave does a primary caregiver get?", ["16 weeks"]),
    ],
)
def test_shipped_scorer_answers_with_the_fact(tmp_path_factory, corpus, embedder, question, facts):
    settings, eng = _engine(tmp_path_factory, corpus, embedder)
    try:
        ans = _ask(settings, eng, question)
        assert not ans.refused, ans.answer
        assert all(f in ans.answer for f in facts), ans.answer
    finally:
        eng.close()


def test_shipped_scorer_refuses_what_the_documents_do_not_say(tmp_path_factory, corpus, embedder):
    settings, eng = _engine(tmp_path_factory, corpus, embedder)
    try:
        ans = _ask(settings, eng, "What is the monthly car allowance for sales staff?")
        assert ans.refused and ans.answer.startswith(REFUSAL)
    finally:
        eng.close()
