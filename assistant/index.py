"""The FAISS vector index, keyed by SQLite chunk ids (``IndexIDMap2``), with atomic persistence.

Kinds: ``flat`` (exact inner product; default, fine to ~1M chunks), ``hnsw`` (graph; no in-place
removal, so a removal marks the index stale and it is rebuilt from the store's vectors), ``ivf``
(trained at build time on the stored vectors; rebuilt when it has grown 4x since training).
Vectors are L2-normalized, so inner product is cosine similarity.

Persistence: write to a temp file in the same folder, fsync, ``os.replace`` — a kill at any moment
leaves either the old or the new file at the final path, never a torn one. The index is derived
data: ``reconcile`` makes its ids equal the store's chunk ids (removing extras, adding what is
missing from the stored vectors), so it may lag the store and is repaired at start-up.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import faiss
import numpy as np

log = logging.getLogger(__name__)


class VectorIndex:
    def __init__(self, dim: int, *, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int = 0) -> None:
        self.dim, self.kind, self.hnsw_m, self.ivf_lists = dim, kind, hnsw_m, ivf_lists
        self.index = self._empty(0)
        self.stale = False  # needs a rebuild (hnsw after removals)
        self.dirty = False  # changed since the last save
        self._trained_at = 0

    def _empty(self, n: int) -> faiss.IndexIDMap2:
        if self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efSearch = 128
        elif self.kind == "ivf" and n >= 1000:
            nlist = self.ivf_lists or max(16, int(4 * math.sqrt(n)))
            inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.nprobe = max(8, nlist // 16)
        else:  # flat, and ivf while too small to train
            inner = faiss.IndexFlatIP(self.dim)
        return faiss.IndexIDMap2(inner)

    # -- contents -------------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (n, dim)
        assert vectors.shape == (len(ids), self.dim), vectors.shape
        self.index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        self.dirty = True

    def remove(self, ids: list[int] | np.ndarray) -> None:
        if len(ids) == 0:
            return
        if self.kind == "hnsw":
            self.stale = True  # HNSW cannot remove: rebuilt from the store before the next search/save
        else:
            self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self.dirty = True

    def rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index = self._empty(len(ids))
        if self.kind == "ivf" and len(ids) >= 1000:
            self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))
            self._trained_at = len(ids)
        self.add(ids, vectors)
        self.stale = False
        self.dirty = True

    def needs_rebuild(self) -> bool:
        if self.stale:
            return True
        if self.kind == "ivf":
            trained = self._trained_at or (self.ntotal if isinstance(self._inner(), faiss.IndexIVF) else 0)
            return (trained == 0 and self.ntotal >= 1000) or (trained and self.ntotal > 4 * trained)
        return False

    def _inner(self):
        return faiss.downcast_index(self.index.index)

    # -- search ---------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k (chunk id, cosine) for one query vector, among ``allowed`` ids only when given.

        The filter is applied inside the search (an ID selector), not after it, so a user with access
        to few documents still gets k results."""
        if self.ntotal == 0 or k <= 0:
            return []
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        params = None
        if allowed is not None:
            if len(allowed) == 0:
                return []
            sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
            inner = self._inner()
            if isinstance(inner, faiss.IndexHNSW):
                params = faiss.SearchParametersHNSW(sel=sel, efSearch=max(128, k))
            elif isinstance(inner, faiss.IndexIVF):
                params = faiss.SearchParametersIVF(sel=sel, nprobe=inner.nprobe)
            else:
                params = faiss.SearchParameters(sel=sel)
            k = min(k, len(allowed))
        scores, ids = self.index.search(q, min(k, self.ntotal), params=params)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i != -1]

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self.dirty = False

    @classmethod
    def load(cls, path: Path, dim: int, *, kind: str = "flat", hnsw_m: int = 32, ivf_lists: int = 0) -> "VectorIndex":
        """Load from ``path``; a missing, corrupt or mismatched file gives an empty index (rebuilt by reconcile)."""
        idx = cls(dim, kind=kind, hnsw_m=hnsw_m, ivf_lists=ivf_lists)
        path = Path(path)
        for leftover in path.parent.glob(path.name + ".tmp*"):
            leftover.unlink(missing_ok=True)  # a write that was killed before its rename
        if path.exists():
            try:
                loaded = faiss.read_index(str(path))
                if loaded.d == dim and isinstance(loaded, faiss.IndexIDMap2) and _kind_of(loaded) == kind:
                    idx.index = loaded
                else:
                    log.warning("index at %s does not match the settings; rebuilding from the store", path)
                    idx.stale = True
            except RuntimeError as e:
                log.warning("index at %s is unreadable (%s); rebuilding from the store", path, e)
                idx.stale = True
        return idx


def _kind_of(index: faiss.IndexIDMap2) -> str:
    inner = faiss.downcast_index(index.index)
    if isinstance(inner, faiss.IndexHNSW):
        return "hnsw"
    if isinstance(inner, faiss.IndexIVF):
        return "ivf"
    return "flat"
