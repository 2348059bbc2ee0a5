"""Training data for the answering adapter: build, split by document, write, read.

An example is one question, the numbered passages the model sees, and the target answer:

    {"id", "doc_id", "kind": "answer"|"refusal"|"feedback"|"user", "question",
     "passages": [{"n", "title", "text"}], "answer", "key_fact", "cite": [n, ...]}

The chat messages are NOT stored: ``messages_of`` rebuilds them with ``assistant.prompting.
build_messages`` at train and evaluation time, so the adapter always learns the inference format.

Builders:
- ``synthesise`` makes grounded examples WITHOUT an LLM from documents split into sections:
  questions from heading and sentence templates, answers that quote the key sentence and cite
  ``[n]`` among 2-4 distractor passages at random positions, and refusal examples whose passages
  come from other documents only (target: exactly ``REFUSAL``).
- ``from_feedback``: 👍 answers become targets (their quoted sources are the passages); 👎 are
  excluded (counted in the manifest).
- ``from_jsonl``: user files with the example fields above (``n`` and ``cite`` optional).

The split is by document (``doc_id``), never by example. This module does not tokenize or train.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ConfigError
from assistant.prompting import REFUSAL, Passage, build_messages


def split_folders(content: Path) -> tuple[list[str], list[str]]:
    """(training folders, held-out folders) of the handbook: its top-level folders sorted, every other one
    to training. The one split every adapter, the relevance model and their evaluations use."""
    folders = sorted(p.name for p in Path(content).iterdir() if p.is_dir())
    return folders[0::2], folders[1::2]


@dataclass(frozen=True)
class DocText:
    """A document as the builders see it: an id, a title and (heading, text) sections."""

    doc_id: str
    title: str
    sections: tuple[tuple[str, str], ...]


@dataclass
class BuildReport:
    train: int = 0
    validation: int = 0
    documents: int = 0
    excluded_negative: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""


# ---------------------------------------------------------------- document sources

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"“(])")


def clean_markdown(text: str) -> str:
    """Markdown → plain-ish text: links keep their label, emphasis and HTML tags go."""
    text = _LINK.sub(r"\1", text)
    text = re.sub(r"<[^>]+>", " ", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return re.sub(r"[ \t]+", " ", text)


def split_sections(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """(title, [(heading, body)]) of a Markdown file; the title is the first heading."""
    title, heading, body, out = "", "", [], []
    for line in markdown.splitlines():
        m = _HEADING.match(line)
        if m:
            if body:
                out.append((heading, "\n".join(body).strip()))
            heading, body = clean_markdown(m.group(2)).strip(" #:"), []
            title = title or heading
        elif not line.startswith(("---", "```", "|")):
            body.append(clean_markdown(line))
    if body:
        out.append((heading, "\n".join(body).strip()))
    return title, [(h, b) for h, b in out if len(b) > 80]


def documents_from_markdown(root: Path, *, folders: Iterable[str] | None = None) -> list[DocText]:
    """Every ``.md`` file under ``root`` (or under the named sub-folders), sorted by path."""
    roots = [root / f for f in folders] if folders is not None else [root]
    docs = []
    for r in roots:
        for path in sorted(r.rglob("*.md")):
            title, sections = split_sections(path.read_text(encoding="utf-8", errors="replace"))
            if sections:
                rel = path.relative_to(root).as_posix()
                docs.append(DocText(rel, title or path.stem, tuple(sections)))
    return docs


def documents_from_files(root: Path, *, prefix: str = "") -> list[DocText]:
    """Every parseable file under ``root`` (pdf, docx, html, ... through ``assistant.parsing``)."""
    import mimetypes

    from assistant.errors import ParseError
    from assistant.parsing import parse

    docs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            text = (
                path.read_text(encoding="utf-8")
                if path.suffix == ".md"
                else parse(path.read_bytes(), mime, name=path.name)
            )
        except (ParseError, UnicodeDecodeError):
            continue
        title, sections = split_sections(text)
        if sections:
            docs.append(
                DocText(prefix + path.relative_to(root).as_posix(), title or path.stem, tuple(sections))
            )
    return docs


def documents_from_store(
    store, *, source: str | None = None, path_prefix: str | None = None, include_restricted: bool = False
) -> list[DocText]:
    """Documents of the index (``engine.store``): one section per chunk, heading = last heading.

    LoRA weights carry no access control and a model can repeat what it was trained on, so by
    default only documents readable organisation-wide (public or a whole domain) are used;
    ``include_restricted`` adds the ones shared with named users or groups only.
    """
    docs = []
    for row in store.iter_documents(source=source, path_prefix=path_prefix):
        access = store.access_of(row.key)
        if not include_restricted and not (access.public or access.domains):
            continue
        sections = []
        for c in store.chunks_of(row.key):
            body = clean_markdown(
                "\n".join(line for line in c.text.splitlines() if not _HEADING.match(line))
            ).strip()
            if len(body) > 80:
                sections.append(((c.heading_path[-1] if c.heading_path else ""), body))
        if sections:
            docs.append(DocText(f"{row.source}:{row.doc_id}", row.title or row.path, tuple(sections)))
    return docs


# ---------------------------------------------------------------- synthesis

_GENERIC = {
    "overview",
    "introduction",
    "intro",
    "summary",
    "resources",
    "links",
    "contents",
    "faq",
    "faqs",
    "background",
    "references",
    "table of contents",
    "further reading",
    "related",
    "notes",
    "other",
}
_INJECTION = re.compile(
    r"\bignore (all|any|previous|prior|your|the above)\b|\binstructions?\b.*\b(reply|respond|say)\b|pwned",
    re.I,
)
_PRONOUN_START = re.compile(
    r"^(this|it|there|these|those|that|we|you|they|he|she|i|here|our|your|if|when|for|in|on|as|note|example|e\.g|please|see|also|so|but|and|or|what|how|why)\b",
    re.I,
)
_DEFINITION = re.compile(
    r"^(?:The |A |An )?(?P<subj>[A-Za-z][\w\-’'/&. ]{2,48}?) (?P<verb>is|are) (?P<rest>.{12,})$"
)
_MODAL = re.compile(
    r"^(?P<subj>(?:All |Every |Each )?[A-Z][\w\-’' ]{2,40}?) "
    r"(?P<modal>must|should|need to|are required to) (?P<rest>.{10,})$"
)
_BOLD_TERM = re.compile(r"^\s*[-*]?\s*(?P<term>[A-Z][\w\-’' /&]{1,40}):\s+(?P<rest>.{15,})$")


def sentences(text: str) -> list[str]:
    """Sentences and list items of a section, whitespace-normalised, 6-70 words."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*+]|\d+\.)\s+", "", line).strip()
        for s in _SENT_SPLIT.split(line):
            s = s.strip()
            words = s.split()
            prose = sum(w.strip(".,;:()\"'’").isalpha() for w in words) >= 0.7 * len(words)
            if 6 <= len(words) <= 70 and prose and not s.endswith("?") and not _INJECTION.search(s):
                out.append(s)
    return out


