"""Export a trained cross-encoder (BERT, one logit) to the ONNX int8 folder ``assistant.relevance`` loads.

``export_cross_encoder(model, tokenizer, out_dir)`` writes:
    model.onnx            int8 weights (quantize_dynamic, per-channel QInt8; embeddings too)
    model.onnx.part00 ..  the same bytes in pieces of at most ``part_mb`` MiB (files that leave a GPU
                          host may be size-limited; the loader joins the parts when model.onnx is absent)
    tokenizer files       the fast tokenizer (tokenizer.json is what the runtime reads)
    relevance.json        recipe, max_len, sha256 and size of model.onnx, list of parts, caller's metadata

The graph takes ``input_ids``, ``attention_mask``, ``token_type_ids`` (batch, sequence) int64 and
returns ``logit`` (batch,) float32; the runtime applies the sigmoid. The TorchScript exporter is used
(``dynamo=False``: no onnxscript needed), then ONNX Runtime's BERT fusion (attention, LayerNorm,
GELU) when it applies, then dynamic quantization. Needs torch, onnx and onnxruntime; this module
does not train and does not score.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from assistant.errors import ModelError

RECIPE = "cross-encoder-onnx-v1:opset17:logit:ortfuse:int8-per-channel"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MANIFEST = "relevance.json"
ONNX_NAME = "model.onnx"
# Feed-forward output projections stay fp32 (their GELU inputs carry outliers; see assistant.embeddings.onnx).
FFN_OUTPUT = r"/layer\.\d+/output/dense/MatMul$"


def export_cross_encoder(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    *,
    max_len: int = 256,
    part_mb: float = 15.0,
    keep_fp32: tuple[str, ...] = (FFN_OUTPUT,),
    meta: dict | None = None,
) -> dict:
    """Write the int8 ONNX model, its parts, the tokenizer and relevance.json into ``out_dir``."""
    import torch

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    cfg = model.config
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out_dir) as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        _export_fp32(model, tokenizer, fp32)
        source = _fuse(
            fp32,
            Path(tmp) / "fused.onnx",
            num_heads=int(cfg.num_attention_heads),
            hidden=int(cfg.hidden_size),
        )
        _quantize(source, out_dir / ONNX_NAME, keep_fp32)
    data = (out_dir / ONNX_NAME).read_bytes()
    parts = write_parts(out_dir / ONNX_NAME, data, part_mb=part_mb)
    tokenizer.save_pretrained(str(out_dir))
    manifest = {
        "recipe": RECIPE,
        "max_len": int(max_len),
        "onnx": ONNX_NAME,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "parts": parts,
        "torch": torch.__version__,
        **(meta or {}),
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def write_parts(path: Path, data: bytes, *, part_mb: float = 15.0) -> list[str]:
    """Split ``data`` into ``<path>.part00``, ``.part01``... of at most ``part_mb`` MiB; old parts removed."""
    for old in path.parent.glob(path.name + ".part*"):
        old.unlink()
    size = max(1, int(part_mb * (1 << 20)))
    names = []
    for i, start in enumerate(range(0, len(data), size)):
        name = f"{path.name}.part{i:02d}"
        (path.parent / name).write_bytes(data[start : start + size])
        names.append(name)
    return names


def _export_fp32(model: Any, tokenizer: Any, out: Path) -> None:
    import torch

    class Logit(torch.nn.Module):
        """(batch, seq) ids → (batch,) relevance logit."""

        def __init__(self, m) -> None:
            super().__init__()
            self.m = m  # node names read /m/bert/encoder/layer.N/...

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits[:, 0]

    # two pairs of different length, so the trace sees real padding
    sample = tokenizer(
        ["how long is parental leave?", "who approves travel?"],
        ["Primary caregivers get sixteen weeks of paid leave.", "Travel needs approval."],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in INPUTS)
    axes = {n: {0: "batch", 1: "sequence"} for n in INPUTS} | {"logit": {0: "batch"}}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches frozen at trace time
        # the exporter restores the wrapper's training flag afterwards, recursively: a wrapper left in
        # train mode would switch the caller's model to train mode (dropout on) behind its back
        torch.onnx.export(
            Logit(model).eval(),
            args,
            str(out),
            input_names=list(INPUTS),
            output_names=["logit"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
            do_constant_folding=True,
        )


def _fuse(fp32: Path, out: Path, *, num_heads: int, hidden: int) -> Path:
    """ONNX Runtime's BERT fusion; the unfused graph when fusion does not apply."""
    try:
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(
            str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden, opt_level=1
        )
        fused.save_model_to_file(str(out))
        return out
    except Exception as exc:  # noqa: BLE001 - fusion is an optimisation; the plain graph is correct
        warnings.warn(f"BERT fusion skipped ({exc}); quantizing the plain graph", stacklevel=2)
        return fp32


def _quantize(source: Path, out: Path, keep_fp32: tuple[str, ...]) -> None:
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ModelError(
            f"int8 export needs the 'onnx' and 'onnxruntime' packages ({exc}): pip install onnx onnxruntime"
        ) from exc
    names = [
        n.name for n in onnx.load(str(source), load_external_data=False).graph.node if n.op_type == "MatMul"
    ]
    exclude = [n for n in names if any(re.search(p, n) for p in keep_fp32)]
    quantize_dynamic(
        str(source),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul", "Attention", "Gather"],
        nodes_to_exclude=exclude,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
