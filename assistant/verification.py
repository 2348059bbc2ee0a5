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
    scorer: RelevanceScorer | None,
    calibrated: bool,
    settings,
    parts: list[str] | None = None,
) -> tuple[list[str], set[int]]:
    """Keep the model's sentences that their cited (or best) source supports and that address the
    question; return them (each ending in its citation) and the indexes of the sources used.

    ``settings`` is the ``answering`` section. ``parts`` are the parts of a multi-part question: a
    sentence needs to address one of them, not the whole question. What the question itself states
    ("a company with 300 engineers") may be repeated when the sentence also says something from its
    source. A sentence supported by a table row counts the row's header as its context, so
    "Mid-Market | 100 - 500 devs" addresses "which segment…" through the row it restates."""
    kept: list[str] = []
    used: set[int] = set()
    a = settings
    if not model_text.strip():
        return kept, used
    claims = [s.text for s in g.sentences(cites_inside(model_text), min_chars=8)]
    if not claims:
        return kept, used
    asks = [p for p in (parts or []) if p.strip()] or [question]
    texts = [g.strip_instructions(h.text) for h in sources]  # injected instructions support nothing
    plains = [g.strip_citations(c) for c in claims]
    claim_vecs = embedder.embed(plains)
    ask_vecs = np.stack([embedder.embed_query(q) for q in dict.fromkeys([question, *asks])])  # (k, dim)
    qwords = g.content_words(question)
    cited_anywhere = sorted({n - 1 for c in claims for n in g.citations_in(c) if 1 <= n <= len(sources)})
    for claim, plain, cv in zip(claims, plains, claim_vecs):
        if _REFUSAL_HINT.search(claim) or g.looks_like_instruction(claim):
            continue
        cited = [n - 1 for n in g.citations_in(claim) if 1 <= n <= len(sources)]
        candidates = cited or cited_anywhere or list(range(len(sources)))
        best, best_support, context = None, 0.0, ""
        for i in candidates:
            lex = support(plain, prose_of(texts[i]), question=question)
            if lex > best_support:
                best, best_support, context = i, lex, ""
            for row, score in row_support(plain, texts[i], question=question):
                if score > best_support:
                    best, best_support, context = i, score, row
        ok = best is not None and best_support >= a.min_lexical_support
        if not ok:
            # meaning check against individual prose sentences, each holding the claim's numbers itself
            # (beside any the question states); table rows were checked word by word above: an embedding
            # cannot tell "Enterprise | 100 - 500 devs" from the Mid-Market row it copies
            qnums = g.numbers(question)
            for i in candidates:
                spans = [
                    sp
                    for sp in g.sentences(texts[i])
                    if not sp.text.lstrip().startswith("|") and numbers_ok(plain, sp.text, qnums)
                ]
                if not spans:
                    continue
                sims = embedder.embed([sp.text for sp in spans]) @ cv
                if float(np.max(sims)) >= a.support_threshold:
                    best, ok = i, True
                    break
        if not ok or best is None:
            continue
        # a true statement that does not address the question (or any of its parts) is noise, not an answer
        about = f"{plain} ({context})" if context else plain
        if calibrated and scorer is not None:
            on_topic = max(float(scorer.score(q, [about])[0]) for q in asks)
            if on_topic < a.min_answer_relevance / 2:
                continue
        elif float(np.max(ask_vecs @ cv)) < a.min_claim_similarity and not (qwords & g.content_words(about)):
            continue
        used.add(best)
        shown = _DOUBLE_STOP.sub(r"\1", g.clean_quote(plain))  # "product.." (a stop before and after "[6]")
        kept.append(f"{shown} [{best + 1}]")
    return kept, used


_DOUBLE_STOP = re.compile(r"([.!?])\.+$")
_CITE_AFTER_STOP = re.compile(r"([.!?])[ \t]*(\[\d{1,2}\](?:[ \t]*\[\d{1,2}\])*)")


def cites_inside(text: str) -> str:
    """ "X. [1] Y. [2]" → "X [1]. Y [2].": a citation written after the full stop belongs to the sentence
    before it, not to the next one (the sentence splitter would hand it to the next)."""
    return _CITE_AFTER_STOP.sub(lambda m: " " + m.group(2) + m.group(1), text)


def support(claim: str, text: str, *, question: str = "") -> float:
    """0..1: the share of the claim's content words ``text`` holds; 0 when a number is missing from it.

    The question's own words and numbers are the asker's premise ("a company with 300 engineers"):
    they count as supported, provided the claim also carries something from ``text`` the question
    does not (a word or a number), so restating the question alone supports nothing; a number from the
    question is allowed only beside a number from ``text``."""
    nums, have = g.numbers(claim), g.numbers(text)
    qnums, qwords = g.numbers(question), g.content_words(question)
    words, twords = g.content_words(claim), g.content_words(text)
    new_info = bool((nums & have) - qnums or (words & twords) - qwords)
    if not numbers_ok(claim, text, qnums):
        return 0.0
    if not words:
        return 1.0 if nums else 0.0
    plain = len(words & twords) / len(words)
    return max(plain, len(words & (twords | qwords)) / len(words)) if new_info else plain


def _is_row(line: str) -> bool:
    return line.strip().startswith("|") and not re.fullmatch(r"[\s|:\-]+", line)


def numbers_ok(claim: str, text: str, question_numbers: set[str]) -> bool:
    """Every number of the claim is in ``text``, or is one the question states while another number
    of the claim comes from ``text`` ("300 engineers: Mid-Market, 100 - 500 devs"); a bare label next
    to the question's number ("300 engineers is Enterprise") cannot be checked and fails."""
    nums, have = g.numbers(claim), g.numbers(text)
    missing = nums - have
    return not missing or (bool((nums & have) - question_numbers) and missing <= question_numbers)


def row_support(claim: str, text: str, *, question: str = "") -> list[tuple[str, float]]:
    """Support of a claim by each Markdown table row of ``text`` read with its header and the prose
    around the table, never with the other rows: [(header + row, score)]. Words and numbers collected
    from several rows ("Enterprise | 100 - 500 devs" when 100 - 500 is Mid-Market's row) support nothing."""
    lines = text.split("\n")
    rows = [i for i, line in enumerate(lines) if _is_row(line)]
    if not rows:
        return []
    prose = "\n".join(line for line in lines if not line.strip().startswith("|"))
    out = []
    for i in rows:
        header = quoting.table_header(text, text.find(lines[i])) or ""
        if header.strip() == lines[i].strip():
            continue  # the header row itself states nothing
        row = f"{header} {lines[i]}".strip()
        out.append((row, support(claim, f"{prose}\n{row}", question=question)))
    return out


def prose_of(text: str) -> str:
    """``text`` without its table rows: the view a claim that is not about one row is checked against."""
    return "\n".join(line for line in text.split("\n") if not line.strip().startswith("|"))