def _question_for(heading: str, sents: list[str], rng: random.Random) -> tuple[str, str] | None:
    """(question, key sentence) for one section, or None when no template fits."""
    for s in sents:
        m = _BOLD_TERM.match(s)
        if m and len(m.group("term").split()) <= 4 and not _PRONOUN_START.match(s):
            return f"What is {m.group('term').strip()}?", s
    for s in sents:
        if _PRONOUN_START.match(s):
            continue
        m = _DEFINITION.match(s)
        if (
            m
            and len(m.group("subj").split()) <= 6
            and not re.search(r"\b(this|that|these|those|its|their|our|your|it)\b", m.group("subj"), re.I)
        ):
            subj = m.group("subj").strip()
            return f"What {m.group('verb')} {'the ' if s.startswith('The ') else ''}{subj}?", s
        m = _MODAL.match(s)
        if m and heading:
            modal = {"need to": "do", "are required to": "are"}.get(m.group("modal"), m.group("modal"))
            subj = m.group("subj").strip()
            subj = subj if subj.isupper() else subj[0].lower() + subj[1:]
            if modal in ("do", "are"):
                return f"What do {subj} need to do regarding {heading}?", s
            return f"What {modal} {subj} do regarding {heading}?", s
    h = heading.strip().rstrip(":")
    if not h or h.lower() in _GENERIC or len(h.split()) > 10 or not sents:
        return None
    key = next((s for s in sents if len(s.split()) >= 8), sents[0])
    if h.endswith("?"):
        return h, key
    if h.lower().startswith("how to "):
        return f"How do I {h[7:]}?", key
    template = rng.choice(
        [
            "What does the documentation say about {h}?",
            "What should I know about {h}?",
            "Can you explain {h}?",
            "What is the guidance on {h}?",
            "Tell me about {h}.",
        ]
    )
    return template.format(h=h), key


