"""Summaries of a scope (source, folder/path prefix, Slack channel), optionally of what changed in a window.

A summary carries what the scope SAYS — limits, amounts, deadlines, rules, owners — not its titles:
1. every readable document in scope is read (only documents every member of the audience may read,
   so a summary posted to a channel is safe for it); with a window, only documents modified in it,
   and of those only the sections that changed (``assistant.summary_changes``);
2. candidate facts (sentences, list items with their heading, table rows with their header;
   ``assistant.summary_facts``) are scored for information, centrality to the scope (embedding
   similarity to the mean of the scope's chunk vectors) and an optional focus, then chosen with
   MMR-style novelty, in proportion to what each document contains, within ``summaries.max_words``;
3. with a capable model the chosen facts are rewritten per document (map) and grouped (reduce);
   every sentence shown — extracted or written — is checked against its document
   (``assistant.summary_verify.supported``) and dropped when unsupported.
The output is one bullet per document (its facts, in document order) with a numbered citation.
Not done: summarizing a single huge document section by section (its best facts stand for it).
"""

from __future__ import annotations

import difflib
import re
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

import numpy as np

from assistant import grounding as g
from assistant import summary_changes as sc
from assistant.retrieval import Audience
from assistant.settings import is_no_model
from assistant.summary_facts import Fact, compact, facts_of, info_score, select_facts
from assistant.summary_verify import supported, write_with_model

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PER_DOC = 40  # candidates per document considered (the most informative)
_SHORTLIST = (
    60  # facts embedded one by one for the final choice (the rest are judged by their chunk's vector)
)
_MAX_FACT_WORDS = 45  # longer "facts" are tables or lists flattened into one line
Scorer = Callable[[str, list[str]], list[float]]


