"""Sentence embeddings through sentence-transformers (torch): the bundled all-MiniLM-L6-v2 by
default, batched, L2-normalized, fp16 on CUDA. One implementation of ``assistant.embeddings.Embedder``;
the ONNX int8 one (``onnx``) is the CPU default.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from assistant.embeddings.base import bundled_model_path, resolve_device
from assistant.errors import ModelError


class SentenceTransformerEmbedder:
    """The ``Embedder`` through sentence-transformers (torch; CPU or CUDA). Thread-safe: encoding holds a lock (the model is not reentrant)."""

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
        # on CUDA: tokenize the next batches while the GPU runs this one (assistant.embeddings.cuda)
        self.pipelined = dev.startswith("cuda")

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
            if self.pipelined:
                from assistant.embeddings.cuda import encode_pipelined

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
