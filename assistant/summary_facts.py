"""Facts for summaries: candidate statements from a document's text, scored and chosen.

``facts_of(text, …)`` turns one document's Markdown-ish text into ``Fact`` candidates: sentences of
paragraphs, list items (with the heading and lead-in they sit under) and table rows (rendered with
their header, "Level 3 — Budget: $1,000"). Markdown is cleaned on the way (links keep their text,
emphasis and code marks go), and paragraphs that try to instruct a model are dropped.
``info_score`` rates how much a statement says (numbers, amounts, limits, deadlines, rules, who/when);
``select_facts`` picks the summary: relevance (information, centrality to the scope, an optional
focus) with MMR-style novelty, a per-document cap so the scope's documents are covered in
proportion to what they contain, and a word budget. Sentences are never cut: a fact that does not fit
is skipped.

Not done here: reading the store, embedding, or deciding what changed (``assistant.summaries``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from assistant import grounding as g

_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,3}[.)])\s+(.*)$")
_SETEXT = re.compile(r"^\s{0,3}(?:-{3,}|={3,})\s*$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(?:\|\s*:?-{2,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\((?:[^()]|\([^)]*\))*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_ANGLE_URL = re.compile(r"<(https?://[^>]+)>")
_HTML = re.compile(r"<!--.*?-->|</?[a-zA-Z][^>]*>", re.S)
_SHORTCODE = re.compile(r"\{\{[<%].*?[%>]\}\}|\{#[\w-]+\}", re.S)  # Hugo shortcodes, {#anchor} ids
_LINK_ONLY = re.compile(r"^\s*(?:\[[^\]]*\]\([^)]*\)|<https?://[^>]+>|https?://\S+)\s*[.:]?\s*$")
_EMPH = re.compile(
    r"(\*\*|__|~~)(.+?)\1|(?<![\w*])\*(?!\s)([^*\n]+?)\*(?![\w*])|(?<![\w_])_(?!\s)([^_\n]+?)_(?![\w_])"
)
_CODE = re.compile(r"`([^`]*)`")
_FRONT = re.compile(r"^\s*(?:title|description|tags|date|weight|draft|aliases)\s*:", re.I)
_LEAD_IN = re.compile(r":\s*(?:\d{1,2}[.)]|[-*•])?\s*$")
_ADMONITION = re.compile(r"^\s*>?\s*\[!(?:NOTE|TIP|WARNING|IMPORTANT|CAUTION)\]\s*|^\s*>\s?", re.I | re.M)
_CODEISH = re.compile(r"&&|\|\||\$ |--\w|\b(?:git|kubectl|gcloud|sg|npm|go|docker) [a-z-]+ |https?://|www\.")
_ANAPHORIC = re.compile(
    r"^(?:this|that|these|those|it|they|as such|additionally|however|of course|also|so|but|and|"
    r"otherwise|in addition|in that case|then|example|e\.g\.|for example|instead)\b",
    re.I,
)
_EXAMPLE = re.compile(r"^(?:\(|for example|for instance|e\.g\.|example:|i\.e\.)", re.I)
_DOC_LABEL = re.compile(r"^\s*(?:document|title|source|page)\s*:\s*", re.I)

_MONEY = re.compile(r"[$€£¥]\s?\d|\d\s?(?:%|k\b|USD|EUR|GBP|percent)", re.I)
_DIGIT = re.compile(r"\d")
_RULE = re.compile(
    r"\b(?:must|required?|requires|mandatory|at least|at most|up to|no more than|not more than|no later than|"
    r"maximum|minimum|max|min|limit(?:ed|s)?|only|never|always|not (?:allowed|permitted|eligible|reimburs\w*)|"
    r"eligib\w*|reimburs\w*|approv\w*|deadline|budget\w*|stipend|allowance|policy|cover(?:s|ed)?|"
    r"entitled|per (?:year|month|week|day|night|person|teammate|employee|quarter|trip)|expires?|"
    r"should|need to|have to|is responsible|are responsible|owns?|on-call|escalat\w*|all (?:teammates|employees|"
    r"incidents|issues|requests|changes|commits|travel|customers)|everyone|every teammate)\b",
    re.I,
)
_TIME = re.compile(
    r"\b(?:\d+\s*(?:business\s+)?(?:days?|weeks?|months?|years?|hours?|minutes?|hrs?)|daily|weekly|monthly|"
    r"quarterly|annual(?:ly)?|yearly|every|each|within|before|after|by the end|deadline|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april|may|june|july|"
    r"august|september|october|november|december|Q[1-4]|fiscal|FY\d+)\b",
    re.I,
)
_WHO = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|(?<![\w&])#[a-z][\w-]+|@[a-z][\w-]+")
_PROPER = re.compile(r"(?<=[a-z,;:] )[A-Z][a-zA-Z]+")
_WEAK_START = re.compile(
    r"^(?:this (?:page|document|section|doc|handbook page)|see |read |check out|learn more|click|for more|here (?:is|are)|"
    r"below (?:is|are)|the following|please see|refer to|more information|table of contents|contents|"
    r"note:?$|tl;?dr|welcome|hi |hello)",
    re.I,
)


@dataclass
class Fact:
    """One candidate statement of a document, as it will be shown (clean text, whole sentences)."""

    text: str
    doc: int  # index of the document in the summarizer's list
    pos: int  # order inside the document
    kind: str  # sentence | item | row
    context: str = ""  # title > headings (and lead-in), for scoring and embedding
    section: tuple[str, ...] = ()
    start: int = 0  # character offset of the statement's block in the document text
    chunk: int = -1  # id of the stored chunk holding it
    info: float = 0.0
    score: float = 0.0
    words: int = 0
    tokens: frozenset[str] = field(default_factory=frozenset)


def clean_markdown(text: str) -> str:
    """Inline Markdown → plain text: images dropped, links keep their text, emphasis/code marks removed."""
    text = _ANGLE_URL.sub(lambda m: m.group(1), text)  # before tags: "<https://…>" is an address, not a tag
    text = _HTML.sub(" ", _SHORTCODE.sub(" ", text))
    text = _IMAGE.sub("", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _REF_LINK.sub(lambda m: m.group(1), text)
    for _ in range(2):
        text = _EMPH.sub(lambda m: next(x for x in m.groups()[1:] if x is not None), text)
    text = _CODE.sub(lambda m: m.group(1), text)
    text = text.replace("\\", "")
    text = _ADMONITION.sub("", text)
    return re.sub(r"\s+", " ", text).strip().lstrip("> ").strip()


_BARE_URL = re.compile(r"(?<![\w/])https?://([A-Za-z0-9.-]+\.[A-Za-z]{2,})(?:[/?#][^\s)\]]*)?")


def site_names(text: str) -> str:
    """A bare address in a sentence → the site's name: "We use https://donut.com to schedule 1-1s" →
    "We use Donut to schedule 1-1s" (shown links are stripped by the sanitizer, which would leave a hole)."""

    def name(m: re.Match) -> str:
        labels = m.group(1).lower().split(".")
        label = labels[-2] if len(labels) >= 2 else labels[0]
        return label[:1].upper() + label[1:]

    return _BARE_URL.sub(name, text)


def _finish(text: str) -> str:
    """A statement that ends like one (a list item or row gets a full stop)."""
    text = text.strip().rstrip(",;")
    if text and text[-1] not in ".!?:)\"'”’":
        text += "."
    return text


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|"):
        line = line[:-1]
    return [clean_markdown(c) for c in line.split("|")]


def _row_text(header: list[str], cells: list[str]) -> str:
    """One table row as one terse statement: "IC4-IC6 — Annual budget: $2,500." A header of more than
    four words is left out (the value says it), and so is a cell that runs on as prose (over 20 words)
    when the row has other cells to say something."""
    if not any(cells):
        return ""
    if header and len(header) == len(cells):
        first = cells[0]
        pairs = [(h, c) for h, c in zip(header[1:], cells[1:]) if c]
        short = [(h, c) for h, c in pairs if len(c.split()) <= 20]
        if short and (first or len(short) > 1):
            pairs = short
        rest = [f"{h}: {c}" if h and h.lower() != c.lower() and len(h.split()) <= 4 else c for h, c in pairs]
        lead = f"{header[0]} {first}" if first and first.replace(".", "").isdigit() and header[0] else first
        return _finish(" — ".join(x for x in (lead, "; ".join(rest)) if x))
    return _finish(" — ".join(c for c in cells if c))


_QUOTE = re.compile(r"^(?:\s{0,3}>)+")
_HTML_TABLE = re.compile(r"<table\b[^>]*>(.*?)</table\s*>", re.I | re.S)
_HTML_ROW = re.compile(r"<tr\b[^>]*>(.*?)(?=<tr\b|</table|$)", re.I | re.S)
_HTML_CELL = re.compile(r"<t[dh]\b[^>]*>(.*?)(?=<t[dh]\b|</tr|$)", re.I | re.S)


def html_tables_as_rows(text: str) -> str:
    """HTML tables (``<table><tr><td>``, common in Markdown exported from docs) → pipe-table rows, so each
    row becomes one fact with its header instead of the cells running together into one "sentence".
    Offsets after a table stay where they were (the rows are padded with blank lines)."""

    def rows(m: re.Match) -> str:
        out = []
        for r in _HTML_ROW.findall(m.group(1)):
            cells = [clean_markdown(c).replace("|", "/") for c in _HTML_CELL.findall(r)]
            if any(cells):
                out.append("| " + " | ".join(cells) + " |")
        if len(out) < 2:
            return m.group(0)
        width = out[0].count("|") - 1
        table = "\n".join([out[0], "|" + "---|" * width] + out[1:]) + "\n"
        pad = len(m.group(0)) - len(table)
        return table + "\n" * max(0, pad)

    return _HTML_TABLE.sub(rows, text) if "<t" in text.lower() else text


def facts_of(text: str, *, doc: int, title: str) -> list[Fact]:
    """Candidate statements of one document, in document order."""
    text = html_tables_as_rows(g.strip_instructions(text))
    # a block quote's text is read as text ("> " marks blanked, so offsets stay where they are)
    lines = [_QUOTE.sub(lambda m: " " * len(m.group(0)), line) for line in text.split("\n")]
    offs = [0]
    for line in lines:
        offs.append(offs[-1] + len(line) + 1)
    out: list[Fact] = []
    at = 0  # offset of the block being read
    heads: list[tuple[int, str]] = []
    para: list[str] = []
    lead = ""  # the last paragraph sentence before a list ("The budget covers:")

    def context() -> str:
        return " > ".join([title] + [h for _, h in heads if h and h.lower() != title.lower()])

    def add(raw: str, kind: str, extra: str = "") -> None:
        for span in g.sentences(raw, min_chars=12) if kind != "row" else [g.Span(0, len(raw), raw)]:
            t = site_names(clean_markdown(span.text))
            if not t or _DOC_LABEL.match(t) or len(g.content_words(t)) < 2 or g.looks_like_instruction(t):
                continue
            if t.strip(" .:").lower() == title.strip().lower() or any(
                t.strip(" .:").lower() == h.lower() for _, h in heads
            ):
                continue  # a bullet that only repeats a title says nothing
            ctx = context() + (f" > {extra}" if extra else "")
            if _LEAD_IN.search(t):
                continue  # "covers the following types: 1." introduces a list, it states nothing
            out.append(Fact(_finish(t), doc, len(out), kind, ctx, tuple(h for _, h in heads), at))

    def flush() -> None:
        nonlocal lead
        if para:
            body = " ".join(x.strip() for x in para)
            add(body, "sentence")
            sents = g.sentences(clean_markdown(body), min_chars=4)
            lead = sents[-1].text.rstrip(":") if sents and body.rstrip().endswith(":") else ""
            para.clear()

    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        if line.lstrip().startswith(("```", "~~~")):  # code is shown to machines, not summarised
            flush()
            fence = line.lstrip()[:3]
            i += 1
            while i < n and not lines[i].lstrip().startswith(fence):
                i += 1
            i += 1
            continue
        if (
            line.strip()
            and i + 1 < n
            and _SETEXT.match(lines[i + 1])
            and "|" not in line
            and not _ITEM.match(line)
        ):
            flush()  # "Title\n-----": a heading underlined (plain text and older Markdown)
            level = 1 if lines[i + 1].strip().startswith("=") else 2
            heads = [x for x in heads if x[0] < level] + [(level, clean_markdown(line))]
            lead = ""
            i += 2
            continue
        h = _HEADING.match(line)
        if h and (len(h.group(2).split()) > 16 or ". " in h.group(2)):
            h = None  # a "heading" that runs on for sentences is a message that starts with '#' (Slack)
        if h:
            flush()
            level = len(h.group(1))
            heads = [x for x in heads if x[0] < level] + [(level, clean_markdown(h.group(2)))]
            lead = ""
            i += 1
            continue
        if "|" in line and i + 1 < n and _TABLE_SEP.match(lines[i + 1]) and "|" in lines[i + 1]:
            flush()
            header = _cells(line)
            i += 2
            while i < n and "|" in lines[i] and lines[i].strip():
                at = offs[i]
                add(_row_text(header, _cells(lines[i])), "row", extra=" / ".join(h for h in header if h))
                i += 1
            lead = ""
            continue
        item = _ITEM.match(line)
        if item and not _TABLE_SEP.match(line):
            flush()
            body = [item.group(2)]
            at = offs[i]
            i += 1
            # continuation lines: indented, or "lazy" ones (CommonMark; PDFs wrap list items without indent)
            while (
                i < n
                and lines[i].strip()
                and not _ITEM.match(lines[i])
                and not _HEADING.match(lines[i])
                and not lines[i].lstrip().startswith(("|", "```", "~~~"))
            ):
                body.append(lines[i].strip())
                i += 1
            if not _LINK_ONLY.match(" ".join(body)):  # a list of links is navigation, not a statement
                add(" ".join(body), "item", extra=lead)
            continue
        if not line.strip() or _FRONT.match(line) or _SETEXT.match(line) or line.strip() == "***":
            flush()
            i += 1
            continue
        if not para:
            at = offs[i]
        para.append(line)
        i += 1
    flush()
    return out


_FILLER_LEAD = re.compile(
    r"^(?:(?:please\s+)?(?:remember|note|be aware|keep in mind|bear in mind)(?:\s+that)?[:,]?\s+|"
    r"it is (?:important|worth noting|good|helpful) (?:to (?:note|remember|know) )?that\s+|"
    r"(?:important|note|nota bene|tip|reminder|fyi)\s*[:!-]\s+|"
    r"(?:additionally|in addition|also|finally|generally speaking|in general|of course|as a reminder|"
    r"as such|furthermore|moreover|overall|currently|today)\s*,\s+|"
    r"(?:we|you) (?:understand|know|believe|think|expect|ask) that\s+|"
    r"(?:please\s+)?be sure (?:that|to)\s+(?=[a-z]+\s))",
    re.I,
)
_FILLER_WORD = re.compile(
    r"\s+(?:unfortunately|generally|usually|typically|simply|just|really|actually),?(?=\s)", re.I
)
_TAIL = re.compile(
    r"[,;]\s+(?:so (?:that )?(?:you|we|they|it|everyone|teammates|people)|in order to|to (?:ensure|make sure|help|avoid|"
    r"keep|allow|give)|which (?:means|helps|allows|makes|is why)|as (?:this|that|it|they|we)|because|since|"
    r"e\.g\.|i\.e\.|for example|for instance|such as|and past|where (?:you|we)|allowing|helping|making sure)\b.*$",
    re.I,
)
_PAREN = re.compile(r"\s*\(([^()]{2,80})\)")
_KEEP = re.compile(
    r"\d|[#@$€£%]|\b(?:not|no|never|only|unless|except|without|cannot|must|required?|excluding|including)\b",
    re.I,
)


def compact(text: str) -> str:
    """A shorter statement of the same fact: lead-in fillers ("Please remember that", "Additionally,"),
    hedges ("unfortunately"), purpose/reason tails (", so you can …", ", to ensure …") and asides in
    parentheses are dropped — never a number, an amount, a channel or address, a negation or a
    condition (``unless``, ``only``, ``except`` …), which stay with the rest of the sentence."""
    t = text.strip()
    end = t[-1] if t and t[-1] in ".!" else "."
    body = t.rstrip(".!").strip()
    for _ in range(2):
        body = _FILLER_LEAD.sub("", body, count=1)
    body = _FILLER_WORD.sub("", body)
    tail = _TAIL.search(body)
    if tail and not _KEEP.search(tail.group(0)) and len(body[: tail.start()].split()) >= 6:
        body = body[: tail.start()]
    body = _PAREN.sub(lambda m: m.group(0) if _KEEP.search(m.group(1)) else "", body)
    body = body.strip(" ,;:-")
    if len(body.split()) < 4 or not body:
        return text
    body = body[0].upper() + body[1:]
    return body + end


_QUANTITY = re.compile(
    r"[$€£¥]\s?\d|\d(?:[\d,.]*\d)?\s?(?:%|k\b|x\b|USD|EUR|GBP|percent|hr?s?\b|mins?\b)|"
    r"\b\d(?:[\d,.]*\d)?(?:st|nd|rd|th)?[\s-]+(?:business\s+|working\s+|calendar\s+|full\s+)?"
    r"(?:seconds?|minutes?|hours?|days?|weeks?|months?|quarters?|years?|people|persons?|participants?|"
    r"teammates?|employees?|users?|customers?|engineers?|members?|instances?|times?|percentile|levels?|"
    r"nights?|GB|TB|MB|seats?|licen[cs]es?|attempts?|reviewers?|approvals?|interviews?|sessions?|characters?|"
    r"one-on-ones?|1-1s?|cliff|anniversary)\b|"
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|sixty|ninety)[\s-]+"
    r"(?:business\s+|working\s+)?(?:minutes?|hours?|days?|weeks?|months?|quarters?|years?|people|times)\b",
    re.I,
)
_DATE = re.compile(
    r"\b(?:19|20)\d\d-\d\d-\d\d\b|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+(?:19|20)\d\d\b|"
    r"\bv?\d+\.\d+(?:\.\d+)+\b",
    re.I,
)
_STRONG_RULE = re.compile(
    r"\b(?:must|required?|requires|mandatory|need to|needs to|have to|has to|only|never|always|at least|at most|"
    r"up to|no more than|not more than|no later than|within|maximum|minimum|deadline|not (?:be )?(?:allowed|"
    r"permitted|eligible|reimburs\w*|accepted|approved|covered)|will not|cannot|may not|must not|do not|"
    r"pre-approv\w*|requires? approval|approv\w+ (?:by|from)|is responsible|are responsible|owns|expires?|"
    r"automatically|by default)\b",
    re.I,
)
_DIRECTIVE = re.compile(
    r"\b(?:post|ask|reach out|contact|refer|send|report|announce\w*|follow up|direct\w*|flag|escalat\w*|"
    r"notify|questions?|requests?|inquir\w+|help|join|submit\w*|file)\b",
    re.I,
)


def info_score(fact: Fact) -> float:
    """How much a statement says: quantities (amounts, limits, durations), rules and conditions, time,
    people/channels. About -2..3.5. A bare number (a date, a version, "Objective 4") says less than a
    quantity with its unit ("$300 USD per night", "within 2 business days")."""
    t = fact.text
    words = len(t.split())
    s = 0.0
    plain = _DATE.sub(" ", re.sub(r"^\d+[.)]\s", "", t))
    quantities = len(_QUANTITY.findall(plain))
    if quantities:
        s += 0.9 + 0.25 * min(quantities - 1, 2)
    elif _DIGIT.search(plain):
        s += 0.35
    if _MONEY.search(plain):
        s += 0.4
    strong = len(_STRONG_RULE.findall(t))
    rules = len(_RULE.findall(t))
    s += min(strong, 2) * 0.45 + min(max(rules - strong, 0), 2) * 0.2
    if _TIME.search(t):
        s += 0.3
    if _WHO.search(t):
        s += 0.5  # where to go and whom to ask: what a new reader needs most
        if _DIRECTIVE.search(t):
            s += 0.2  # "ask in #x", "report to y@": a direction, not a passing mention
    if _PROPER.search(t):
        s += 0.1
    if fact.kind == "row" and quantities:
        s += 0.2
    if _DATE.search(t) and not quantities:
        s -= 0.3  # "Effective October 25, 2023", "version 1.2.3": bookkeeping, not a rule
    # statements too short to stand alone, questions, lead-ins and pointers say little
    if words < 6:
        s -= 0.8
    elif words > 30:
        s -= min(1.2, 0.03 * (words - 30))  # a long statement costs the budget of two short ones
    if _EXAMPLE.match(t):
        s -= 0.5  # an example illustrates a rule stated elsewhere
    if _ANAPHORIC.match(t):
        s -= 0.4  # leans on the sentence before it, which the reader will not see
    if _CODEISH.search(t):
        s -= 0.6  # commands and addresses are for the page, not for a summary (and links are removed)
    if fact.pos < 3:
        s += 0.25  # pages state their point first
    if t.endswith("?"):
        s -= 0.9
    if t.endswith(":"):
        s -= 1.5
    if _WEAK_START.match(t):
        s -= 0.7
    return s


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / (len(a | b) or 1)


def select_facts(
    facts: list[Fact],
    rel: np.ndarray,
    vecs: np.ndarray,
    *,
    doc_weights: dict[int, float],
    max_words: int,
    word_cost: dict[int, int],
    mmr: float = 0.35,
    dup_sim: float = 0.86,
    dup_jaccard: float = 0.6,
    max_facts: int = 16,
    each: int = 0,
    per_word: float = 0.0,
    words_per_fact: int = 22,
) -> list[Fact]:
    """Greedy MMR over ``facts`` (relevance ``rel`` (n,), unit vectors ``vecs`` (n, dim)).

    Each document may take about its share (``doc_weights``, summing to 1) of the facts, at least one;
    a fact whose document is not yet shown also pays ``word_cost[doc]`` words (its title line).
    Near-duplicates (cosine ≥ ``dup_sim`` or word overlap ≥ ``dup_jaccard``) are never both chosen.
    The first ``each`` picks go to different documents (every page of a small scope is heard)."""
    n = len(facts)
    if n == 0:
        return []
    chosen: list[int] = []
    per_doc: dict[int, int] = {}
    used = 0
    target = min(max_facts, max(3, max_words // words_per_fact))
    rel = rel - per_word * np.array([f.words for f in facts], dtype=np.float32)  # (n,) a long fact costs
    caps = {d: max(1, int(round(w * target + 0.49))) for d, w in doc_weights.items()}
    max_sim = np.full(n, 0.0, dtype=np.float32)  # (n,) similarity to the closest chosen fact
    alive = np.ones(n, dtype=bool)
    while len(chosen) < max_facts and alive.any():
        score = rel - mmr * max_sim
        score = np.where(alive, score, -np.inf)
        order = np.argsort(-score)
        pick = None
        fresh = len(chosen) < each and any(alive[k] and facts[k].doc not in per_doc for k in range(n))
        for i in order[:64] if not fresh else order:
            if not np.isfinite(score[i]):
                break
            f = facts[i]
            if fresh and f.doc in per_doc:
                continue
            cost = f.words + (word_cost.get(f.doc, 0) if f.doc not in per_doc else 0)
            if per_doc.get(f.doc, 0) >= caps.get(f.doc, 1) or used + cost > max_words:
                alive[i] = False
                continue
            pick = int(i)
            used += cost
            break
        if pick is None:
            continue  # the statements looked at did not fit (and are out); shorter ones further down may
        chosen.append(pick)
        per_doc[facts[pick].doc] = per_doc.get(facts[pick].doc, 0) + 1
        alive[pick] = False
        sims = vecs @ vecs[pick]  # (n,)
        max_sim = np.maximum(max_sim, sims)
        for j in np.nonzero(alive)[0]:
            if sims[j] >= dup_sim or _jaccard(facts[j].tokens, facts[pick].tokens) >= dup_jaccard:
                alive[j] = False
    return [facts[i] for i in chosen]