def _window(text: str, anchor: str | None, *, rng: random.Random, max_chars: int) -> str:
    """A passage of at most ``max_chars`` from ``text`` that contains ``anchor`` when given."""
    text = re.sub(r"\n{2,}", "\n", text).strip()
    if len(text) <= max_chars:
        return text
    at = text.find(anchor) if anchor else -1
    if at < 0:
        start = rng.randrange(0, len(text) - max_chars + 1)
    else:
        lo, hi = max(0, at + len(anchor) - max_chars), min(at, len(text) - max_chars)
        start = rng.randint(lo, max(lo, hi))
    # snap to a word boundary so passages do not start mid-word
    if start:
        sp = text.find(" ", start)
        start = sp + 1 if 0 <= sp < (at if at >= 0 else start + 40) else start
    return text[start : start + max_chars].strip()


def _trim_answer(sentence: str, n: int) -> str:
    s = sentence.strip().rstrip(".:;")
    return f"{s} [{n}]."


def synthesise(
    docs: list[DocText],
    *,
    seed: int = 0,
    distractors: tuple[int, int] = (2, 4),
    refusal_rate: float = 0.3,
    per_doc: int = 4,
    max_chars: int = 600,
) -> list[dict]:
    """Grounded Q/A and refusal examples from documents, without a language model."""
    if len(docs) < 2:
        raise ConfigError(
            "synthesising training data needs at least 2 documents (distractors come from other "
            "documents); index more documents first"
        )
    rng = random.Random(seed)
    examples: list[dict] = []
    for di, doc in enumerate(docs):
        made = 0
        for heading, body in doc.sections:
            if made >= per_doc:
                break
            qk = _question_for(heading, sentences(body), rng)
            if qk is None:
                continue
            question, key = qk
            k = rng.randint(*distractors)
            others = [docs[j] for j in rng.sample(range(len(docs)), min(len(docs), k + 2)) if j != di][:k]
            noise = [
                (o.title, _window(rng.choice(o.sections)[1], None, rng=rng, max_chars=max_chars))
                for o in others
            ]
            gold = (doc.title, _window(body, key, rng=rng, max_chars=max_chars))
            if key not in gold[1]:
                continue
            pos = rng.randint(0, len(noise))
            ordered = noise[:pos] + [gold] + noise[pos:]
            passages = [{"n": i + 1, "title": t, "text": x} for i, (t, x) in enumerate(ordered)]
            base = {"doc_id": doc.doc_id, "question": question, "key_fact": key}
            examples.append(
                {
                    **base,
                    "kind": "answer",
                    "passages": passages,
                    "answer": _trim_answer(key, pos + 1),
                    "cite": [pos + 1],
                }
            )
            made += 1
            if rng.random() < refusal_rate and noise:
                refusal = [{"n": i + 1, "title": t, "text": x} for i, (t, x) in enumerate(noise)]
                examples.append(
                    {**base, "kind": "refusal", "passages": refusal, "answer": REFUSAL, "cite": []}
                )
    return _with_ids(examples)


