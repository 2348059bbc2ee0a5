"""Convert one GGUF file into a plain, trainable Hugging Face model folder.

    python -m assistant.llm.gguf_convert MODEL.gguf OUTDIR [--dtype bfloat16|float32|float16]

Needs only torch, transformers and gguf (no settings, no other part of this package), so it runs
on a bare GPU host. A model loaded with ``from_pretrained(gguf_file=)`` keeps a ``GgufHfQuantizer``
(and, in recent transformers, packed weights) that makes it untrainable and unsavable; so instead
a fresh model is built from the GGUF's config on the ``meta`` device, transformers' GGUF reader
dequantizes every tensor under its Hugging Face name, the weights are assigned into the model
(every tensor must match the architecture), and it is saved with ``save_pretrained`` (safetensors) together with the tokenizer (with its chat template)
and a generation config whose end-of-sequence ids come from the tokenizer.

The folder is written to a temporary sibling and renamed, and the marker file ``MARKER`` is
written last, so a crash never leaves a half model that looks complete.

On a host without the ``gguf`` package (the H200 image has torch 2.11 / transformers 5.17 / peft
but no gguf): it is pure Python (numpy, pyyaml, tqdm): ``pip download --no-deps gguf==0.19.0``
elsewhere, unzip the wheel into a folder and put it on ``PYTHONPATH``. Converting on this
2-core machine took 8.5 min for the 1.5B (77 s of CPU; the rest was waiting), peak 5.7 GB RAM.

Not here: finding, downloading or checking GGUF files (``loading``, ``pull``), loading for use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

MARKER = "assistant-model.json"  # written last into a converted folder: its presence means "complete"

_DTYPES = ("bfloat16", "float32", "float16")


class ConversionError(RuntimeError):
    """The GGUF could not be read or rebuilt into a Hugging Face model."""


def is_converted(folder: Path) -> bool:
    """True when ``folder`` holds a complete conversion (its marker was written)."""
    return (Path(folder) / MARKER).is_file()


def convert_gguf(gguf: Path, out_dir: Path, *, dtype: str = "bfloat16", overwrite: bool = False) -> Path:
    """Write ``gguf`` as a Hugging Face folder at ``out_dir`` (weights in ``dtype``); returns ``out_dir``.

    An existing complete conversion at ``out_dir`` is kept unless ``overwrite``.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer

    gguf, out_dir = Path(gguf).expanduser().resolve(), Path(out_dir).expanduser()
    if dtype not in _DTYPES:
        raise ConversionError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}.")
    if not gguf.is_file():
        raise ConversionError(f"{gguf} does not exist; give the path of a .gguf file.")
    if is_converted(out_dir) and not overwrite:
        return out_dir
    torch_dtype = getattr(torch, dtype)
    t0 = time.perf_counter()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared by every data_dir
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        except Exception as e:  # transformers raises many kinds here; the message is what matters
            raise ConversionError(
                f"Could not read GGUF file {gguf}: {e}. Use a GGUF of an architecture transformers "
                "supports (llama, mistral, qwen2, ...) or a Hugging Face folder."
            ) from e
        model = _rebuild(gguf, config, torch_dtype)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        _generation_config(model, tok).save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps(
                {
                    "source": gguf.name,
                    "dtype": dtype,
                    "converted_s": round(time.perf_counter() - t0, 1),
                    "architecture": (model.config.architectures or [""])[0],
                }
            )
        )
        if overwrite and out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # another process finished the same conversion first: theirs is as good as ours
            if not is_converted(out_dir):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _rebuild(gguf: Path, config, torch_dtype):
    """A model built from ``config`` holding the GGUF's dequantized weights, with no quantizer attached.

    transformers' own GGUF reader (``load_gguf_checkpoint``) dequantizes every tensor and maps its
    name onto the architecture; going through it directly, not ``from_pretrained(gguf_file=)``,
    keeps recent versions from leaving the weights packed behind a GGUF quantizer.
    """
    import inspect

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    cfg_dict = config.to_dict()
    for key in ("quantization_config", "_name_or_path", "torch_dtype", "dtype"):
        cfg_dict.pop(key, None)  # the dtype is recorded from the weights by save_pretrained
    model_type = cfg_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg_dict)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    kwargs = (
        {"torch_dtype": torch_dtype}
        if "torch_dtype" in inspect.signature(load_gguf_checkpoint).parameters
        else {}
    )
    try:
        state = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model, **kwargs)["tensors"]
    except Exception as e:
        raise ConversionError(f"Could not dequantize the tensors of {gguf}: {e}.") from e
    state = {k: v.to(torch_dtype) for k, v in state.items()}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if tied:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and tied)]
    if missing or unexpected:
        raise ConversionError(
            f"The GGUF weights do not match the {model_type} architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}."
        )
    model.tie_weights()
    # non-persistent buffers (rotary frequencies) stay on meta: they are never saved, and rebuilt at load
    still_meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if still_meta:
        raise ConversionError(f"Weights left unset after conversion: {still_meta[:5]}.")
    return model


def _generation_config(model, tok):
    """The model's generation config with the tokenizer's end-of-turn ids (chat models stop there)."""
    from transformers import GenerationConfig

    gen = GenerationConfig.from_model_config(model.config)
    eos = []
    for t in (tok.eos_token, "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        tid = tok.convert_tokens_to_ids(t) if t else None
        if isinstance(tid, int) and tid != tok.unk_token_id and tid not in eos:
            eos.append(tid)
    if eos:
        gen.eos_token_id = eos if len(eos) > 1 else eos[0]
    if tok.pad_token_id is not None:
        gen.pad_token_id = tok.pad_token_id
    elif eos:
        gen.pad_token_id = eos[0]
    if tok.bos_token_id is not None:
        gen.bos_token_id = tok.bos_token_id
    gen.do_sample = False
    return gen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m assistant.llm.gguf_convert",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("gguf", type=Path, help="the .gguf file")
    ap.add_argument("out", type=Path, help="the Hugging Face folder to write")
    ap.add_argument("--dtype", choices=_DTYPES, default="bfloat16", help="weight dtype (default bfloat16)")
    ap.add_argument("--overwrite", action="store_true", help="convert again even if OUT is complete")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        out = convert_gguf(args.gguf, args.out, dtype=args.dtype, overwrite=args.overwrite)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{out} ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
