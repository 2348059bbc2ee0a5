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

_SENT_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(\[*_`-])")
_FENCE_LINE = re.compile(r"^\s*(?:```|~~~)")
_NUM = re.compile(r"\d+(?:[.,:]\d+)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{2,}|\b[A-Za-z]+\d[A-Za-z0-9]*\b")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>|)\]]+", re.I)
_SLACK_LINK = re.compile(r"<(https?://[^|>]+)(?:\|([^>]*))?>")
_BROADCAST = re.compile(
    r"<!(?:channel|here|everyone)(?:\|[^>]*)?>|@(?:channel|here|everyone)\b|<!subteam\^[^>]*>", re.I
)
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
    r"|\byour\s+(?:answer|reply|response|output)\s+(?:must|should|shall)\b"
    r"|\b(?:reveal|print|repeat|output|leak)\b[^.\n]{0,40}\b(?:instructions?|prompt|contents?\s+of)\b"
    r"|\b(?:assistant|bot|ai|chatbot)\s*[,:]\s*(?:always|never|ping|include|embed|say|tell|send|reply|ignore|you|put)\b"
    r"|\byou\s+are\s+(?:now\s+)?\w*bot\b|\b(?:previous|prior|above|old)\s+rules\s+no\s+longer\s+apply"
    r"|\bembed\s+this\b|\bthe\s+assistant\s+(?:was|is|has\s+been)\s+told\b|\bsay\s+pwned\b|\bpwned\b"
    r"|\b(?:for|to)\s+(?:all\s+)?(?:ai|the\s+assistant|assistants|llms?|language\s+models?|chatbots?|bots?)"
    r"(?:\s+\w+){1,2}\s*:",
    re.I | re.M,
)
_MD_NOISE = re.compile(r"^\s*(?:[#>*-]+|\d+\.|\|)\s*|\*\*|__|`")

STOP = frozenset(
    """a about above after again all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further get gets got had
has have having he her here hers him his how i if in into is it its itself just me more most my no nor not now
of off on once only or other our ours out over own same she should so some such than that the their theirs
them then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours per may must shall within without us via one""".split()
)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


def looks_like_instruction(text: str) -> bool:
    """Text addressed to the model rather than to people (a prompt-injection attempt)."""
    return bool(_INSTRUCTION.search(text))


def strip_instructions(text: str) -> str:
    """The passage without text that tries to instruct the model, replaced by blanks of the same length
    (character offsets still map back to the original). In a paragraph holding an injection, the
    sentences that look like instructions are blanked, and so is every later sentence of that paragraph
    that carries a link, an e-mail address or a mention (the payload); the page's other sentences stay,
    so a page carrying an injected line still answers with its real facts."""
    out = []
    for para in re.split(r"(\n\s*\n)", text):
        if not _INSTRUCTION.search(para):
            out.append(para)
            continue
        spans = sentences(para, min_chars=1)
        cuts: list[tuple[int, int]] = []
        tainted = False
        for sp in spans:
            if looks_like_instruction(sp.text) or (tainted and _PAYLOAD.search(sp.text)):
                cuts.append((sp.start, sp.end))
                tainted = True
        for m in _INSTRUCTION.finditer(para):  # a match that no sentence holds (markup, a split tag)
            if not any(a <= m.start() < b for a, b in cuts):
                line_end = para.find("\n", m.end())
                cuts.append((m.start(), len(para) if line_end < 0 else line_end))
        chars = list(para)
        for a, b in cuts:
            chars[a:b] = [c if c == "\n" else " " for c in chars[a:b]]
        out.append("".join(chars))
    return "".join(out)


_PAYLOAD = re.compile(
    r"https?://|www\.|\b[\w.-]+@[\w-]+\.[\w.]+|<[!@]|@(?:channel|here|everyone)\b"
    r"|\b[a-z0-9-]+\.[a-z]{2,24}/",
    re.I,
)


def sentences(text: str, *, min_chars: int = 12) -> list[Span]:
    """Sentence spans of a passage: prose is split at sentence ends (a soft line wrap inside a paragraph
    does not end a sentence); list items, table rows and lines ending in ":" are units of their own;
    headings, table header and separator rows are not sentences (they state nothing)."""
    out: list[Span] = []
    for u in _units(text):
        pos = 0
        piece_text = u.text
        for m in list(_SENT_END.finditer(piece_text)) + [None]:
            end = m.start() if m else len(piece_text)
            piece = piece_text[pos:end]
            stripped = piece.strip()
            words = len(_WORD.findall(stripped))
            short_item = stripped[:1] in "-*+•|" or stripped[:1].isdigit()  # "- 16 weeks", "| L5 | …"
            if (len(stripped) >= min_chars and words >= 2) or (
                short_item and len(stripped) >= 6 and words >= 1 and (words >= 2 or _NUM.search(stripped))
            ):
                s = u.start + pos + piece.index(stripped[0])
                out.append(Span(s, s + len(stripped), stripped))
            pos = m.end() if m else len(piece_text)
    return out