def from_feedback(rows) -> tuple[list[dict], int]:
    """(examples from 👍 feedback rows, number of 👎 rows excluded)."""
    out, negative = [], 0
    for row in rows:
        if row.vote < 0:
            negative += 1
            continue
        if not row.sources:
            continue
        passages = [
            {"n": int(s.get("n", i + 1)), "title": s.get("title", ""), "text": s.get("quote", "")}
            for i, s in enumerate(row.sources)
        ]
        cites = sorted({int(c) for c in re.findall(r"\[(\d+)\]", row.answer)})
        doc = "|".join(sorted(p["title"] for p in passages))
        out.append(
            {
                "doc_id": f"feedback:{doc}",
                "kind": "feedback",
                "question": row.question,
                "passages": passages,
                "answer": row.answer,
                "key_fact": "",
                "cite": cites,
            }
        )
    return _with_ids(out), negative


def from_jsonl(path: Path) -> list[dict]:
    """Examples from a user file, one JSON object a line (fields as in the module docstring)."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            passages = [
                {"n": int(p.get("n", i + 1)), "title": str(p.get("title", "")), "text": str(p["text"])}
                for i, p in enumerate(rec["passages"])
            ]
            question, answer = str(rec["question"]), str(rec["answer"])
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"{path}:{lineno}: each line needs question, passages [{{title, text}}] and answer ({e})"
            ) from e
        refused = answer.strip() == REFUSAL
        cites = rec.get("cite") or sorted({int(c) for c in re.findall(r"\[(\d+)\]", answer)})
        out.append(
            {
                "doc_id": str(rec.get("doc_id") or f"user:{question}"),
                "kind": "refusal" if refused else "user",
                "question": question,
                "passages": passages,
                "answer": answer,
                "key_fact": str(rec.get("key_fact", "")),
                "cite": [] if refused else cites,
            }
        )
    return _with_ids(out)


def _with_ids(examples: list[dict]) -> list[dict]:
    for ex in examples:
        ex["id"] = hashlib.sha1(
            json.dumps([ex["doc_id"], ex["question"], ex["kind"], ex["answer"]]).encode()
        ).hexdigest()[:16]
    return examples


# ---------------------------------------------------------------- split, write, read


def split_by_document(
    examples: list[dict], *, validation: float = 0.1, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(train, validation): every example of a document lands on the same side."""
    docs = sorted({ex["doc_id"] for ex in examples})
    if len(docs) < 2:
        return examples, []
    random.Random(seed).shuffle(docs)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * validation))) if validation > 0 else 0
    val_docs = set(docs[:n_val])
    return [e for e in examples if e["doc_id"] not in val_docs], [
        e for e in examples if e["doc_id"] in val_docs
    ]


def write_dataset(
    out: Path, train: list[dict], validation: list[dict], *, meta: dict | None = None
) -> BuildReport:
    """Write train.jsonl, validation.jsonl and manifest.json (with the data fingerprint)."""
    out.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    for name, rows in (("train", train), ("validation", validation)):
        text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)
        h.update(name.encode() + b"\0" + text.encode())
        tmp = out / f".{name}.jsonl.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / f"{name}.jsonl")
    kinds: dict[str, int] = {}
    for r in train + validation:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    report = BuildReport(
        train=len(train),
        validation=len(validation),
        kinds=kinds,
        fingerprint=h.hexdigest()[:16],
        documents=len({r["doc_id"] for r in train + validation}),
    )
    manifest = {
        "fingerprint": report.fingerprint,
        "train": report.train,
        "validation": report.validation,
        "documents": report.documents,
        "kinds": kinds,
        **(meta or {}),
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    return report


def read_split(data_dir: Path, split: str) -> list[dict]:
    path = data_dir / f"{split}.jsonl"
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist; build a training set with 'assistant finetune build-data --out "
            f"{data_dir}'"
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist; build a training set with 'assistant finetune build-data --out "
            f"{data_dir}'"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def messages_of(example: dict) -> list[dict]:
    """The chat messages (system + user) the model sees for ``example``, via build_messages."""
    passages = [Passage(int(p["n"]), p["title"], p["text"]) for p in example["passages"]]
    return build_messages(example["question"], passages)
