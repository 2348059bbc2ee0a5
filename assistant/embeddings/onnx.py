"""Sentence embeddings on CPU through ONNX Runtime with int8 weights: an ``assistant.embeddings.Embedder``.

The first start exports the sentence-transformers folder's BERT encoder to ONNX with
``torch.onnx.export`` (TorchScript exporter, opset 17, dynamic batch and sequence axes), with mean
pooling over the attention mask and L2 normalization inside the graph, so the ONNX output *is* the
sentence embedding. ONNX Runtime's transformer optimizer then fuses attention / LayerNorm / GELU,
and ``quantize_dynamic`` turns the weights into per-channel QInt8. The fp32 export and the int8
model are cached in ``cache_dir`` (written atomically, keyed by a hash of the weights and of the
recipe), so later starts only load the int8 file and the tokenizer (about 0.4 s, against about 5 s
for sentence-transformers).

Why the recipe looks the way it does (cosine to sentence-transformers; CPU time per chunk with 2
threads; torch fp32 needs about 36 ms): per-tensor QInt8 weights gave only 0.92-0.97 on a few test
sentences; per-channel weights on the fused graph give mean 0.993, min 0.983 over handbook
paragraphs at about 9 ms; keeping the six feed-forward output projections (``layer.N/output/dense``,
whose GELU inputs carry outliers) in fp32 gives mean 0.997, min 0.990 at about 12 ms. That is the
default; ``keep_fp32=()`` quantizes everything for the extra third of speed.

The session runs one text at a time; ``batch_size`` only groups tokenization. Dynamic quantization
computes one activation scale per tensor per run, so in a padded batch a vector depends on its
batch-mates (cosine between the same text embedded alone and in a batch of 64 went down to 0.98),
and batching bought nothing on CPU (14 vs 15 CPU-ms per chunk): no padding is computed this way, and
a text gets the same vector at ingestion and as a query.

Not here: GPU inference (use ``SentenceTransformerEmbedder``), pooling other than mean, calibration-based
static quantization, and downloading anything: the model folder must be local.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np

from assistant.errors import ModelError

RECIPE = "onnx-v1:opset17:mean-pool:l2:ortopt:int8-per-channel"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# MatMul nodes left in fp32 (node names as the export in ``_export`` produces them).
FFN_OUTPUT = r"/layer\.\d+/output/dense/MatMul$"


class OnnxEmbedder:
    """ONNX Runtime int8 twin of ``SentenceTransformerEmbedder`` (CPU only)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        cache_dir: Path,
        batch_size: int = 64,
        threads: int = 2,
        max_seq_length: int = 256,
        keep_fp32: tuple[str, ...] = (FFN_OUTPUT,),
    ) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the chunker measures long texts on purpose
        hf_logging.disable_progress_bar()
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise ModelError(
                f"Embedding model folder {model_dir} has no config.json. Point embedding.model at a local "
                "sentence-transformers folder, or use 'bundled'."
            )
        _check_mean_pooling(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.max_seq_length = min(max_seq_length, _model_max_len(model_dir))
        self.batch_size = batch_size
        self.name = model_dir.name
        self.texts_embedded = 0
        self.calls = 0
        self._lock = threading.Lock()

        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        key = _fingerprint(model_dir, keep_fp32)
        self.fp32_path = cache_dir / f"{self.name}-{key}.onnx"
        self.int8_path = cache_dir / f"{self.name}-{key}-int8.onnx"
        self.session = self._open(model_dir, keep_fp32, threads=threads)
        width = self.session.get_outputs()[0].shape[-1]
        self.dim = (
            width
            if isinstance(width, int)
            else int(json.loads((model_dir / "config.json").read_text())["hidden_size"])
        )

    # -- the Embedder protocol ------------------------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, dim) float32, L2-normalized."""
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            self.calls += 1
            self.texts_embedded += len(texts)
            for start in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[start : start + self.batch_size], truncation=True, max_length=self.max_seq_length
                )
                for row, ids in enumerate(enc["input_ids"]):
                    # One text per run: dynamic quantization picks one activation scale per run, so a
                    # batched run would make a vector depend on its batch-mates (see module docstring).
                    feed = {
                        "input_ids": np.asarray([ids], dtype=np.int64),
                        "attention_mask": np.ones((1, len(ids)), dtype=np.int64),
                        "token_type_ids": np.asarray([enc["token_type_ids"][row]], dtype=np.int64)
                        if "token_type_ids" in enc
                        else np.zeros((1, len(ids)), dtype=np.int64),
                    }
                    out[start + row] = self.session.run(None, feed)[0][0]  # (dim,), normalized in the graph
        return out

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32."""
        return self.embed([text])[0]

    # -- building and caching -------------------------------------------------------------------
    def _open(self, model_dir: Path, keep_fp32: tuple[str, ...], *, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        for _ in range(3):
            had_int8 = self.int8_path.is_file()
            fresh = not had_int8 and not self.fp32_path.is_file()
            try:
                if fresh:
                    _atomic_build(self.fp32_path, lambda tmp: _export(model_dir, tmp))
                if not had_int8:
                    _atomic_build(
                        self.int8_path, lambda tmp: _quantize(self.fp32_path, tmp, model_dir, keep_fp32)
                    )
                return ort.InferenceSession(str(self.int8_path), opts, providers=["CPUExecutionProvider"])
            except ModelError:
                raise
            except Exception as exc:
                if fresh:
                    raise ModelError(
                        f"Could not build the ONNX embedding model from {model_dir}: {exc}. "
                        "Set embedding.backend = 'torch' to embed without ONNX."
                    ) from exc
                # A damaged cache file (the writes are atomic, so someone else touched it): drop the
                # int8 model and re-quantize; if the fp32 export is what is broken, drop it too.
                (self.int8_path if had_int8 else self.fp32_path).unlink(missing_ok=True)
        raise ModelError(
            f"The ONNX cache in {self.int8_path.parent} keeps failing to load. Delete that folder and retry."
        )


def _check_mean_pooling(model_dir: Path) -> None:
    pooling = model_dir / "1_Pooling" / "config.json"
    if pooling.is_file():
        cfg = json.loads(pooling.read_text())
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode_") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise ModelError(
                f"{model_dir} pools with {modes}; the ONNX backend only does mean pooling. "
                "Set embedding.backend = 'torch' for this model."
            )


def _model_max_len(model_dir: Path) -> int:
    sbert = model_dir / "sentence_bert_config.json"
    if sbert.is_file():
        return int(json.loads(sbert.read_text()).get("max_seq_length") or 512)
    return int(json.loads((model_dir / "config.json").read_text()).get("max_position_embeddings", 512))


def _fingerprint(model_dir: Path, keep_fp32: tuple[str, ...]) -> str:
    h = hashlib.sha256(f"{RECIPE}|{'|'.join(keep_fp32)}".encode())
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        path = model_dir / name
        if path.is_file():
            h.update(name.encode())
            with path.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def _atomic_build(target: Path, build) -> None:
    """Run ``build(tmp_path)`` in the target's folder, then rename over the target (never half-written)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export(model_dir: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - install problem
        raise ModelError(
            f"Exporting the embedding model to ONNX needs torch and transformers ({exc})."
        ) from exc

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    model = model.float().eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    # Two rows of different length, so the trace sees real padding.
    sample = tok(
        ["a short one", "a somewhat longer sentence, to make the batch padded"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in INPUTS)
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS} | {"sentence_embedding": {0: "batch"}}

    class SentenceEncoder(torch.nn.Module):
        """BERT + mean pooling over real tokens + L2 norm, i.e. sentence-transformers' three modules."""

        def __init__(self, bert) -> None:
            super().__init__()
            self.m = bert  # the name shows up in node names: /m/encoder/layer.N/...

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state  # (b, s, d)
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (b, s, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, d)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches frozen at trace time
        torch.onnx.export(
            SentenceEncoder(model),
            args,
            str(out),
            input_names=list(INPUTS),
            output_names=["sentence_embedding"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )


def _quantize(fp32: Path, out: Path, model_dir: Path, keep_fp32: tuple[str, ...]) -> None:
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelError(f"int8 quantization needs the 'onnx' package ({exc}): pip install onnx") from exc

    cfg = json.loads((model_dir / "config.json").read_text())
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".fuse-") as tmp:
        source = fp32
        if (
            cfg.get("model_type") == "bert"
        ):  # fuse attention / LayerNorm / GELU first: faster and more accurate
            from onnxruntime.transformers import optimizer

            fused = optimizer.optimize_model(
                str(fp32),
                model_type="bert",
                num_heads=int(cfg["num_attention_heads"]),
                hidden_size=int(cfg["hidden_size"]),
                opt_level=1,
            )
            source = Path(tmp) / "fused.onnx"
            fused.save_model_to_file(str(source))
        names = [
            n.name
            for n in onnx.load(str(source), load_external_data=False).graph.node
            if n.op_type == "MatMul"
        ]
        exclude = [n for n in names if any(re.search(p, n) for p in keep_fp32)]
        quantize_dynamic(
            str(source),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
