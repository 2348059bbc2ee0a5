"""Grounding helpers shared by answering and summaries: sentences, key terms, support checks, sanitizing.

A statement is *supported* by a passage when every number in it appears in the passage and most of
its content words do (a cheap, exact test), or when it is close in meaning to one sentence of the
passage (embedding similarity). Sanitizing removes what retrieved text must never smuggle into an
answer: links to hosts the cited sources do not live on, and Slack broadcast mentions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np

_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[*_`-])|\n+")
_NUM = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}|\b[A-Za-z]+\d[A-Za-z0-9]*\b")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>|)\]]+", re.I)
_SLACK_LINK = re.compile(r"<(https?://[^|>]+)(?:\|([^>]*))?>")
_BROADCAST = re.compile(r"<!(?:channel|here|everyone)(?:\|[^>]*)?>|@(?:channel|here|everyone)\b|<!subteam\^[^>]*>", re.I)
_CITE = re.compile(r"\[(\d{1,2})\]")
_USER_MENTION = re.compile(r"<@[UW][A-Z0-9]+(?:\|[^>]*)?>")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:instructions?|above|previous|prior|rules|prompt)\b"
    r"|\bsystem\s+prompt\b|\bdeveloper\s+mode\b|\bnew\s+(?:instructions?|task|policy|rules)\s*:"
    r"|\badmin(?:istrator)?\s+override\b|\bno\s+restrictions\b|\bjailbreak"
    r"|\b(?:dear|attention|hey|note to(?: the)?)\s+(?:assistant|ai|bot|chatbot|language model|llm)\b"
    r"|\b(?:assistant|ai|language model|llm)s?\s*(?:must|should|shall|will)\s+(?:now\s+)?(?:reply|respond|answer|say|output|print|include)"
    r"|</?\s*(?:system|sources|instructions?)\s*>|^\s*(?:system|human|assistant)\s*:"
    r"|\b(?:reply|respond|answer)\s+(?:only\s+)?with\b|\bmust\s+now\s+(?:reply|output|say|respond)"
    r"|\b(?:for|to)\s+(?:all\s+)?(?:ai|the\s+assistant|assistants|llms?|language\s+models?|chatbots?|bots?)(?:\s+systems?)?\s*[:,]"
    r"|\byour\s+(?:answer|reply|response|output)\s+(?:must|should|shall)\b",
    re.I | re.M)
_MD_NOISE = re.compile(r"^\s*(?:[#>*-]+|\d+\.|\|)\s*|\*\*|__|`")

STOP = frozenset("""a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further get gets got had
has have having he her here hers him his how i if in into is it its itself just me more most my no nor not now
of off on once only or other our ours out over own same she should so some such than that the their theirs
them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours per may must shall within without us via one""".split())


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


def looks_like_instruction(text: str) -> bool:
    """Text addressed to the model rather than to people (a prompt-injection attempt)."""
    return bool(_INSTRUCTION.search(text))


def strip_instructions(text: str) -> str:
    """The passage without paragraphs that try to instruct the model (replaced by blanks of the same length,
    so character offsets still map back to the original text)."""
    out = []
    for para in re.split(r"(\n\s*\n)", text):
        out.append(" " * len(para) if looks_like_instruction(para) else para)
    return "".join(out)


def sentences(text: str, *, min_chars: int = 12) -> list[Span]:
    """Sentence-ish spans of a passage (lines, list items and table rows count as sentences; table header
    and separator rows do not)."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _TABLE_SEP.match(line) and "|" in line:
            lines[i] = " " * len(line)
            if i > 0:
                lines[i - 1] = " " * len(lines[i - 1])  # the header row names columns, it states nothing
    text = "\n".join(lines)
    out, pos = [], 0
    for m in list(_SENT_END.finditer(text)) + [None]:
        end = m.start() if m else len(text)
        piece = text[pos:end]
        stripped = piece.strip()
        if len(stripped) >= min_chars and not stripped.startswith("#") and len(_WORD.findall(stripped)) >= 2:
            s = pos + piece.index(stripped[0])
            out.append(Span(s, s + len(stripped), stripped))
        pos = m.end() if m else len(text)
    return out


def clean_quote(text: str) -> str:
    """A quote for display: markdown markers dropped, whitespace collapsed."""
    return " ".join(_MD_NOISE.sub("", line).strip() for line in text.splitlines()).strip()


def numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUM.findall(text)}


def content_words(text: str) -> set[str]:
    return {w.lower()[:6] for w in _WORD.findall(text) if w.lower() not in STOP}


def lexical_support(statement: str, passage: str) -> float:
    """0..1: share of the statement's content words found in the passage; 0 if a number is missing."""
    nums = numbers(statement)
    if nums and not nums <= numbers(passage):
        return 0.0
    words = content_words(statement)
    if not words:
        return 1.0 if nums else 0.0
    return len(words & content_words(passage)) / len(words)


def citations_in(text: str) -> list[int]:
    return [int(n) for n in _CITE.findall(text)]


def strip_citations(text: str) -> str:
    return re.sub(r"\s*\[\d{1,2}\]", "", text).strip()


def sanitize(text: str, *, allowed_urls: set[str]) -> str:
    """Drop links whose host is not one of the cited sources' hosts, and broadcast mentions."""
    hosts = {urlparse(u).netloc.lower() for u in allowed_urls if u and urlparse(u).netloc}

    def keep(url: str) -> bool:
        u = url if "://" in url else "http://" + url
        return urlparse(u).netloc.lower() in hosts

    text = _SLACK_LINK.sub(lambda m: m.group(0) if keep(m.group(1)) else (m.group(2) or ""), text)
    text = _URL.sub(lambda m: m.group(0) if keep(m.group(0)) else "[link removed]", text)
    text = _BROADCAST.sub("", text)
    text = _USER_MENTION.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def best_sentences(query_vec: np.ndarray, spans: list[Span], vecs: np.ndarray, *, query: str,
                   top: int = 3) -> list[tuple[int, float]]:
    """Indexes of the spans that best answer the query: meaning first, shared words as a tie-breaker."""
    if len(spans) == 0:
        return []
    sims = vecs @ query_vec  # (n,)
    qwords = content_words(query)
    bonus = np.array([len(qwords & content_words(s.text)) / (len(qwords) or 1) for s in spans])
    score = sims + 0.15 * bonus
    order = np.argsort(-score)[:top]
    return [(int(i), float(score[i])) for i in order]
