"""The relevance seam: how well a text answers a query, as a number the answerer can threshold.

``RelevanceScorer`` is the one method a relevance model provides (the trained MiniLM cross-encoder in
``assistant/relevance.py`` implements it). ``EmbeddingRelevance`` is the fallback built on the
embedding model: cosine similarity, *not* calibrated, so the answerer uses separate thresholds for it.
This module does not load any model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RelevanceScorer(Protocol):
    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """(len(texts),) float32 in 0..1: the probability that each text answers ``query``."""
        ...


class EmbeddingRelevance:
    """Cosine similarity between the query and each text with the embedding model (-1..1, uncalibrated)."""

    calibrated = False

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        vecs = self.embedder.embed(list(texts))  # (n, dim), normalised
        return (vecs @ self.embedder.embed_query(query)).astype(np.float32)  # (n,)
