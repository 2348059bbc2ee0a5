"""A training mix that teaches the model to ANSWER when the passages hold the answer, and to refuse
only when they do not (the base Qwen model refuses about half of the answerable questions).

Every example is in the exact inference format (``data.messages_of`` → ``prompting.build_messages``):
4-8 numbered passages, the gold passage(s) at a random position, the target states the short key
fact first and cites ``[n]``. Kinds:

- ``answer``: one question, one gold passage among near-miss distractors. Questions come from
  ``scripts/gen_questions.py`` (``{"question", "answer", "doc_path", "heading", "passage", "kind"}``,
  realistic paraphrases whose short answer is verbatim in the passage) when given, plus the
  template questions of ``data.synthesise``'s question writer.
- ``table``: "What is the <column> for <row>?" over Markdown tables; the passage holds the header
  and the rows; the target names the cell and the row.
- ``multi``: two questions joined, two gold passages, two cited sentences.
- ``refusal``: the SAME kind of question with NEAR-MISS passages only: other sections of the same
  page and the most word-overlapping sections of pages in the same folder, none containing the
  answer. Target: exactly ``prompting.REFUSAL``.

Not here: which documents are the training half (the caller decides; see
``scripts/train_qwen_adapter.py``), tokenization, training.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from assistant.finetune import data as D
from assistant.prompting import REFUSAL

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "is",
        "are",
        "be",
        "do",
        "does",
        "what",
        "how",
        "when",
        "who",
        "which",
        "can",
        "i",
        "my",
        "we",
        "our",
        "you",
        "your",
        "with",
        "at",
        "by",
        "from",
        "it",
        "this",
        "that",
        "as",
        "if",
        "about",
        "should",
        "get",
    ]
)


def norm(text: str) -> str:
    """Lower-case words only: the comparison key for 'does this passage contain the answer'."""
    return " ".join(_WORD.findall(text.lower().replace("**", "").replace("`", "")))


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 2}


@dataclass(frozen=True)
class Item:
    """One answerable question: where its answer is and what the target says."""

    doc_id: str
    question: str
    title: str
    passage: str  # the gold passage text (already cut to size)
    target: str  # the answer with "{n}" where the passage number goes
    needles: tuple[str, ...]  # strings whose presence means a passage holds the answer
    kind: str = "answer"
    # a near-miss refusal needs a question with ONE specific answer; "Tell me about <heading>"
    # is half-answered by any section of the same page, so refusing it would teach over-refusal
    refusable: bool = True


@dataclass(frozen=True)
class Table:
    doc_id: str
    title: str
    heading: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


# ---------------------------------------------------------------- sources


def tables_from_markdown(root: Path, *, folders: list[str]) -> list[Table]:
    """Every Markdown pipe table under ``root/<folder>`` with its page title and section heading."""
    out = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.md")):
            title, heading, block = "", "", []
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines() + [""]:
                if line.lstrip().startswith("|"):
                    block.append(line.strip())
                    continue
                if len(block) >= 3:
                    t = _parse_table(block)
                    if t:
                        out.append(Table(path.relative_to(root).as_posix(), title or path.stem, heading, *t))
                block = []
                m = re.match(r"^(#{1,6})\s+(.*)$", line)
                if m:
                    heading = D.clean_markdown(m.group(2)).strip(" #:")
                    title = title or heading
    return out


def _parse_table(lines: list[str]) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] | None:
    cells = [tuple(D.clean_markdown(c).strip() for c in ln.strip("|").split("|")) for ln in lines]
    if not re.fullmatch(r"[\s|:\-]+", lines[1]):
        return None
    header, rows = cells[0], [r for r in cells[2:] if len(r) == len(cells[0]) and any(r)]
    if len(header) < 2 or not rows or not all(header):
        return None
    return header, tuple(rows)


def _table_text(t: Table, rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return (f"{t.heading}\n" if t.heading else "") + "\n".join(lines)


def table_items(
    tables: list[Table], *, rng: random.Random, per_table: int = 2, per_doc: int = 3, max_rows: int = 12
) -> list[Item]:
    """Cell questions over table rows; the passage shows the header and up to ``max_rows`` rows.

    At most ``per_doc`` tables a page: generated pages (CVE lists, alert catalogues) hold dozens
    of look-alike tables and would otherwise crowd out everything else.
    """
    out = []
    by_doc: dict[str, list[Table]] = {}
    for t in tables:
        by_doc.setdefault(t.doc_id, []).append(t)
    tables = [t for doc in by_doc.values() for t in rng.sample(doc, min(per_doc, len(doc)))]
    templates = (
        "What is the {col} for {key}?",
        "What's the {col} of {key}?",
        "For {key}, what is the {col}?",
    )
    for t in tables:
        usable = [r for r in t.rows if r[0] and len(r[0].split()) <= 8]
        for row in rng.sample(usable, min(per_table, len(usable))):
            cols = [j for j in range(1, len(t.header)) if row[j] and len(row[j].split()) <= 25]
            if not cols:
                continue
            j = rng.choice(cols)
            i = t.rows.index(row)
            lo = max(0, min(i - rng.randint(0, max_rows - 1), len(t.rows) - max_rows))
            shown = list(t.rows[lo : lo + max_rows])
            col, key, cell = t.header[j], row[0], row[j]
            question = rng.choice(templates).format(col=col.lower(), key=key)
            target = f"The {col.lower()} for {key} is {cell}" + " [{n}]."
            out.append(
                Item(t.doc_id, question, t.title, _table_text(t, shown), target, (cell,), kind="table")
            )
    return out


def question_items(rows: list[dict], docs: dict[str, D.DocText], *, max_chars: int) -> list[Item]:
    """Items from ``gen_questions.py`` rows (only rows whose page is in ``docs``: the training half)."""
    out = []
    for row in rows:
        doc = docs.get(row.get("doc_path", ""))
        question, short, passage = row.get("question", ""), row.get("answer", ""), row.get("passage", "")
        if doc is None or not question or not short or norm(short) not in norm(passage):
            continue
        # a table keeps its header row in view: allow it twice the room
        room = 2 * max_chars if "\n|" in "\n" + passage else max_chars
        text = D._window(passage, short, rng=random.Random(question), max_chars=room)
        if norm(short) not in norm(text):
            continue
        title = row.get("title") or doc.title
        out.append(
            Item(
                doc.doc_id,
                question,
                title,
                text,
                _target(short, text),
                (short,),
                kind="table" if row.get("kind") == "table" else "answer",
            )
        )
    return out


def _target(short: str, passage: str) -> str:
    """'<short fact> [n]. <the sentence that says it> [n].' (just the sentence when it IS the fact).

    When the fact sits in a table row, the second sentence is that row with its header:
    '<fact> [n]. Level: L5, Title: Senior Software Engineer, Band: $182,000-$214,000 [n].'
    """
    key = norm(short)
    fact = short.strip().rstrip(".")
    fact = fact[0].upper() + fact[1:]
    pipe = [ln.strip().strip("|").split("|") for ln in passage.splitlines() if ln.strip().startswith("|")]
    pipe = [[c.strip() for c in cells] for cells in pipe if not re.fullmatch(r"[\s:\-]*", "".join(cells))]
    if len(pipe) >= 2:
        header = pipe[0]
        row = next((r for r in pipe[1:] if key in norm(" ".join(r)) and len(r) == len(header)), None)
        if row:
            pairs = ", ".join(f"{h}: {c}" for h, c in zip(header, row) if h and c)
            return fact + " [{n}]. " + pairs + " [{n}]."
    sents = [s.strip() for line in passage.splitlines() for s in D._SENT_SPLIT.split(line) if s.strip()]
    sent = next((s for s in sents if key in norm(s) and 4 <= len(s.split()) <= 45), "")
    sent = re.sub(r"^\s*(?:[-*+|]|\d+\.)\s*", "", sent).strip().rstrip(".:;|")
    if not sent or len(sent.split()) <= len(fact.split()) + 3:
        return (sent or fact) + " [{n}]."
    return fact + " [{n}]. " + sent + " [{n}]."


def synthesised_items(
    docs: list[D.DocText], *, rng: random.Random, per_doc: int, max_chars: int
) -> list[Item]:
    """Template questions (``data``'s question writer) with their key sentence as the target."""
    out = []
    for doc in docs:
        made = 0
        for heading, body in doc.sections:
            if made >= per_doc:
                break
            qk = D._question_for(heading, D.sentences(body), rng)
            if qk is None:
                continue
            question, key = qk
            text = D._window(body, key, rng=rng, max_chars=max_chars)
            if key not in text:
                continue
            about_heading = bool(heading) and norm(heading) in norm(question)
            out.append(
                Item(
                    doc.doc_id,
                    question,
                    doc.title,
                    text,
                    key.rstrip(".:;") + " [{n}].",
                    (key,),
                    refusable=not about_heading,
                )
            )
            made += 1
    return out


# ---------------------------------------------------------------- near misses and assembly


class Pool:
    """Sections of the training pages, found by page and by folder, for near-miss passages."""

    def __init__(self, docs: list[D.DocText]) -> None:
        self.docs = {d.doc_id: d for d in docs}
        self.by_folder: dict[str, list[D.DocText]] = {}
        for d in docs:
            self.by_folder.setdefault(d.doc_id.rsplit("/", 1)[0], []).append(d)
        self.all = docs

    def near_misses(self, item: Item, k: int, *, rng: random.Random, max_chars: int) -> list[tuple[str, str]]:
        """``k`` (title, text) passages close to ``item`` that do NOT contain its answer."""
        needles = [norm(x) for x in item.needles if norm(x)]
        # a long answer (a key sentence) may be restated in other words: most of its words is enough
        key_terms = [t for t in (_terms(x) for x in item.needles) if len(t) >= 4]
        gold = norm(item.passage)[:200]
        q = _terms(item.question)
        cands: list[tuple[float, str, str]] = []
        same = self.docs.get(item.doc_id)
        folder = self.by_folder.get(item.doc_id.rsplit("/", 1)[0], [])
        neighbours = [d for d in folder if d.doc_id != item.doc_id]
        if len(neighbours) < 6:  # small folder: widen to a random sample of the rest
            neighbours += rng.sample(self.all, min(20, len(self.all)))
        for doc, bonus in [(same, 1.0)] * (same is not None) + [(d, 0.0) for d in neighbours]:
            for heading, body in doc.sections:
                overlap = len(q & _terms(heading + " " + body[:1500])) / (len(q) or 1)
                cands.append((bonus + overlap + rng.random() * 0.3, doc.title, body))
        cands.sort(key=lambda c: -c[0])
        out, seen = [], set()
        for _, title, body in cands:
            text = D._window(body, None, rng=rng, max_chars=max_chars)
            nt = norm(text)
            if not nt or nt[:200] == gold or nt[:80] in seen or any(n in nt for n in needles):
                continue
            words = set(nt.split())
            if any(len(t & words) >= 0.75 * len(t) for t in key_terms):
                continue
            seen.add(nt[:80])
            out.append((title, text))
            if len(out) == k:
                break
        return out


def _cite(target: str, n: int) -> str:
    return target.replace("{n}", str(n))  # not str.format: passages may hold braces


def _example(
    doc_id: str,
    kind: str,
    question: str,
    passages: list[tuple[str, str]],
    answer: str,
    cite: list[int],
    key_fact: str,
) -> dict:
    return {
        "doc_id": doc_id,
        "kind": kind,
        "question": question,
        "answer": answer,
        "cite": cite,
        "key_fact": key_fact,
        "passages": [{"n": i + 1, "title": t, "text": x} for i, (t, x) in enumerate(passages)],
    }


def _place(
    golds: list[tuple[str, str]], noise: list[tuple[str, str]], rng: random.Random
) -> tuple[list, list[int]]:
    """Golds inserted at random positions among ``noise``; returns (passages, 1-based gold numbers)."""
    order = [("n", p) for p in noise]
    for i, g in enumerate(golds):
        order.insert(rng.randint(0, len(order)), ("g", (i, g)))
    numbers = [0] * len(golds)
    passages = []
    for pos, (tag, val) in enumerate(order, 1):
        if tag == "g":
            numbers[val[0]] = pos
            passages.append(val[1])
        else:
            passages.append(val)
    return passages, numbers


def build_mix(
    items: list[Item],
    pool: Pool,
    *,
    seed: int = 0,
    passages: tuple[int, int] = (4, 8),
    refusal_rate: float = 0.7,
    multi_rate: float = 0.12,
    max_chars: int = 700,
) -> list[dict]:
    """Answer, multi-part and near-miss refusal examples for ``items`` (ids added, order shuffled)."""
    rng = random.Random(seed)
    out: list[dict] = []
    for it in items:
        n_total = rng.randint(*passages)
        noise = pool.near_misses(it, n_total - 1, rng=rng, max_chars=max_chars)
        if len(noise) < passages[0] - 1:
            continue
        ps, (n,) = _place([(it.title, it.passage)], noise, rng)
        out.append(_example(it.doc_id, it.kind, it.question, ps, _cite(it.target, n), [n], it.needles[0]))
        if it.refusable and rng.random() < refusal_rate:
            refusal = pool.near_misses(it, rng.randint(*passages), rng=rng, max_chars=max_chars)
            if len(refusal) >= passages[0]:
                out.append(_example(it.doc_id, "refusal", it.question, refusal, REFUSAL, [], ""))
    by_doc = [it for it in items if it.kind == "answer"]
    for _ in range(int(len(items) * multi_rate)):
        a, b = rng.sample(by_doc, 2)
        if a.doc_id == b.doc_id or a.question.rstrip("?") in b.question:
            continue
        q2 = b.question[0].lower() + b.question[1:] if not b.question[:2].isupper() else b.question
        question = f"{a.question.rstrip()} Also, {q2}"
        noise = pool.near_misses(a, rng.randint(1, 3), rng=rng, max_chars=max_chars) + pool.near_misses(
            b, rng.randint(1, 3), rng=rng, max_chars=max_chars
        )
        ps, (na, nb) = _place([(a.title, a.passage), (b.title, b.passage)], noise, rng)
        answer = f"{_cite(a.target, na)} {_cite(b.target, nb)}"
        out.append(_example(a.doc_id, "multi", question, ps, answer, sorted({na, nb}), a.needles[0]))
    rng.shuffle(out)
    return D._with_ids(out)


def read_questions(path: Path) -> list[dict]:
    """Rows of a ``gen_questions.py`` JSONL file (blank lines skipped)."""
    return [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