def parse_since(text: str | None, *, now: float | None = None) -> float | None:
    """'7d', '24h', '2w' or an ISO date → POSIX seconds; None/'' → no window."""
    if not text:
        return None
    now = time.time() if now is None else now
    m = _SINCE.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2).lower()]
    from datetime import datetime

    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        from assistant.errors import ConfigError

        raise ConfigError(
            f"Cannot read the time window {text!r}: use e.g. 7d, 24h, 2w or a date like 2026-11-01."
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def parse_scope(scope: str | None, sources: set[str]) -> tuple[str | None, str | None]:
    """'slack:#eng' → ('slack', '#eng/'); 'gdrive:Security' → ('gdrive', 'Security'); 'handbook' (a source)
    → ('handbook', None); anything else is a path prefix across sources."""
    if not scope:
        return None, None
    scope = scope.strip()
    src, sep, rest = scope.partition(":")
    if sep and src in sources | {"slack", "gdrive", "onedrive"}:
        if src == "slack" and rest.startswith("#") and "/" not in rest:
            rest += "/"
        return src, rest or None
    if scope in sources:
        return scope, None
    if scope.startswith("#") and "/" not in scope:
        return ("slack" if "slack" in sources else None), scope + "/"
    return None, scope


@dataclass
class Bullet:
    text: str
    n: int
    doc_id: str
    source: str
    path: str
    title: str
    url: str | None
    modified: float | None
    new: bool = False
    key: int | None = None  # the store's document key (reports read the document's metadata through it)
    metadata: dict = field(default_factory=dict)
    sentences: list[str] = field(default_factory=list)  # the verified sentences that make up ``text``


@dataclass
class Summary:
    title: str
    scope: str | None
    since: float | None
    bullets: list[Bullet] = field(default_factory=list)
    considered: int = 0
    note: str = ""  # why the summary is empty, when that needs saying (a scope that matched nothing)
    checked: int = 0  # sentences checked against their sources
    verified: int = 0  # of which supported (only those are shown)
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.bullets

    @property
    def words(self) -> int:
        return sum(len(f"{b.title}: {b.text}".split()) for b in self.bullets)

    def body(self) -> str:
        """The bullets alone (what a reader reads; used for scoring)."""
        return "\n".join(f"{b.title}: {b.text}" for b in self.bullets)

    def as_text(self) -> str:
        if self.empty:
            what = self.note or ("No changes." if self.since else "Nothing to summarize.")
            return f"{self.title}\n{what}"
        lines = [self.title]
        by_source: dict[str, list[Bullet]] = {}
        for b in self.bullets:
            by_source.setdefault(b.source, []).append(b)
        for src, bs in by_source.items():
            lines.append(f"{src}:")
            lines += [f"  • {b.title}{' (new)' if b.new else ''}: {b.text} [{b.n}]" for b in bs]
        lines.append("Sources: " + "; ".join(f"[{b.n}] {b.title} ({b.url or b.path})" for b in self.bullets))
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {
            "title": self.title,
            "scope": self.scope,
            "since": self.since,
            "considered": self.considered,
            "note": self.note,
            "words": self.words,
            "checked": self.checked,
            "verified": self.verified,
            "bullets": [
                {
                    "text": b.text,
                    "n": b.n,
                    "doc_id": b.doc_id,
                    "source": b.source,
                    "path": b.path,
                    "title": b.title,
                    "url": b.url,
                    "modified": b.modified,
                    "new": b.new,
                    "sentences": b.sentences,
                }
                for b in self.bullets
            ],
            "citations": [
                {
                    "n": b.n,
                    "doc_id": b.doc_id,
                    "source": b.source,
                    "path": b.path,
                    "title": b.title,
                    "url": b.url,
                }
                for b in self.bullets
            ],
        }


@dataclass
class _Doc:
    row: object
    text: str  # the part summarised: the whole document, or its changed sections
    facts: list[Fact]
    reference: str  # the document as a reader sees it (clean text, table rows rendered): what sentences are checked against
    new: bool = False


class Summarizer:
    def __init__(self, engine, llm, *, settings, max_docs: int = 12) -> None:
        self.engine, self.llm, self.s, self.max_docs = engine, llm, settings, max_docs

    def summarize(
        self,
        *,
        who,
        scope: str | None = None,
        since: float | None = None,
        until: float | None = None,
        use_llm: bool = True,
        max_docs: int | None = None,
        now: float | None = None,
        focus: str | None = None,
        scorer: Scorer | None = None,
        max_words: int | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> Summary:
        """Summarize ``scope`` (documents modified in [since, until) only, when given) for ``who``."""
        t0 = time.perf_counter()
        say = progress or (lambda _msg: None)
        store = self.engine.store
        conf = self.s.summaries
        audience = Audience.of(who)
        source, prefix = parse_scope(scope, set(store.sources()))
        rows = [
            d
            for d in store.iter_documents(source=source, path_prefix=prefix, modified_since=since)
            if (until is None or (d.modified is not None and d.modified < until))
            and self._readable(d.key, audience)
        ]
        rows.sort(key=lambda d: d.modified or 0, reverse=True)
        rows = rows[: conf.max_docs_read]
        when = time.strftime("%Y-%m-%d", time.gmtime(now or time.time()))
        period = f"since {time.strftime('%Y-%m-%d %H:%M', time.gmtime(since))} UTC" if since else "all time"
        summary = Summary(
            f"Summary of {scope or 'everything'} ({period}, as of {when})", scope, since, considered=len(rows)
        )
        if not rows:
            if since is None or not any(
                True for _ in store.iter_documents(source=source, path_prefix=prefix)
            ):
                summary.note = self._no_match(scope, source, prefix, audience)
            return summary
        if since is not None:
            sc.update_ledger(store, source=source)
        say(f"summarize: reading {len(rows)} document{'s' * (len(rows) != 1)} in {scope or 'everything'}…")
        docs = [self._read(i, row, since=since, until=until) for i, row in enumerate(rows)]
        facts = [f for d in docs for f in d.facts]
        summary.timings_ms["read"] = (time.perf_counter() - t0) * 1e3
        if not facts:
            return summary
        say(f"summarize: scoring {len(facts)} candidate facts…")
        limit = max_words or conf.max_words
        writes = use_llm and self.llm is not None and model_writes(self.s)
        chosen = self._choose(
            docs,
            facts,
            focus=focus,
            scorer=scorer,
            # a model states facts more briefly than the pages do: it is given more of them to fit
            max_words=int(limit * conf.model_overselect) if writes else limit,
            max_docs=max_docs or self.max_docs,
        )
        summary.timings_ms["select"] = (time.perf_counter() - t0) * 1e3 - summary.timings_ms["read"]
        groups: dict[int, list[Fact]] = {}
        for f in chosen:
            groups.setdefault(f.doc, []).append(f)
        order = sorted(
            groups, key=lambda d: (-(docs[d].row.modified or 0), d) if since else (docs[d].row.path, d)
        )
        texts = {d: [f.text for f in sorted(groups[d], key=lambda f: f.pos)] for d in order}
        if writes:
            say(f"summarize: writing {len(order)} bullet{'s' * (len(order) != 1)} with the model…")
            t1 = time.perf_counter()
            size = {d: sum(len(t.split()) for t in texts[d]) for d in order}
            total = sum(size.values()) or 1
            written, dropped = write_with_model(
                self.llm,
                [(docs[d].row.title, texts[d], docs[d].reference) for d in order],
                context_tokens=min(self.llm.context_tokens, self.s.llm.context_tokens),
                adapter=self._adapter(),
                words=[max(12, int(limit * size[d] / total) - len(docs[d].row.title.split())) for d in order],
                workers=conf.model_workers if self.s.llm.endpoint else 1,
            )
            texts = dict(zip(order, written))
            summary.checked += dropped  # the model's unsupported sentences were checked, and dropped
            summary.timings_ms["write"] = (time.perf_counter() - t1) * 1e3
        shown: list[tuple[int, list[str]]] = []
        for d in order:
            allowed = {docs[d].row.url} if docs[d].row.url else set()
            kept = []
            for sentence in texts[d]:
                if supported(sentence, docs[d].reference):
                    kept.append(g.sanitize(sentence, allowed_urls=allowed))
                else:
                    summary.checked += 1  # checked and dropped
            kept = [k for k in kept if len(g.content_words(k)) >= 2]
            if kept:
                shown.append((d, kept))
        for d, kept in _fit(shown, {d: docs[d].row.title for d in order}, limit):
            row = docs[d].row
            summary.checked += len(kept)
            summary.verified += len(kept)
            summary.bullets.append(
                Bullet(
                    " ".join(kept),
                    len(summary.bullets) + 1,
                    row.doc_id,
                    row.source,
                    row.path,
                    row.title,
                    row.url,
                    row.modified,
                    docs[d].new,
                    row.key,
                    dict(row.metadata),
                    kept,
                )
            )
        summary.timings_ms["total"] = (time.perf_counter() - t0) * 1e3
        return summary

    # -- steps ----------------------------------------------------------------------------------
    def _read(self, i: int, row, *, since: float | None, until: float | None) -> _Doc:
        chunks = self.engine.store.chunks_of(row.key)
        text = sc.document_text(chunks)
        facts = facts_of(text, doc=i, title=row.title)
        reference = "\n".join(f.text for f in facts)
        new = False
        if since is not None:
            hist = sc.history(self.engine.store, row.source, row.doc_id)
            created = row.metadata.get("created")
            new = (hist is not None and hist.versions == 1) or bool(created and float(created) >= since)
            if not new and hist is not None:
                spans = sc.changed_sections(
                    self.engine.store, row.source, row.doc_id, text, since=since, until=until
                )
                if (
                    spans
                ):  # only what changed; a rewrite that left no new section falls back to the whole document
                    facts = [f for f in facts if any(a <= f.start < b for a, b in spans)] or facts
        starts = [c.start for c in chunks]
        for f in facts:
            short = compact(f.text)
            if short != f.text and supported(short, f.text):
                f.text = short  # the reference keeps the whole sentence it is checked against
            f.info = info_score(f)
            f.words = len(f.text.split())
            f.tokens = frozenset(g.content_words(f.text))
            f.chunk = chunks[max(0, bisect_right(starts, f.start) - 1)].id if chunks else -1
        # a table flattened into one run-on line is no fact
        if any(f.words <= _MAX_FACT_WORDS for f in facts):
            facts = [f for f in facts if f.words <= _MAX_FACT_WORDS]
        if len(facts) > _PER_DOC:
            facts = sorted(sorted(facts, key=lambda f: -f.info)[:_PER_DOC], key=lambda f: f.pos)
        return _Doc(row, text, facts, reference, new)

    def _choose(
        self,
        docs: list[_Doc],
        facts: list[Fact],
        *,
        focus: str | None,
        scorer: Scorer | None,
        max_words: int,
        max_docs: int,
    ) -> list[Fact]:
        """Score every fact cheaply with its chunk's stored vector, embed the best few, then MMR."""
        store, embedder = self.engine.store, self.engine.embedder
        ids, cvecs = store.vectors(
            sorted({f.chunk for f in facts if f.chunk >= 0}), dim=embedder.dim
        )  # (c, dim)
        row_of = {int(cid): k for k, cid in enumerate(ids)}
        fvec = np.stack(
            [
                cvecs[row_of[f.chunk]] if f.chunk in row_of else np.zeros(embedder.dim, np.float32)
                for f in facts
            ]
        )  # (n, dim): each fact stands in with its chunk's vector
        centroid = _unit(cvecs.mean(axis=0)) if len(cvecs) else np.zeros(embedder.dim, np.float32)
        doc_of = np.array([f.doc for f in facts])
        doc_cent = {d: _unit(fvec[doc_of == d].mean(axis=0)) for d in set(doc_of.tolist())}
        info = np.clip(np.array([f.info for f in facts]), -1.5, 2.5) / 2.5  # (n,)
        local = np.array([float(fvec[i] @ doc_cent[f.doc]) for i, f in enumerate(facts)])
        lead = prominence([d.row.path for d in docs])  # (docs,) 1 for the scope's overview page, less deeper
        rel = 0.55 * info + 0.35 * (fvec @ centroid) + 0.25 * local
        qvec = embedder.embed_query(focus) if focus else None
        if focus and scorer is not None:
            fs = np.asarray(scorer(focus, [f.text for f in facts]), dtype=np.float32)
            rel = rel + 0.6 * (fs - fs.min()) / ((fs.max() - fs.min()) or 1.0)
        elif qvec is not None:
            rel = rel + 0.4 * (fvec @ qvec)
        # the most promising facts (at least two per document) are embedded one by one
        order = np.argsort(-rel)
        short: list[int] = []
        per: Counter = Counter()
        top_docs = set(
            list(dict.fromkeys(facts[i].doc for i in order))[:max_docs]
        )  # the documents that can be shown
        for i in order:
            d = facts[i].doc
            if len(short) < _SHORTLIST or (d in top_docs and per[d] < 2):
                short.append(int(i))
                per[d] += 1
        short.sort()
        cand = [facts[i] for i in short]
        # the statement alone: with its title and headings in front, facts of one section look like duplicates
        vecs = embedder.embed([f.text for f in cand])  # (m, dim)
        crel = rel[short]
        if qvec is not None and scorer is None:
            crel = crel + 0.2 * (vecs @ qvec)  # the sentence's own meaning, besides its chunk's
        for f, r in zip(cand, crel):
            f.score = float(r)
        # each document's share: how much it says (its length, damped) and how much of it is worth saying
        worth = Counter(f.doc for f in facts if f.info > 0.3)
        ranked = sorted({f.doc for f in cand}, key=lambda d: -max(f.score for f in cand if f.doc == d))[
            :max_docs
        ]
        size = {
            d: np.sqrt(len(docs[d].text) / 1000 + 1) * np.sqrt(worth[d] + 1) ** 0.5 * (1 + 0.5 * lead[d])
            for d in ranked
        }
        total = sum(size.values()) or 1.0
        weights = {d: float(size[d] / total) for d in ranked}
        pool = [k for k, f in enumerate(cand) if f.doc in weights]
        cost = {i: len(f"{d.row.title}:".split()) for i, d in enumerate(docs)}
        return select_facts(
            [cand[k] for k in pool],
            crel[pool],
            vecs[pool],
            doc_weights=weights,
            max_words=max_words,
            word_cost=cost,
            words_per_fact=16,  # per-page caps loose enough for a page that holds most of the rules
        )

    def _adapter(self) -> str | None:
        """The adapter the model writes with: ``llm.adapter`` when the model offers it (on a server, the
        adapter's model id; 'default' there means the server's base model)."""
        spec = self.s.llm.adapter
        if not spec or is_no_model(spec) or (self.s.llm.endpoint and spec.lower() == "default"):
            return None
        if self.s.llm.endpoint:
            return spec
        names = getattr(self.llm, "adapter_names", lambda: [])()
        return spec if spec in names else None

    def _readable(self, key: int, audience: Audience) -> bool:
        if audience.everything:
            return True
        acc = self.engine.store.access_of(key)
        return bool(audience.members) and all(acc.allows(m) for m in audience.members)

    def _no_match(self, scope: str | None, source: str | None, prefix: str | None, audience: Audience) -> str:
        """'The scope … matched no document' plus the closest scopes the reader may see."""
        if not scope:
            return "Nothing to summarize: the index holds no document you can read."
        dirs: Counter = Counter()
        for d in self.engine.store.iter_documents(source=source):
            if not self._readable(d.key, audience):
                continue
            parts = d.path.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                dirs["/".join(parts[:k]) + "/"] += 1
        want = (prefix or scope).strip("/").lower()
        hits = [p for p in dirs if f"/{want}/" in f"/{p.lower()}" or p.lower().rstrip("/").endswith(want)]
        hits.sort(key=lambda p: (len(p), p))
        if not hits:
            hits = difflib.get_close_matches(want, [p.rstrip("/") for p in dirs], n=3, cutoff=0.5)
            hits = [h + "/" for h in hits]
        msg = f"The scope {scope!r} matched no document you can read."
        if hits:
            msg += " Closest scopes: " + ", ".join(f"{h} ({dirs[h]} documents)" for h in hits[:3]) + "."
        elif dirs:
            top = sorted((p for p in dirs if p.count("/") == 1), key=lambda p: -dirs[p])[:3]
            msg += " Scopes that exist: " + ", ".join(top) + "." if top else ""
        return msg


def _fit(
    shown: list[tuple[int, list[str]]], titles: dict[int, str], limit: int
) -> list[tuple[int, list[str]]]:
    """Bullets within ``limit`` words (titles count): the last sentence of the longest bullet goes first,
    so every document keeps its lead statement as long as possible; a bullet left empty goes."""
    out = [(d, list(kept)) for d, kept in shown]

    def words() -> int:
        return sum(len(titles[d].split()) + sum(len(k.split()) for k in kept) for d, kept in out)

    while out and words() > limit:
        i = max(range(len(out)), key=lambda j: (len(out[j][1]) > 1, sum(len(k.split()) for k in out[j][1])))
        out[i][1].pop()
        if not out[i][1]:
            out.pop(i)
    return out


_OVERVIEW = frozenset({"index", "readme", "_index", "overview", "home"})


def prominence(paths: list[str]) -> np.ndarray:
    """(n,) 0..1 per page: how close it sits to the top of the scope. The scope's overview page
    (index.md / README at the common folder) is 1; a page beside it 0.5; one folder down half that, and so
    on. Overview pages state a team's or topic's rules first; deep pages hold the details."""
    if not paths:
        return np.zeros(0, np.float32)
    parts = [p.strip("/").split("/") for p in paths]
    common = 0
    while all(len(x) > common + 1 for x in parts) and len({x[common] for x in parts}) == 1:
        common += 1
    out = []
    for x in parts:
        depth = len(x) - common - 1  # folders below the common one
        stem = x[-1].rsplit(".", 1)[0].lower()
        overview = stem in _OVERVIEW
        out.append(0.5 ** (depth - (1 if overview and depth > 0 else 0)) * (1.0 if overview else 0.5))
    return np.asarray(out, dtype=np.float32)


def model_writes(settings) -> bool:
    """Whether summaries are written by the model: ``summaries.write_with_model``; auto = a capable model only
    (an endpoint, or a model other than the bundled 135M one, whose rewrites lose more facts than they clarify)."""
    mode = settings.summaries.write_with_model
    if mode != "auto":
        return mode == "always" and not is_no_model(settings.llm.model)
    return bool(settings.llm.endpoint) or not (
        is_no_model(settings.llm.model) or settings.llm.model.lower() == "bundled"
    )


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (float(np.linalg.norm(v)) or 1.0)
