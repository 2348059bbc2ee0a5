"""Grounded answers: retrieve (as the asker) → numbered sources → generate → verify → cite.

The bundled model is a 135M-parameter model: it paraphrases, drops numbers and sometimes invents.
So the system around it decides what is true:
1. Retrieval runs with the audience's permissions; if nothing relevant enough comes back, we refuse
   plainly and list the closest documents instead of letting the model guess.
2. Every sentence of the model's answer is checked against the sources it cites (numbers and key
   terms must appear there, or the sentence must be close in meaning to a source sentence).
   Unsupported sentences are dropped; the best supporting quote, found independently of the model
   by sentence-level similarity, is always attached, and stands in when nothing the model said holds.
3. Retrieved text is data: it sits in delimited blocks, and the final text is sanitized — no links
   to hosts the cited sources do not live on, no Slack broadcast mentions.
A stronger model (remote endpoint, adapter) passes verification more often, so answers get better
without changing this module.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from assistant import grounding as g
from assistant.prompting import REFUSAL, Passage, build_messages
from assistant.retrieval import Audience, Hit

log = logging.getLogger(__name__)

_REFUSAL_HINT = re.compile(r"couldn'?t find|could not find|not (?:mentioned|provided|in the (?:sources|documents))|"
                           r"no information|don'?t know|cannot answer|can'?t answer", re.I)


@dataclass(frozen=True)
class Citation:
    n: int
    doc_id: str
    source: str
    path: str
    title: str
    url: str | None
    quote: str

    def as_json(self) -> dict:
        return {"n": self.n, "doc_id": self.doc_id, "source": self.source, "path": self.path,
                "title": self.title, "url": self.url, "quote": self.quote}


@dataclass
class Answer:
    question: str
    answer: str
    refused: bool
    citations: list[Citation]
    retrieved: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    model_answer: str = ""  # what the model said before verification (for evaluation and debugging)

    def as_json(self) -> dict:
        return {"question": self.question, "answer": self.answer, "refused": self.refused,
                "citations": [c.as_json() for c in self.citations],
                "retrieved": [h.as_json() for h in self.retrieved],
                "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()}}


class Answerer:
    def __init__(self, retriever, llm, embedder, *, settings, adapter: str | None = None, relevance=None) -> None:
        self.retriever, self.llm, self.embedder = retriever, llm, embedder
        self.s = settings  # the whole Settings: answering, retrieval, llm sections
        self.adapter = adapter
        # score(query, texts) -> (n,) float32 in [0, 1] (assistant.relevance.CrossEncoderRelevance), or None
        self.relevance = relevance

    # -- public ---------------------------------------------------------------------------------
    def ask(self, question: str, *, who, history: list[tuple[str, str]] | None = None, adapter: str | None = None,
            on_delta: Callable[[str], None] | None = None, k: int | None = None) -> Answer:
        t0 = time.perf_counter()
        question = " ".join(question.split())[:2000]  # a 10,000-character paste is truncated, not fatal
        audience = Audience.of(who)
        query = question if not history else f"{history[-1][0]} {question}"
        hits = self.retriever.search(query, who=audience, k=k or self.s.retrieval.k, per_doc=2)
        timings = {"retrieve": (time.perf_counter() - t0) * 1e3}
        if not question.strip() or not hits or hits[0].similarity < self.s.answering.min_relevance:
            return self._refuse(question, hits, timings, t0)

        sources = self._fit_sources(question, hits[: self.s.answering.sources], history)
        t1 = time.perf_counter()
        quotes = self._quotes(question, sources)  # [(source index, span, score)] best first
        timings["quotes"] = (time.perf_counter() - t1) * 1e3
        best_score = quotes[0][2] if quotes else 0.0

        model_text = ""
        if self.llm is not None:
            t2 = time.perf_counter()
            msgs = build_messages(question, [Passage(i + 1, h.title, h.text) for i, h in enumerate(sources)],
                                  history=history)
            kwargs = dict(max_new_tokens=self.s.llm.max_new_tokens, temperature=self.s.llm.temperature,
                          stop=["\nQuestion:", "\nSources:"], adapter=adapter if adapter is not None else self.adapter)
            if on_delta is None:
                model_text = self.llm.generate(msgs, **kwargs)
            else:
                parts = []
                for delta in self.llm.stream(msgs, **kwargs):
                    parts.append(delta)
                    on_delta(delta)
                model_text = "".join(parts)
            timings["generate"] = (time.perf_counter() - t2) * 1e3

        t3 = time.perf_counter()
        kept, used = self._verify(question, model_text, sources)
        model_refused = bool(_REFUSAL_HINT.search(model_text)) and not kept
        if not kept and (best_score < self.s.answering.min_quote_score or (model_refused and best_score < 0.55)):
            # neither the model nor the best quote is convincing: refusing beats guessing
            return self._refuse(question, hits, timings, t0, model_text=model_text)
        cite_idx = sorted(used) if used else []
        lead = quotes[0] if quotes else None
        parts = [s for s in kept]
        if lead is not None:
            si, span, _ = lead
            quote = g.clean_quote(self._window(sources[si].text, span))
            covered = g.numbers(quote) <= g.numbers(" ".join(kept)) and g.lexical_support(quote, " ".join(kept)) > 0.8
            if not kept or not covered:
                parts.append(f"“{quote}” [{si + 1}]" if kept else f"According to {sources[si].title}: “{quote}” [{si + 1}]")
            if si not in cite_idx:
                cite_idx.append(si)
        citations = []
        for si in cite_idx:
            h = sources[si]
            q = next((g.clean_quote(self._window(h.text, sp)) for i, sp, _ in quotes if i == si),
                     g.clean_quote(h.text)[:300])
            citations.append(Citation(si + 1, h.doc_id, h.source, h.path, h.title, h.url, q))
        text = g.sanitize(" ".join(parts), allowed_urls={h.url for h in sources if h.url})
        timings["verify"] = (time.perf_counter() - t3) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Answer(question, text, False, sorted(citations, key=lambda c: c.n), hits, timings, model_text)

    # -- steps ----------------------------------------------------------------------------------
    def _refuse(self, question: str, hits: list[Hit], timings: dict, t0: float, *, model_text: str = "") -> Answer:
        closest = list(dict.fromkeys(f"{h.title} ({h.path})" for h in hits))[:3]
        text = REFUSAL + (" The closest documents I found: " + "; ".join(closest) + "." if closest else "")
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Answer(question, text, True, [], hits, timings, model_text)

    def _fit_sources(self, question: str, hits: list[Hit], history) -> list[Hit]:
        """Drop the weakest sources until prompt + answer fit the model's context."""
        if self.llm is None:
            return hits
        budget = min(self.llm.context_tokens, self.s.llm.context_tokens) - self.s.llm.max_new_tokens
        chosen = list(hits)
        while chosen:
            msgs = build_messages(question, [Passage(i + 1, h.title, h.text) for i, h in enumerate(chosen)], history=history)
            if self.llm.count_message_tokens(msgs) <= budget:
                return chosen
            chosen.pop()
        return hits[:1]  # one chunk (≤ 256 embedding tokens) always fits a 2k context

    def _quotes(self, question: str, sources: list[Hit]) -> list[tuple[int, g.Span, float]]:
        """Source sentences ranked by how well they answer the question, best first.

        Each sentence is embedded with its document title and heading path in front ("Parental leave >
        Eligibility: …"): on the dev set this finds the sentence holding the key fact twice as often as
        embedding the bare sentence (14 vs 7 of 42), because a short sentence alone has lost its topic."""
        spans: list[tuple[int, g.Span]] = []
        for i, h in enumerate(sources):
            spans += [(i, sp) for sp in g.sentences(g.strip_instructions(h.text))]
        spans = [t for t in spans if len(t[1].text.split()) >= 4] or spans
        if not spans:
            return []
        heads = {i: " > ".join((h.title, *h.heading_path)) for i, h in enumerate(sources)}
        vecs = self.embedder.embed([f"{heads[i]}: {sp.text}" for i, sp in spans])  # (n, dim)
        sims = vecs @ self.embedder.embed_query(question)
        scored = [(i, sp, float(sc) - 0.01 * i) for (i, sp), sc in zip(spans, sims)]
        return sorted(scored, key=lambda t: -t[2])

    @staticmethod
    def _window(text: str, span: g.Span) -> str:
        """The quoted sentence with its neighbours: the fact is often in the sentence before or after."""
        ss = g.sentences(g.strip_instructions(text))
        idx = next((k for k, sp in enumerate(ss) if sp.start == span.start), None)
        if idx is None:
            return span.text
        lo, hi = max(0, idx - 1), min(len(ss), idx + 2)
        return text[ss[lo].start:ss[hi - 1].end]

    def _verify(self, question: str, model_text: str, sources: list[Hit]) -> tuple[list[str], set[int]]:
        """Keep the model's sentences that their cited (or best) source supports; return them and the sources used."""
        kept: list[str] = []
        used: set[int] = set()
        if not model_text.strip():
            return kept, used
        claims = [s.text for s in g.sentences(model_text, min_chars=8)]
        if not claims:
            return kept, used
        texts = [g.strip_instructions(h.text) for h in sources]  # injected instructions support nothing
        claim_vecs = self.embedder.embed([g.strip_citations(c) for c in claims])
        qv = self.embedder.embed_query(question)
        qwords = g.content_words(question)
        cited_anywhere = sorted({n - 1 for c in claims for n in g.citations_in(c) if 1 <= n <= len(sources)})
        for claim, cv in zip(claims, claim_vecs):
            if _REFUSAL_HINT.search(claim) or g.looks_like_instruction(claim):
                continue
            plain = g.strip_citations(claim)
            # a true statement that does not address the question is noise, not an answer
            if float(cv @ qv) < 0.3 and not (qwords & g.content_words(plain)):
                continue
            cited = [n - 1 for n in g.citations_in(claim) if 1 <= n <= len(sources)]
            candidates = cited or cited_anywhere or list(range(len(sources)))
            best, best_support = None, 0.0
            for i in candidates:
                lex = g.lexical_support(plain, texts[i])
                if lex > best_support:
                    best, best_support = i, lex
            ok = best is not None and best_support >= 0.75
            if not ok:
                # meaning check against individual source sentences (numbers must still match)
                for i in candidates:
                    spans = g.sentences(texts[i])
                    if not spans or (g.numbers(plain) - g.numbers(texts[i])):
                        continue
                    sims = self.embedder.embed([sp.text for sp in spans]) @ cv
                    if float(np.max(sims)) >= self.s.answering.support_threshold:
                        best, ok = i, True
                        break
            if ok and best is not None:
                used.add(best)
                kept.append(f"{g.clean_quote(plain)} [{best + 1}]")
        return kept, used
