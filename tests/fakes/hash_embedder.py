"""A cheap, deterministic stand-in for the embedder seam, for tests and scripts about ingestion state.

``HashEmbedder`` has the ``assistant.embeddings.Embedder`` interface (``dim``, ``embed``,
``embed_query``, ``tokenizer``, ``max_seq_length``, ``name``, ``texts_embedded``, ``calls``) but
embeds a text as a hashed bag of lower-cased words, L2-normalized: shared words give a high cosine,
so keyword-ish retrieval works, and it costs microseconds. Chunking still uses the real MiniLM
vocabulary: ``FastTokenizer`` loads the bundled model's own ``tokenizer.json`` with the
``tokenizers`` library (the same object Hugging Face's fast tokenizer wraps, so token counts and
offsets are identical) without importing ``transformers``, which takes seconds to import — that
matters for scripts that start many child processes.

What it is not: a model of meaning. Use the real bundled embedder where answer quality matters.
"""

from __future__ import annotations

import re
import threading
import zlib
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


class FastTokenizer:
    """The subset of a Hugging Face fast tokenizer's ``__call__`` that ``assistant.chunking`` uses."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from tokenizers import Tokenizer

        if model_dir is None:
            from assistant.embeddings import bundled_model_path

            model_dir = bundled_model_path()
        self._tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self._tok.no_truncation()  # the chunker measures long texts on purpose
        self._tok.no_padding()

    def __call__(
        self, texts, *, add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_ignored
    ):
        single = isinstance(texts, str)
        encs = self._tok.encode_batch(
            [texts] if single else list(texts), add_special_tokens=add_special_tokens
        )
        out: dict[str, list] = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [list(e.offsets) for e in encs]
        return {k: v[0] for k, v in out.items()} if single else out


class HashEmbedder:
    """Hashed bag of words in 384 dimensions (the MiniLM size, so a data_dir stays compatible)."""

    name = "hash-test"
    dim = 384
    max_seq_length = 256

    def __init__(self, *, tokenizer=None) -> None:
        self.tokenizer = tokenizer if tokenizer is not None else FastTokenizer()
        self.texts_embedded = 0
        self.calls = 0
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, 384) float32, L2-normalized (an all-zero row for a text without words)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in _WORD.findall(t.lower()):
                out[i, zlib.crc32(w.encode("utf-8", "surrogatepass")) % self.dim] += 1.0
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_query(self, text: str) -> np.ndarray:
        """(384,) float32."""
        return self.embed([text])[0]
