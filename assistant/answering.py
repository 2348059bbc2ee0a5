"""Grounded answers: retrieve (as the asker) → excerpts → rank sentences → (generate → verify) → quote, cite.

1. Retrieval runs with the audience's permissions over a wide candidate set (``answering.candidates``
   fused chunks); the chunks are reranked with the relevance scorer and the best documents become
   *excerpts*: the section around each matching chunk (assistant/passages.py), not a lone chunk.
2. Every sentence of the excerpts is scored against the question, read with its title and heading
   ("Parental leave > How much leave: …"). With a relevance model (``RelevanceScorer``, a calibrated
   cross-encoder) that score is the answer/refusal signal. Without one (the CPU default) each sentence
   becomes an *answer unit* (the quote a person would read) and the pick blends the learned answer-unit
   scorer (assistant/sentence_scorer.py, trained on generated questions) with the embedding model's
   cosine plus shared words; the latter, with its own thresholds, also decides refusal. A second unit of
   the same section is joined when it scores nearly as high.
3. A model's answer (when there is a model) is checked sentence by sentence against the sources it
   cites: numbers and key terms must appear there, or the sentence must be close in meaning to a source
   sentence, and it must address the question. Unsupported sentences are dropped.
4. What the person reads: the kept model sentences and/or a quote built around the best sentence
   (assistant/quoting.py: whole sentences, a table row under its header, a list item under the line that
   introduces it). A multi-part question gets one quote per part. When nothing survives and no sentence
   scores high enough, the answer is a refusal that lists the closest documents.
5. Retrieved text is data: injected instructions are blanked before anything is quoted, and every text
   shown (answer and citation quotes) is sanitized — no foreign links (scheme-less ones included), no
   broadcast or user mentions.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from assistant import grounding as g
from assistant import quoting
from assistant import sentence_scorer as ss
from assistant.answer_types import Answer, Citation
from assistant.passages import Excerpt, build_excerpts
from assistant.prompting import REFUSAL, Passage, build_messages
from assistant.relevance_protocol import EmbeddingRelevance, RelevanceScorer
from assistant.retrieval import Audience, Hit
from assistant.verification import verify_claims

__all__ = ["Answer", "Answerer", "Citation", "split_question"]

log = logging.getLogger(__name__)

_REFUSAL_HINT = re.compile(
    r"couldn'?t find|could not find|not (?:mentioned|provided|in the (?:sources|documents))|"
    r"no information|don'?t know|cannot answer|can'?t answer",
    re.I,
)
_QWORD = r"(?:how|what|when|where|who|whom|which|why|is|are|can|could|do|does|did|should|will|would|may)\b"
_PART_SPLIT = re.compile(rf"\?\s+(?={_QWORD})|,?\s+and\s+(?:also\s+)?(?={_QWORD})|;\s+(?={_QWORD})", re.I)
_ASKS = re.compile(rf"\b(?:how|what|when|where|who|whom|which|why)\b|^{_QWORD}", re.I)
_BACKREF = re.compile(r"\b(?:it|its|they|them|their|this|that|these|those|there|one)\b", re.I)
_QUANTITY = re.compile(
    r"\b(?:how (?:many|much|long|often|far|soon|fast|quickly|big|old)|when|what time|which day|"
    r"deadline|minimum|maximum|limit|budget|cost|price|amount)\b",
    re.I,
)


@dataclass(frozen=True)
class _Pick:
    """The best sentence of one question part: source index, the sentence, its score, the quote built on it."""

    part: str
    source: int
    score: float
    quote: str


def _prompt_text(text: str) -> str:
    """An excerpt as the model reads it: injected instructions removed (not just blanked), blank runs collapsed."""
    clean = re.sub(r"[ \t]{2,}", " ", g.strip_instructions(text))
    return re.sub(r"\n[ \t]*(?:\n[ \t]*)+", "\n\n", clean).strip()


def _z(v: np.ndarray) -> np.ndarray:
    """``v`` standardised (mean 0, sd 1; all zeros when constant)."""
    sd = float(np.std(v))
    return (v - np.mean(v)) / sd if sd > 1e-9 else np.zeros_like(v)


def split_question(question: str) -> list[str]:
    """The parts of a multi-part question ("What is A, and how do I B?" → two parts); one part otherwise.
    A part too short to stand alone (fewer than three words) is not split off."""
    raw = [p.strip(" ,;") for p in _PART_SPLIT.split(question) if p.strip(" ,;?")]
    parts: list[str] = []
    context = ""
    for p in raw:  # a statement ("My laptop is broken; how much…") is context for the next part, not a part
        if _ASKS.search(p) or p.endswith("?"):
            parts.append(f"{context}{p}")
            context = ""
        else:
            context += p + "; "
    if context and parts:
        parts[-1] += "; " + context.rstrip("; ")
    if len(parts) < 2 or any(len(p.split()) < 3 for p in parts):
        return [question]
    return parts


class Answerer:
    def __init__(
        self,
        retriever,
        llm,
        embedder,
        *,
        settings,
        adapter: str | None = None,
        relevance: RelevanceScorer | None = None,
    ) -> None:
        self.retriever, self.llm, self.embedder = retriever, llm, embedder
        self.s = settings  # the whole Settings: answering, retrieval, llm sections
        self.adapter = adapter
        self.relevance = relevance
        self.scorer: RelevanceScorer = relevance if relevance is not None else EmbeddingRelevance(embedder)
        self.calibrated = relevance is not None and getattr(relevance, "calibrated", True)
        self.sentence_scorer = ss.load_sentence_scorer(settings.answering.sentence_model)

    # -- public ---------------------------------------------------------------------------------
    def ask(
        self,
        question: str,
        *,
        who,
        history: list[tuple[str, str]] | None = None,
        adapter: str | None = None,
        on_delta: Callable[[str], None] | None = None,
        k: int | None = None,
    ) -> Answer:
        t0 = time.perf_counter()
        a = self.s.answering
        question = " ".join(question.split())[:2000]  # a 10,000-character paste is truncated, not fatal
        audience = Audience.of(who)
        timings: dict[str, float] = {}
        if not question.strip():
            return self._refuse(question, [], timings, t0)
        parts = split_question(question) if a.split_questions else [question]
        n_sources, passage_chars = self._passage_budget(k)
        sources: list[Excerpt] = []
        hits_all: list[Hit] = []
        picks: list[_Pick | None] = []
        for n, part in enumerate(parts):
            # a later part that refers back ("…, and who handles it?") or is too short to stand alone
            # ("…, and where do I ask?") borrows the first part's key words
            query = (
                part
                if n == 0 or not (_BACKREF.search(part) or len(g.content_words(part)) <= a.short_part_words)
                else f"{part} ({' '.join(sorted(g.content_words(parts[0])))})"
            )
            if history:
                query = f"{history[-1][0]} {query}"
            tr = time.perf_counter()
            hits = self.retriever.search(query, who=audience, k=a.candidates, per_doc=4)
            timings["retrieve"] = timings.get("retrieve", 0.0) + (time.perf_counter() - tr) * 1e3
            hits_all += [h for h in hits if all(h.chunk_id != x.chunk_id for x in hits_all)]
            if not hits or (
                not self.calibrated and max(h.similarity for h in hits) < a.min_relevance and len(parts) == 1
            ):
                picks.append(None)
                continue
            tq = time.perf_counter()
            excerpts = build_excerpts(
                self.retriever.store,
                self._rank_chunks(query, hits),
                max_docs=n_sources,
                max_chars=passage_chars,
                windows_per_doc=a.windows_per_doc,
            )
            index = []
            for ex in excerpts:  # one numbered source per document across all parts
                at = next((i for i, s in enumerate(sources) if s.hit.doc_key == ex.hit.doc_key), None)
                if at is None:
                    sources.append(ex)
                    at = len(sources) - 1
                index.append(at)
            picks.append(
                self._pick(part, query, excerpts, index, avoid={p.quote for p in picks if p is not None})
            )
            timings["quotes"] = timings.get("quotes", 0.0) + (time.perf_counter() - tq) * 1e3
        retrieved = sorted(hits_all, key=lambda h: -h.score)[: max(n_sources, 5)]
        if not sources:
            return self._refuse(question, retrieved, timings, t0)
        sources = self._fit_sources(question, sources, history)
        picks = [p if p is not None and p.source < len(sources) else None for p in picks]

        model_text = ""
        if self.llm is not None:
            t2 = time.perf_counter()
            msgs = build_messages(
                question,
                [Passage(i + 1, s.hit.title, _prompt_text(s.hit.text)) for i, s in enumerate(sources)],
                history=history,
            )
            kwargs = dict(
                max_new_tokens=self.s.llm.max_new_tokens,
                temperature=self.s.llm.temperature,
                stop=["\nQuestion:", "\nSources:"],
                adapter=adapter if adapter is not None else self.adapter,
            )
            if on_delta is None:
                model_text = self.llm.generate(msgs, **kwargs)
            else:
                chunks = []
                for delta in self.llm.stream(msgs, **kwargs):
                    chunks.append(delta)
                    on_delta(delta)
                model_text = "".join(chunks)
            timings["generate"] = (time.perf_counter() - t2) * 1e3

        t3 = time.perf_counter()
        kept, used = verify_claims(
            question,
            model_text,
            [s.hit for s in sources],
            embedder=self.embedder,
            scorer=self.scorer,
            calibrated=self.calibrated,
            settings=a,
            parts=parts,
        )
        model_refused = bool(_REFUSAL_HINT.search(model_text)) and not kept
        floor = a.min_answer_relevance if self.calibrated else a.min_quote_score
        if not self.calibrated and self.sentence_scorer is not None and a.learned_refusal:
            floor = self.sentence_scorer.threshold  # a probability from the learned scorer
        elif model_refused and not self.calibrated:
            floor = max(floor, a.model_refusal_quote_score)
        good = [p for p in picks if p is not None and p.score >= floor]
        confidence = max((p.score for p in picks if p is not None), default=None)
        if not kept and not good:
            # neither the model nor any quote answers the question: refusing beats showing something unrelated
            ans = self._refuse(question, retrieved, timings, t0, model_text=model_text, passages=sources)
            ans.confidence = confidence
            return ans
        lines = list(kept)
        cite_idx: list[int] = sorted(used)
        kept_text = " ".join(kept)
        for part, p in zip(parts, picks):
            if p is None or p.score < floor:
                if len(parts) > 1 and not kept:
                    lines.append(f"I couldn't find an answer to “{part.rstrip('?')}?”.")
                continue
            covered = (
                kept
                and g.numbers(p.quote) <= g.numbers(kept_text)
                and g.lexical_support(p.quote, kept_text) > 0.8
            )
            if covered:
                continue
            title = sources[p.source].hit.title
            lines.append(
                f"“{p.quote}” [{p.source + 1}]"
                if kept
                else f"According to {title}: “{p.quote}” [{p.source + 1}]"
            )
            if p.source not in cite_idx:
                cite_idx.append(p.source)
        allowed = {s.hit.url for s in sources if s.hit.url}
        hosts = set(a.allowed_link_hosts)
        citations = []
        for si in cite_idx:
            h = sources[si].hit
            q = next((p.quote for p in picks if p is not None and p.source == si), None)
            if q is None:
                q = quoting.compose(
                    h.text, g.sentences(g.strip_instructions(h.text)) or [g.Span(0, 0, "")], 0
                )[:300]
            citations.append(
                Citation(
                    si + 1,
                    h.doc_id,
                    h.source,
                    h.path,
                    h.title,
                    h.url,
                    g.sanitize(q, allowed_urls=allowed, allowed_hosts=hosts),
                )
            )
        text = g.sanitize("\n".join(lines), allowed_urls=allowed, allowed_hosts=hosts)
        timings["verify"] = (time.perf_counter() - t3) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Answer(
            question,
            text,
            False,
            sorted(citations, key=lambda c: c.n),
            retrieved,
            timings,
            model_text,
            [s.hit for s in sources],
            confidence,
        )

    # -- steps ----------------------------------------------------------------------------------
    def _refuse(
        self,
        question: str,
        hits: list[Hit],
        timings: dict,
        t0: float,
        *,
        model_text: str = "",
        passages: list[Excerpt] | None = None,
    ) -> Answer:
        closest = list(dict.fromkeys(f"{h.title} ({h.path})" for h in hits))[:3]
        text = REFUSAL + (" The closest documents I found: " + "; ".join(closest) + "." if closest else "")
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return Answer(
            question,
            g.sanitize(text, allowed_urls=set()),
            True,
            [],
            hits,
            timings,
            model_text,
            [s.hit for s in passages or []],
        )

    @staticmethod
    def _context(title: str, heading: tuple[str, ...]) -> str:
        return " > ".join(dict.fromkeys(x for x in (title, *heading) if x))

    def _rank_chunks(self, query: str, hits: list[Hit]) -> list[tuple[Hit, float]]:
        """Passage-level rerank of the candidate chunks, best first."""
        if self.calibrated:
            texts = [
                f"{self._context(h.title, h.heading_path)}: {g.strip_instructions(h.text)}" for h in hits
            ]
            scores = self.scorer.score(query, texts)  # (n,) 0..1
        else:
            qw = g.content_words(query)
            scores = np.array(
                [
                    h.similarity
                    + 0.1
                    * len(qw & g.content_words(f"{h.title} {' '.join(h.heading_path)} {h.text}"))
                    / (len(qw) or 1)
                    for h in hits
                ]
            )
        order = np.argsort(-scores, kind="stable")
        return [(hits[i], float(scores[i])) for i in order]

    def _candidates(self, part: str, excerpts: list[Excerpt]) -> list[tuple[int, list[g.Span], int, ss.Unit]]:
        """The answer units of the excerpts (one per sentence, its quote composed), at most
        ``answering.max_sentences`` of them: those sharing most words with ``part``, spread over the
        excerpts (each keeps its share, in reading order on ties)."""
        cands: list[tuple[int, list[g.Span], int, ss.Unit]] = []
        qw = set(ss.terms(part))
        for e, ex in enumerate(excerpts):
            spans = g.sentences(g.strip_instructions(ex.hit.text))
            for j, sp in enumerate(spans):
                heading = ex.heading_at(sp.start)
                quote = quoting.compose(ex.hit.text, spans, j, heading)
                unit = ss.Unit(
                    quote=quote,
                    sentence=sp.text,
                    title=ex.hit.title,
                    heading=heading[-1] if heading else "",
                    excerpt=e,
                    rank=e,
                    prior=float(ex.score),
                    position=j / max(1, len(spans) - 1),
                )
                cands.append((e, spans, j, unit))
        cap = self.s.answering.max_sentences
        if len(cands) > cap:
            # scoring every unit costs embeddings: keep the ones sharing most words with the question
            share = max(1, cap // len(excerpts))
            keep: list[int] = []
            for e in range(len(excerpts)):
                mine = [i for i, c in enumerate(cands) if c[0] == e]
                mine.sort(
                    key=lambda i: -len(qw & set(ss.terms(f"{cands[i][3].heading} {cands[i][3].quote}")))
                )
                keep += mine[:share]
            keep.sort()
            cands = [cands[i] for i in keep]
        return cands

    def _pick(
        self,
        part: str,
        query: str,
        excerpts: list[Excerpt],
        index: list[int],
        *,
        avoid: set[str] = frozenset(),
    ) -> _Pick | None:
        """The unit of the excerpts that best answers ``part``: the quote built around its sentence."""
        cands = self._candidates(part, excerpts)
        if not cands:
            return None
        units = [c[3] for c in cands]
        learned = None if self.calibrated else self.sentence_scorer
        # each sentence read with its title and nearest heading (a table row with its header): the text
        # the relevance score and the refusal thresholds are calibrated on
        texts = [
            f"{self._context(u.title, (u.heading,))}: "
            f"{(u.quote if u.sentence.startswith('|') else u.sentence)[:400]}"
            for u in units
        ]
        rel = self.scorer.score(query, texts)  # (n,)
        if learned is not None:
            score = prob = learned.probability(ss.featurize(part, units, self.embedder))  # (n,) 0..1
        prior = np.array([u.prior for u in units])  # (n,)
        if self.calibrated:
            signal = score = 0.8 * rel + 0.2 * prior
        else:
            qw = g.content_words(part)
            wants_number = bool(_QUANTITY.search(part))
            lex = np.array([len(qw & g.content_words(t)) / (len(qw) or 1) for t in texts])
            num = np.array([1.0 if wants_number and g.numbers(u.sentence) else 0.0 for u in units])
            a = self.s.answering
            signal = 0.7 * (rel + a.lexical_weight * lex + 0.05 * num) + 0.3 * prior
            if learned is None:
                score = signal
            else:
                if a.learned_refusal:
                    signal = score
                # the pick: the learned probability blended with the embedding + shared-words score,
                # each standardised over this question's units (learned_weight 1 = the learned one only)
                w = a.learned_weight
                score = w * _z(np.log(score + 1e-6) - np.log1p(-score + 1e-6)) + (1 - w) * _z(signal)
        # the refusal signal: the learned probability only with answering.learned_refusal; otherwise the
        # best unit's embedding + shared-words score (it separates answerable from unanswerable dev
        # questions better than the learned probability, which is calibrated on generated questions)
        confidence = float(np.max(signal))
        order = np.argsort(-score, kind="stable")
        for best in order[:5]:  # another part's quote is not shown twice
            e, _spans, j, unit = cands[best]
            if unit.quote in avoid:
                continue
            quote = unit.quote
            if learned is not None:
                quote = self._with_second(cands, prob, int(best), order)
            return _Pick(part, index[e], confidence if learned is not None else float(score[best]), quote)
        return None

    def _with_second(self, cands, prob: np.ndarray, best: int, order: np.ndarray) -> str:
        """The best unit's quote, joined (in reading order) with the next-best unit of the same excerpt
        and section (among the next three) whose learned probability is at least
        ``answering.second_unit_ratio`` of the best's and that says something the first quote does not."""
        e, _spans, j, unit = cands[best]
        ratio = self.s.answering.second_unit_ratio
        for other in order[1:4]:
            oe, _os, oj, ou = cands[other]
            if other == best or oe != e or ou.heading != unit.heading or prob[other] < ratio * prob[best]:
                continue
            if ou.quote in unit.quote or unit.quote in ou.quote or abs(oj - j) > 6:
                continue
            first, second = (unit.quote, ou.quote) if j < oj else (ou.quote, unit.quote)
            return f"{first} … {second}"
        return unit.quote

    def _fit_sources(self, question: str, sources: list[Excerpt], history) -> list[Excerpt]:
        """Drop the weakest sources (the last ones) until prompt + answer fit the model's context."""
        if self.llm is None:
            return sources
        budget = min(self.llm.context_tokens, self.s.llm.context_tokens) - self.s.llm.max_new_tokens
        chosen = list(sources)
        while len(chosen) > 1:
            msgs = build_messages(
                question,
                [Passage(i + 1, s.hit.title, _prompt_text(s.hit.text)) for i, s in enumerate(chosen)],
                history=history,
            )
            if self.llm.count_message_tokens(msgs) <= budget:
                return chosen
            chosen.pop()
        return chosen

    def _passage_budget(self, k: int | None) -> tuple[int, int]:
        """(sources, characters per excerpt window): a model whose usable context holds at least
        ``answering.model_context_tokens`` (Qwen's 32k, with ``llm.context_tokens`` raised to match) reads
        more and larger passages than the CPU default; ``k`` still overrides the number of sources."""
        a = self.s.answering
        if self.llm is not None:
            usable = min(self.llm.context_tokens, self.s.llm.context_tokens)
            if usable >= a.model_context_tokens:
                return k or a.model_sources, a.model_passage_chars
        return k or a.sources, a.passage_chars
