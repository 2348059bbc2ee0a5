"""Passages, sentences, table rows and a BM25 scorer for building relevance-model training data.

Used by ``scripts/gen_questions.py`` (questions a passage answers) and ``scripts/train_relevance.py``
(question/passage and question/sentence pairs). Both run on a GPU host that has torch, transformers
and numpy but not the package's other dependencies, so this module imports only the standard
library, numpy (inside BM25) and ``assistant.chunking`` (which imports only ``assistant.documents``).

The split is the one ``scripts/train_default_adapter.py`` uses: the handbook's top-level folders
under ``content/`` sorted by name, every other one (``[0::2]``) for TRAINING; the others are held
out and never read here unless a caller asks for them explicitly.

Passages are the chunks the index holds (``Chunker`` with the embedding model's tokenizer), so the
relevance model is trained on what it scores at run time. What this module does not do: call a
model, tokenize for one, or write files.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from assistant.chunking import Chunker
from assistant.finetune.data import split_folders  # noqa: F401 (the training split, re-exported)


@dataclass(frozen=True)
class Page:
    doc_path: str  # relative to the content folder, e.g. "handbook/engineering/oncall.md"
    title: str
    text: str


@dataclass(frozen=True)
class Passage:
    doc_path: str
    title: str
    heading: str  # heading path joined with " > "
    text: str  # the chunk text exactly as the index stores it
    ordinal: int

    def with_heading(self) -> str:
        """The passage as the answerer may show it: title and heading path, then the text."""
        head = " > ".join(x for x in (self.title, self.heading) if x)
        return f"{head}\n{self.text}" if head else self.text


_TITLE = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)
_FRONT = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)


def read_pages(content: Path, folders: Iterable[str]) -> list[Page]:
    """Every ``.md`` page under the named top-level folders, sorted by path, front matter removed."""
    content = Path(content)
    pages = []
    for folder in folders:
        for path in sorted((content / folder).rglob("*.md")):
            text = _FRONT.sub("", path.read_text(encoding="utf-8", errors="replace"))
            if len(text.strip()) < 80:
                continue
            m = _TITLE.search(text)
            title = m.group(1).strip() if m else path.stem.replace("-", " ").replace("_", " ")
            pages.append(Page(path.relative_to(content).as_posix(), title, text))
    return pages


def passages_of(pages: Sequence[Page], chunker: Chunker, *, min_words: int = 12) -> list[Passage]:
    """Chunks of every page (as ingestion makes them), skipping those with fewer than ``min_words``."""
    out = []
    for page in pages:
        for c in chunker.chunk(page.doc_path, page.title, page.text):
            if len(c.text.split()) >= min_words:
                out.append(Passage(page.doc_path, page.title, " > ".join(c.heading_path), c.text, c.ordinal))
    return out


# ---------------------------------------------------------------- text helpers

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def plain(text: str) -> str:
    """Markdown → plain text: links keep their label, emphasis, code ticks and HTML tags go."""
    text = _LINK.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return re.sub(r"[ \t]+", " ", text)


def norm(text: str) -> str:
    """Lower-case, markdown-free, single-spaced: the form answers are matched in."""
    return " ".join(plain(text).lower().replace("’", "'").replace("“", '"').replace("”", '"').split())


def sentences(text: str, *, min_words: int = 4, max_words: int = 80) -> list[str]:
    """Sentences and list items of a passage (headings, tables and code fences skipped)."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
            continue
        if fence or line.lstrip().startswith(("#", "|")):
            continue
        line = plain(_BULLET.sub("", line)).strip()
        for s in _SENT.split(line):
            s = s.strip()
            if min_words <= len(s.split()) <= max_words:
                out.append(s)
    return out


@dataclass(frozen=True)
class TableRow:
    header: tuple[str, ...]
    cells: tuple[str, ...]

    def as_text(self) -> str:
        """'Header: cell; Header: cell' — how a row reads without its table."""
        return "; ".join(f"{h}: {c}" for h, c in zip(self.header, self.cells) if c)


def _cells(line: str) -> list[str]:
    return [plain(c).strip() for c in line.strip().strip("|").split("|")]


def table_rows(text: str) -> list[TableRow]:
    """Rows of every Markdown pipe table in ``text`` (header + separator + body rows)."""
    lines, rows, i = text.splitlines(), [], 0
    while i + 1 < len(lines):
        if "|" in lines[i] and _TABLE_SEP.match(lines[i + 1]):
            header = tuple(_cells(lines[i]))
            j = i + 2
            while j < len(lines) and "|" in lines[j] and lines[j].strip():
                cells = _cells(lines[j])
                if len(cells) == len(header) and any(cells):
                    rows.append(TableRow(header, tuple(cells)))
                j += 1
            i = j
        else:
            i += 1
    return rows


def longest_shared_run(a: str, b: str) -> int:
    """Length in words of the longest run of consecutive words of ``a`` that also occurs in ``b``."""
    aw, bn = re.findall(r"[a-z0-9]+", norm(a)), f" {' '.join(re.findall(r'[a-z0-9]+', norm(b)))} "
    best = 0
    for i in range(len(aw)):
        n = best + 1
        while i + n <= len(aw) and f" {' '.join(aw[i : i + n])} " in bn:
            best, n = n, n + 1
    return best


# ---------------------------------------------------------------- BM25

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "my",
        "of",
        "on",
        "or",
        "our",
        "should",
        "that",
        "the",
        "this",
        "to",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class BM25:
    """Okapi BM25 over a list of texts (k1 1.2, b 0.75); enough to find near-miss negatives.

    A term's weight in a text does not depend on the query, so it is computed once per posting:
    ``top`` is then a few vector additions (numpy) per query term."""

    def __init__(self, texts: Sequence[str], *, k1: float = 1.2, b: float = 0.75) -> None:
        import numpy as np

        self.n = len(texts)
        docs = [Counter(terms(t)) for t in texts]
        lens = [sum(d.values()) for d in docs]
        avg = (sum(lens) / len(lens)) if lens else 1.0
        rows: dict[str, tuple[list[int], list[float]]] = {}
        for i, d in enumerate(docs):
            norm_len = k1 * (1 - b + b * lens[i] / avg)
            for w, tf in d.items():
                ids, ws = rows.setdefault(w, ([], []))
                ids.append(i)
                ws.append(tf * (k1 + 1) / (tf + norm_len))
        self.postings = {}
        for w, (ids, ws) in rows.items():
            idf = math.log(1 + (self.n - len(ids) + 0.5) / (len(ids) + 0.5))
            self.postings[w] = (np.asarray(ids, dtype=np.int64), idf * np.asarray(ws, dtype=np.float32))

    def top(self, query: str, k: int = 10) -> list[tuple[int, float]]:
        """[(text index, score)] of the ``k`` best-scoring texts (score > 0), best first."""
        import numpy as np

        scores = np.zeros(self.n, dtype=np.float32)  # (n,)
        for w in set(terms(query)):
            if w in self.postings:
                ids, ws = self.postings[w]
                scores[ids] += ws  # ids are unique within a posting list
        k = min(k, int((scores > 0).sum()))
        if k <= 0:
            return []
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [(int(i), float(scores[i])) for i in best]
