"""Verification of a model's answer against the passages it was given.

``verify_claims`` keeps the model's sentences that their cited (or best) source supports — numbers and key
terms present there, a table row read with its header, or a source sentence close in meaning — and that
address the question; everything else is dropped. It does not pick quotes, decide refusals or build the
answer text (assistant/answering.py does).
"""

from __future__ import annotations

import re

import numpy as np

from assistant import grounding as g
from assistant import quoting
from assistant.relevance_protocol import RelevanceScorer
from assistant.retrieval import Hit

_REFUSAL_HINT = re.compile(
    r"couldn'?t find|could not find|not (?:mentioned|provided|in the (?:sources|documents))|"
    r"no information|don'?t know|cannot answer|can'?t answer",
    re.I,
)


def verify_claims(
    question: str,
    model_text: str,
    sources: list[Hit],
    *,
    embedder,
    scorer: RelevanceScorer,
    calibrated: bool,
    settings,
) -> tuple[list[str], set[int]]:
    """Keep the model's sentences that their cited (or best) source supports and that address the
    question; return them (each ending in its citation) and the indexes of the sources used.
    ``settings`` is the ``answering`` section."""
    kept: list[str] = []
    used: set[int] = set()
    a = settings
    if not model_text.strip():
        return kept, used
    claims = [s.text for s in g.sentences(model_text, min_chars=8)]
    if not claims:
        return kept, used
    texts = [g.strip_instructions(h.text) for h in sources]  # injected instructions support nothing
    claim_vecs = embedder.embed([g.strip_citations(c) for c in claims])
    qv = embedder.embed_query(question)
    qwords = g.content_words(question)
    cited_anywhere = sorted({n - 1 for c in claims for n in g.citations_in(c) if 1 <= n <= len(sources)})
    on_topic = scorer.score(question, [g.strip_citations(c) for c in claims]) if calibrated else None
    for ci, (claim, cv) in enumerate(zip(claims, claim_vecs)):
        if _REFUSAL_HINT.search(claim) or g.looks_like_instruction(claim):
            continue
        plain = g.strip_citations(claim)
        # a true statement that does not address the question is noise, not an answer
        if on_topic is not None:
            if float(on_topic[ci]) < a.min_answer_relevance / 2:
                continue
        elif float(cv @ qv) < a.min_claim_similarity and not (qwords & g.content_words(plain)):
            continue
        cited = [n - 1 for n in g.citations_in(claim) if 1 <= n <= len(sources)]
        candidates = cited or cited_anywhere or list(range(len(sources)))
        best, best_support = None, 0.0
        for i in candidates:
            lex = max([g.lexical_support(plain, texts[i])] + row_support(plain, texts[i]))
            if lex > best_support:
                best, best_support = i, lex
        ok = best is not None and best_support >= a.min_lexical_support
        if not ok:
            # meaning check against individual source sentences (numbers must still match)
            for i in candidates:
                spans = g.sentences(texts[i])
                if not spans or (g.numbers(plain) - g.numbers(texts[i])):
                    continue
                sims = embedder.embed([sp.text for sp in spans]) @ cv
                if float(np.max(sims)) >= a.support_threshold:
                    best, ok = i, True
                    break
        if ok and best is not None:
            used.add(best)
            kept.append(f"{g.clean_quote(plain)} [{best + 1}]")
    return kept, used


def row_support(claim: str, text: str) -> list[float]:
    """Support of a table-shaped claim ("Mid-Market | 100 - 500 devs") by each table row read with its header."""
    if "|" not in claim and ":" not in claim:
        return []
    out = []
    for line in text.split("\n"):
        if line.strip().startswith("|"):
            header = quoting.table_header(text, text.find(line)) or ""
            out.append(g.lexical_support(claim, f"{header} {line}"))
    return out
