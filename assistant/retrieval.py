"""Hybrid retrieval: dense (FAISS) + keyword (FTS5 BM25), fused by reciprocal rank fusion, ACL-filtered.

The access filter is applied inside both retrievers, before any truncation: FAISS gets the chunks the
asker may read (an ID selector, or exact search over just those when they are few); the keyword
retriever (``Store.keyword_search``) gets the audience's principal tokens and matches them inside FTS5
(each chunk carries its document's principals in an ``acl`` column), so ranking never walks a chunk the
audience may not read. A document the asker cannot read can therefore never reach the fused
list, the prompt or the answer.

Similarities come from FAISS itself (inner product of normalised vectors = cosine); only chunks found
by keyword alone have their vectors read from the store to get one. ``search_timed`` returns the
per-stage timings with the hits, so concurrent callers (the bot's threads) never share timing state.

``Audience`` generalises "who is asking" to "who will see the result": a single person (a DM, the
CLI's ``--as``) or every member of a channel (a chunk is allowed only if *each* member can read it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from assistant.documents import Principals

if TYPE_CHECKING:
    from assistant.embeddings import Embedder
    from assistant.index import VectorIndex
    from assistant.store import Store


@dataclass(frozen=True)
class Audience:
    """Everyone who will see a result. Empty ``members`` with ``everything`` = the administrator."""

    members: tuple[Principals, ...]
    everything: bool = False

    @classmethod
    def of(cls, who: Principals | Sequence[Principals] | Audience) -> Audience:
        if isinstance(who, Audience):
            return who
        if isinstance(who, Principals):
            return cls((who,), everything=who.everything)
        return cls(tuple(who))


@dataclass(frozen=True)
class Hit:
    rank: int
    chunk_id: int
    doc_key: int
    doc_id: str
    source: str
    path: str
    title: str
    url: str | None
    score: float  # fused score (RRF)
    similarity: float  # cosine between the query and the chunk, for relevance thresholds
    text: str
    heading_path: tuple[str, ...]
    modified: float | None

    def as_json(self) -> dict:
        return {
            "rank": self.rank,
            "doc_id": self.doc_id,
            "source": self.source,
            "path": self.path,
            "title": self.title,
            "url": self.url,
            "score": round(self.score, 6),
            "text": self.text,
        }


class Retriever:
    def __init__(
        self,
        store: Store,
        index: VectorIndex,
        embedder: Embedder,
        *,
        mode: str = "hybrid",
        candidates: int = 50,
        rrf_k: int = 60,
        rerank: bool = False,
        keyword_weight: float = 1.0,
    ) -> None:
        self.store, self.index, self.embedder = store, index, embedder
        self.mode, self.candidates, self.rrf_k, self.rerank = mode, candidates, rrf_k, rerank
        self.keyword_weight = keyword_weight
        self._allowed_cache: dict[tuple, tuple[np.ndarray, set[int]]] = {}

    def allowed(self, audience: Audience) -> np.ndarray | None:
        """Chunk ids every member of the audience may read; None = no restriction."""
        return self._allowed(audience)[0]

    def _allowed(self, audience: Audience) -> tuple[np.ndarray | None, set[int] | None]:
        if audience.everything:
            return None, None
        if not audience.members:
            return np.zeros(0, dtype=np.int64), set()
        key = (self.store.generation, tuple(tuple(sorted(m.tokens())) for m in audience.members))
        got = self._allowed_cache.get(key)
        if got is None:
            # the channel rule (every member may read it) without computing each member's whole set
            arr = self.store.audience_chunk_ids([m.tokens() for m in audience.members])
            if len(self._allowed_cache) > 256:
                self._allowed_cache.clear()
            got = self._allowed_cache[key] = (arr, set(arr.tolist()))
        return got

    def search(
        self,
        query: str,
        *,
        who,
        k: int = 5,
        mode: str | None = None,
        per_doc: int | None = 1,
        prefix: str | None = None,
        source: str | None = None,
    ) -> list[Hit]:
        """Top ``k`` hits. ``per_doc`` caps chunks per document (1 for a document list, None for no cap)."""
        return self.search_timed(
            query, who=who, k=k, mode=mode, per_doc=per_doc, prefix=prefix, source=source
        )[0]

    def search_timed(
        self,
        query: str,
        *,
        who,
        k: int = 5,
        mode: str | None = None,
        per_doc: int | None = 1,
        prefix: str | None = None,
        source: str | None = None,
    ) -> tuple[list[Hit], dict[str, float]]:
        """``search`` plus the milliseconds each stage took (acl, embed, dense, keyword, total)."""
        mode = mode or self.mode
        audience = Audience.of(who)
        t0 = time.perf_counter()
        allowed, allowed_set = self._allowed(audience)
        if prefix or source:
            scope = self._scope_ids(prefix, source)
            allowed = scope if allowed is None else np.intersect1d(allowed, scope, assume_unique=True)
            allowed_set = set(allowed.tolist())
        t1 = time.perf_counter()
        qv = self.embedder.embed_query(query)  # (dim,)
        t2 = time.perf_counter()
        ranked: list[tuple[float, list[int]]] = []
        sim: dict[int, float] = {}
        if mode in ("hybrid", "dense"):
            dense = self.index.search(qv, self.candidates, allowed=allowed)  # [(chunk id, cosine)]
            sim.update(dense)
            ranked.append((1.0, [cid for cid, _ in dense]))
        t3 = time.perf_counter()
        if mode in ("hybrid", "keyword"):
            kw = self.store.keyword_search(
                query,
                limit=self.candidates,
                allowed=allowed_set if (prefix or source) else None,
                audience=None if audience.everything else [m.tokens() for m in audience.members],
            )
            ranked.append((self.keyword_weight if mode == "hybrid" else 1.0, [cid for cid, _ in kw]))
        t4 = time.perf_counter()
        fused: dict[int, float] = {}
        for weight, lst in ranked:
            for r, cid in enumerate(lst):
                fused[cid] = fused.get(cid, 0.0) + weight / (self.rrf_k + r + 1)
        order = sorted(fused, key=fused.get, reverse=True)
        rows = self.store.chunk_rows(order[: max(k * 8, 40)])
        missing = [cid for cid in order if cid in rows and cid not in sim]  # found by keyword alone
        if missing:
            got_ids, vecs = self.store.vectors(missing, dim=self.embedder.dim)  # (m,), (m, dim)
            sim.update(zip(got_ids.tolist(), (vecs @ qv).tolist()))
        if self.rerank:
            order = sorted(
                (c for c in order if c in rows), key=lambda c: fused[c] + 0.02 * sim.get(c, 0.0), reverse=True
            )
        hits: list[Hit] = []
        per: dict[int, int] = {}
        for cid in order:
            if cid not in rows:
                continue
            ch, doc = rows[cid]
            if per_doc is not None and per.get(doc.key, 0) >= per_doc:
                continue
            per[doc.key] = per.get(doc.key, 0) + 1
            hits.append(
                Hit(
                    len(hits) + 1,
                    cid,
                    doc.key,
                    doc.doc_id,
                    doc.source,
                    doc.path,
                    doc.title,
                    doc.url,
                    fused[cid],
                    sim.get(cid, 0.0),
                    ch.text,
                    ch.heading_path,
                    doc.modified,
                )
            )
            if len(hits) >= k:
                break
        timings = {
            "acl_ms": (t1 - t0) * 1e3,
            "embed_ms": (t2 - t1) * 1e3,
            "dense_ms": (t3 - t2) * 1e3,
            "keyword_ms": (t4 - t3) * 1e3,
            "total_ms": (time.perf_counter() - t0) * 1e3,
        }
        return hits, timings

    def _scope_ids(self, prefix: str | None, source: str | None) -> np.ndarray:
        keys = [d.key for d in self.store.iter_documents(source=source, path_prefix=prefix)]
        ids: list[int] = []
        for i in range(0, len(keys), 900):
            part = keys[i : i + 900]
            ids += [
                r[0]
                for r in self.store.execute(
                    f"SELECT id FROM chunks WHERE doc_key IN ({','.join('?' * len(part))})", part
                )
            ]
        return np.array(sorted(ids), dtype=np.int64)
