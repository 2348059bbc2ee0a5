"""Question/text relevance from our own trained cross-encoder (MiniLM, ONNX int8, CPU).

``CrossEncoderRelevance(model_dir).score(query, texts)`` returns, for each text, the probability
(sigmoid of the model's logit, float32 in [0, 1]) that the text answers or is about the question.
The answerer uses it to rerank passages, to pick answer sentences and as a refusal signal.

A model folder (written by ``assistant.relevance_export.export_cross_encoder``) holds
``model.onnx`` — or its pieces ``model.onnx.part00``, ``.part01``... which are joined in memory
when the whole file is absent — plus ``tokenizer.json`` and ``relevance.json`` (max_len and the
sha256 the joined bytes must match). The shipped model lives in ``assistant/models/relevance``;
``load_relevance`` resolves the ``[relevance]`` settings to a scorer or None.

Scoring runs in batches of texts of similar length (sorted, so little padding is computed). The
int8 graph quantizes activations per run, so a text's score can move by about 1e-2 with its
batch-mates; ``batch_size = 1`` makes every score independent of the others. What this module does
not do: train or export (scripts/train_relevance.py, assistant.relevance_export), run on a GPU, or
decide thresholds — callers do.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from assistant.errors import ModelError

SHIPPED_DIR = Path(__file__).resolve().parent / "models" / "relevance"
ONNX_NAME = "model.onnx"
MANIFEST = "relevance.json"
_MAX_QUERY_CHARS = 1000


def has_model(folder: Path) -> bool:
    """True when ``folder`` holds a model: model.onnx or its parts, and tokenizer.json."""
    folder = Path(folder)
    return ((folder / ONNX_NAME).is_file() or (folder / f"{ONNX_NAME}.part00").is_file()) and (
        folder / "tokenizer.json"
    ).is_file()


def read_model_bytes(folder: Path) -> bytes:
    """The ONNX model's bytes: model.onnx, or its .partNN pieces joined in order; checked against the
    manifest's sha256 when there is one."""
    folder = Path(folder)
    manifest = _manifest(folder)
    whole = folder / ONNX_NAME
    if whole.is_file():
        data = whole.read_bytes()
    else:
        parts = sorted(folder.glob(f"{ONNX_NAME}.part[0-9]*"))
        if not parts:
            raise ModelError(
                f"No relevance model in {folder}: expected {ONNX_NAME} or {ONNX_NAME}.part00, ... "
                "Point relevance.model at a folder written by scripts/train_relevance.py, or set it to 'none'."
            )
        expected = manifest.get("parts")
        if expected and [p.name for p in parts] != list(expected):
            raise ModelError(
                f"The relevance model in {folder} is incomplete: found parts {[p.name for p in parts]}, "
                f"relevance.json lists {expected}. Copy all parts again."
            )
        data = b"".join(p.read_bytes() for p in parts)
    want = manifest.get("sha256")
    if want and hashlib.sha256(data).hexdigest() != want:
        raise ModelError(
            f"The relevance model in {folder} is corrupt (sha256 differs from relevance.json). "
            "Copy the model files again, or set relevance.model = 'none'."
        )
    return data


def _manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}). Copy the model folder again.") from exc


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))).astype(np.float32)


class CrossEncoderRelevance:
    """Scores (query, text) pairs with the int8 cross-encoder on the CPU; thread-safe."""

    def __init__(
        self, model_dir: Path, *, batch_size: int = 16, max_len: int | None = None, threads: int = 2
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(
                f"Relevance model folder {model_dir} does not exist. Set relevance.model to 'auto', "
                "'none' or a folder written by scripts/train_relevance.py."
            )
        if not (model_dir / "tokenizer.json").is_file():
            raise ModelError(
                f"{model_dir} has no tokenizer.json; it is not a relevance model folder "
                "(scripts/train_relevance.py writes one)."
            )
        manifest = _manifest(model_dir)
        self.max_len = int(max_len or manifest.get("max_len") or 256)
        self.batch_size = max(1, int(batch_size))
        self.name = model_dir.name
        try:
            self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises a plain Exception on bad files
            raise ModelError(
                f"{model_dir}/tokenizer.json could not be read ({exc}). Copy the model folder again."
            ) from exc
        # longest_first: a long question cannot make truncation fail; a short one keeps every token
        self.tokenizer.enable_truncation(self.max_len, strategy="longest_first")
        self.tokenizer.no_padding()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        data = read_model_bytes(model_dir)
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(
                f"The relevance model in {model_dir} could not be loaded by onnxruntime ({exc}). "
                "Copy it again or set relevance.model = 'none'."
            ) from exc
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """(n,) float32 probabilities that each text is relevant to ``query``."""
        texts = list(texts)
        out = np.zeros(len(texts), dtype=np.float32)
        if not texts:
            return out
        query = " ".join(query.split())[:_MAX_QUERY_CHARS]
        encs = self.tokenizer.encode_batch([(query, t or " ") for t in texts])
        order = sorted(range(len(encs)), key=lambda i: len(encs[i].ids))  # similar lengths share a batch
        with self._lock:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                width = max(len(encs[i].ids) for i in idx)
                ids = np.zeros((len(idx), width), dtype=np.int64)  # (b, s); 0 is [PAD]
                mask = np.zeros_like(ids)
                types = np.zeros_like(ids)
                for row, i in enumerate(idx):
                    e = encs[i]
                    n = len(e.ids)
                    ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
                logits = self.session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
                out[idx] = _sigmoid(np.asarray(logits, dtype=np.float32).reshape(-1))  # (b,)
        return out


def resolve_model_dir(model: str) -> Path | None:
    """The folder a ``relevance.model`` setting names, or None ('none', or 'auto' with nothing shipped)."""
    if model == "none":
        return None
    if model == "auto":
        return SHIPPED_DIR if has_model(SHIPPED_DIR) else None
    path = Path(model).expanduser()
    if not has_model(path):
        raise ModelError(
            f"relevance.model = {model!r}: no model.onnx (or model.onnx.part00) and tokenizer.json there. "
            "Use 'auto', 'none' or a folder written by scripts/train_relevance.py."
        )
    return path


def load_relevance(settings) -> CrossEncoderRelevance | None:
    """A scorer from the ``[relevance]`` settings section, or None when no model is configured."""
    folder = resolve_model_dir(settings.model)
    if folder is None:
        return None
    return CrossEncoderRelevance(
        folder, batch_size=settings.batch_size, max_len=settings.max_len, threads=settings.threads
    )