_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")


def _units(text: str) -> list[Span]:
    """Lines grouped into units: a paragraph's soft-wrapped lines join; a list item, a table row or a line
    after a line ending in ":" starts a new unit; headings, blank lines and table header/separator rows end one."""
    lines = text.split("\n")
    skip = set()
    for i, line in enumerate(lines):
        if "|" in line and _TABLE_SEP.match(line):
            skip.add(i)
            if i > 0 and "|" in lines[i - 1]:
                skip.add(i - 1)  # the header row names columns, it states nothing
    units: list[Span] = []
    start = end = None
    pos = 0
    prev = ""
    for i, line in enumerate(lines):
        line_start, stripped = pos, line.strip()
        pos += len(line) + 1
        boundary = (
            i in skip
            or not stripped
            or stripped.startswith("#")
            or stripped.startswith("|")
            or _LIST_ITEM.match(line)
            or prev.endswith(":")
            or _FENCE_LINE.match(line)
        )
        if boundary and start is not None:
            units.append(Span(start, end, text[start:end]))
            start = None
        prev = stripped
        if i in skip or not stripped or stripped.startswith("#") or _FENCE_LINE.match(line):
            continue
        if start is None:
            start = line_start
        end = line_start + len(line.rstrip())
        if stripped.startswith("|"):
            units.append(Span(start, end, text[start:end]))
            start = None
    if start is not None:
        units.append(Span(start, end, text[start:end]))
    # a unit's text keeps its line breaks out: the sentence splitter treats them as spaces
    return [Span(u.start, u.end, u.text.replace("\n", " ")) for u in units]


_HTML_TAG = re.compile(
    r"</?(?:li|ul|ol|td|tr|th|table|tbody|thead|p|br|div|span|b|i|u|em|strong|a|code|pre|h[1-6]|img"
    r"|sup|sub|details|summary|hr|small|center|font)\b[^>]*>",
    re.IGNORECASE,
)


def clean_quote(text: str) -> str:
    """A quote for display: markdown markers and HTML tags dropped, whitespace collapsed."""
    text = _HTML_TAG.sub(" ", text)
    return " ".join(" ".join(_MD_NOISE.sub("", line).split()) for line in text.splitlines()).strip()


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


def sanitize(
    text: str, *, allowed_urls: set[str], allowed_hosts: set[str] | frozenset[str] = frozenset()
) -> str:
    """Drop links whose host is not one of the cited sources' hosts (or ``allowed_hosts``), including
    links written without a scheme (``evil.example/wifi``), and Slack broadcast and user mentions."""
    hosts = {urlparse(u).netloc.lower() for u in allowed_urls if u and urlparse(u).netloc}
    hosts |= {h.lower() for h in allowed_hosts}

    def keep(url: str) -> bool:
        u = url if "://" in url else "http://" + url
        host = (urlparse(u).hostname or "").lower()
        return any(host == h or host.endswith("." + h) for h in hosts)

    text = _SLACK_LINK.sub(lambda m: m.group(0) if keep(m.group(1)) else (m.group(2) or ""), text)
    text = _URL.sub(lambda m: m.group(0) if keep(m.group(0)) else "[link removed]", text)
    text = _BARE_HOST.sub(
        lambda m: m.group(0) if (not _is_link(m) or keep(m.group(1))) else "[link removed]", text
    )
    text = _BROADCAST.sub("", text)
    text = _USER_MENTION.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


# a host name without a scheme: "evil.example/wifi", "evil.example", "docs.evil.io:8080/x"
_BARE_HOST = re.compile(
    r"(?<![@\w./-])((?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,24}))"
    r"((?::\d{1,5})?(?:/[^\s<>|)\]\"']*)?)",
    re.I,
)
# top-level names common enough that a bare "name.tld" is read (and auto-linked by Slack) as a link; with a
# path ("x.yz/..."), any alphabetic top-level name counts. File names ("team.yml", "README.md") do not.
_LINK_TLDS = frozenset(
    """com net org io co ai app dev example info biz xyz me ly gg sh to ru cn tk top site online
link click live shop store cc tv us uk de fr eu nl ca au in jp br it es pl se no ch at be cz club pro icu""".split()
)
_FILE_EXT = frozenset(
    "md txt yml yaml json toml py go ts js tsx jsx rb rs java sh html htm css csv pdf png jpg jpeg gif svg docx xlsx pptx zip gz".split()
)


def _is_link(m: re.Match) -> bool:
    tld, path = m.group(2).lower(), m.group(3)
    if tld in _FILE_EXT and not (path or "").startswith("/"):
        return False
    return tld in _LINK_TLDS or bool(path and path.startswith("/") and tld not in _FILE_EXT)
