"""The engine: one store, one vector index and one embedder for a data directory, wired together.

``Engine.open(settings)`` opens (or creates) ``data_dir/store.sqlite`` and ``data_dir/index.faiss``,
and reconciles the index with the store (FAISS ids == SQLite chunk ids) before anything else runs.
The embedder is loaded lazily, so ``status`` stays instant. The CLI, the Slack bot and the
scheduler go through an Engine; the one exception is ``assistant schedule add/list/remove``
(``assistant.reports.cli``), which opens the store alone because it needs neither index nor embedder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from assistant.chunking import Chunker
from assistant.documents import Principals
from assistant.embeddings import Embedder, load_embedder
from assistant.errors import StoreError
from assistant.index import VectorIndex
from assistant.retrieval import Audience, Hit, Retriever
from assistant.settings import RetrievalSettings, Settings
from assistant.store import Store
from assistant.sync import Syncer, SyncReport

log = logging.getLogger(__name__)

EMBED_DIM = 384  # all-MiniLM-L6-v2; checked against the loaded embedder


class Engine:
    def __init__(self, settings: Settings, store: Store, *, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.store = store
        self._embedder = embedder
        self._lock = threading.RLock()
        self._retriever: Retriever | None = None
        dim = int(store.get_meta("embedding_dim") or (embedder.dim if embedder else EMBED_DIM))
        self.dim = dim
        ix = settings.index
        self.index_path = self.data_dir / "index.faiss"
        self.index = VectorIndex.load(
            self.index_path,
            dim,
            kind=ix.kind,
            hnsw_m=ix.hnsw_m,
            ivf_lists=ix.ivf_lists,
            auto_threshold=ix.auto_threshold,
            exact_max=ix.exact_max,
            vector_source=lambda ids: store.vectors(ids.tolist(), dim=dim),
        )
        self._last_save = time.monotonic()
        self.repaired = self.reconcile()

    @classmethod
    def open(cls, settings: Settings, *, embedder: Embedder | None = None) -> Engine:
        data_dir = Path(settings.data_dir)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"Cannot create the data directory {data_dir} ({e}). Set data_dir to a writable folder."
            ) from None
        return cls(settings, Store(data_dir / "store.sqlite"), embedder=embedder)

    # -- components -----------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = load_embedder(
                    self.settings.embedding, cache_dir=self.settings.model_cache_dir
                )
            self._check_model(self._embedder)
            return self._embedder

    def _check_model(self, embedder: Embedder) -> None:
        name = f"{getattr(embedder, 'name', 'embedder')}:{embedder.dim}"
        stored = self.store.get_meta("embedding_model")
        if stored is None:
            self.store.set_meta("embedding_model", name)
            self.store.set_meta("embedding_dim", str(embedder.dim))
        elif stored.split(":")[-1] != str(embedder.dim):
            raise StoreError(
                f"The index in {self.data_dir} was built with {stored}; the configured embedder is {name}. "
                "Use another data_dir or re-ingest into an empty one."
            )

    @property
    def chunker(self) -> Chunker:
        c = self.settings.chunking
        return Chunker(
            self.embedder.tokenizer,
            max_tokens=c.max_tokens,
            overlap_tokens=c.overlap_tokens,
            min_tokens=c.min_section_tokens,
        )

    @property
    def retriever(self) -> Retriever:
        self._flush_stale()
        if self._retriever is None:
            r = self.settings.retrieval
            self._retriever = Retriever(
                self.store,
                self.index,
                self.embedder,
                mode=r.mode,
                candidates=r.candidates,
                rrf_k=r.rrf_k,
                rerank=r.rerank,
                keyword_weight=r.keyword_weight,
            )
        self._retriever.index = self.index
        return self._retriever

    # -- consistency ----------------------------------------------------------------------------
    def reconcile(self) -> dict:
        """Make FAISS ids equal SQLite chunk ids. Returns what was repaired."""
        with self._lock:
            want = self.store.chunk_ids()
            if self.index.stale or self.index.needs_rebuild():
                ids, vecs = self.store.vectors(dim=self.dim)
                self.index.rebuild(ids, vecs)
                self.save_index(True)
                return {"rebuilt": len(ids)}
            have = self.index.ids()
            extra = np.setdiff1d(have, want, assume_unique=True)
            missing = np.setdiff1d(want, have, assume_unique=True)
            if len(extra):
                self.index.remove(extra)
            if len(missing):
                ids, vecs = self.store.vectors(missing.tolist(), dim=self.dim)
                self.index.add(ids, vecs)
            if len(extra) or len(missing):
                log.warning(
                    "index repaired: %d stale ids removed, %d missing added", len(extra), len(missing)
                )
                self._flush_stale()
                self.save_index(True)
            return {"removed": int(len(extra)), "added": int(len(missing))}

    def _flush_stale(self) -> None:
        if self.index.stale or self.index.needs_rebuild():
            ids, vecs = self.store.vectors(dim=self.dim)
            self.index.rebuild(ids, vecs)

    def save_index(self, force: bool = False) -> None:
        with self._lock:
            due = time.monotonic() - self._last_save >= self.settings.index.save_every_s
            if self.index.dirty and (force or due):
                self._flush_stale()
                self.index.save(self.index_path)
                self._last_save = time.monotonic()

    # -- operations -----------------------------------------------------------------------------
    def sync(
        self,
        connector,
        *,
        full: bool = False,
        progress: Callable[[int, str], None] | None = None,
        ray=None,
        connector_factory: Callable[[], object] | None = None,
    ) -> SyncReport:
        """Ingest ``connector``. ``ray`` (``assistant.ingest_ray.RayOptions``) runs fetch, parse, chunk
        and embed on Ray workers (``connector_factory`` rebuilds the connector there when it cannot be
        pickled); this process still writes, in order, either way."""
        with self._lock:
            if ray is not None:
                from assistant.ingest_ray import sync_on_ray

                report = sync_on_ray(
                    self, connector, ray, full=full, progress=progress, connector_factory=connector_factory
                )
            else:
                syncer = Syncer(
                    connector,
                    store=self.store,
                    index=self.index,
                    embedder=self.embedder,
                    chunker=self.chunker,
                    fetch_workers=self.settings.sync.fetch_workers,
                    save_index=self.save_index,
                    max_parse_bytes=int(self.settings.sync.max_file_mb * 1e6),
                    progress=progress,
                )
                report = syncer.run(full=full)
            from assistant.summary_changes import update_ledger

            try:  # so "what changed" summaries see this version's sections; never a reason to fail an ingest
                update_ledger(self.store, source=connector.name)
            except Exception as e:  # the next summary with a window brings the ledger up to date
                log.warning("summary ledger not updated after syncing %s: %s", connector.name, e)
            return report

    def search(self, query: str, *, who: Principals | Audience | None = None, k: int = 5, **kw) -> list[Hit]:
        who = who if who is not None else Principals(everything=True)
        return self.retriever.search(query, who=who, k=k, **kw)

    def status(self) -> dict:
        size = self.index_path.stat().st_size if self.index_path.exists() else 0
        cursors = self.store.cursors()
        return {
            "data_dir": str(self.data_dir.resolve()),
            "documents": self.store.document_count(),
            "chunks": self.store.chunk_count(),
            "sources": self.store.sources(),
            "cursors": {s: {"has_cursor": c is not None, "updated_at": t} for s, (c, t) in cursors.items()},
            "last_sync": self.store.last_runs(),
            "failures": [
                {
                    "source": f.source,
                    "item_id": f.item_id,
                    "stage": f.stage,
                    "reason": f.reason,
                    "attempts": n,
                }
                for f, n in self.store.failures()
            ],
            "index": {
                "kind": self.settings.index.kind,
                "vectors": self.index.ntotal,
                "bytes": size,
                "consistent": bool(np.array_equal(np.sort(self.index.ids()), self.store.chunk_ids())),
            },
            "embedding_model": self.store.get_meta("embedding_model"),
        }

    def close(self) -> None:
        with self._lock:
            try:
                self.save_index(True)
            finally:
                self.store.close()

    def set_retrieval(self, retrieval: RetrievalSettings) -> None:
        """Search with other retrieval settings (a ``settings.retrieval`` section) from now on:
        the evaluation compares configurations over one engine this way."""
        with self._lock:
            self.settings = self.settings.model_copy(update={"retrieval": retrieval})
            self._retriever = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ingestion on other processes (assistant.ingest_ray) ----------------------------------------
    def embedder_factory(self) -> Callable[[], object]:
        """A picklable no-argument function that builds the configured embedder (on a Ray worker)."""
        from functools import partial

        return partial(load_embedder, self.settings.embedding, cache_dir=self.settings.model_cache_dir)

    def check_embedder(self, info) -> None:
        """Refuse an embedder (``name``, ``dim``) loaded elsewhere that does not fit this index."""
        if int(info.dim) != self.dim:
            raise StoreError(
                f"The index in {self.data_dir} holds {self.dim}-dimensional vectors; the workers' embedder "
                f"{info.name} makes {info.dim}. Use another data_dir or configure the same embedding model."
            )
        self._check_model(info)
