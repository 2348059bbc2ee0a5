"""Variable-length (per-example) causal attention for packed rows, as a transformers attention backend.

transformers' own packed path (sdpa + restarting ``position_ids``, see ``packing``) builds a dense
(b, 1, t, t) mask, so SDPA leaves its flash kernel, repeats K/V for grouped-query attention and
computes every block, also the ones that cross examples. This backend instead flattens the batch
to one stream of tokens and gives the kernel the example boundaries (``cu_seq_lens``): no mask,
no work across examples, flash attention with GQA.

- ``enable(model)`` registers the backend ("assistant_varlen") with transformers' attention and
  mask interfaces and switches the model to it. The boundaries travel as the standard
  ``cu_seq_lens_q/k`` and ``max_length_q/k`` keyword arguments (transformers passes them down to
  the attention function, also when activation checkpointing recomputes a layer).
- On CUDA: ``torch.nn.attention.varlen.varlen_attn`` (PyTorch's flash-attention varlen kernel),
  adapting to its signature across torch versions (causal flag or window; GQA flag or repeated
  K/V). Elsewhere (and as the reference in tests): one causal SDPA per example.

Not here: building the rows and their boundaries (``packing.collate_packed``).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

NAME = "assistant_varlen"


def _no_mask(*args, **kwargs):
    return None  # the boundaries, not a mask, keep examples apart


def _flash_varlen(q, k, v, cu: torch.Tensor, max_len: int, scale: float | None) -> torch.Tensor:
    """(T, H, D) queries against (T, H_kv, D) keys/values, causal within each [cu[i], cu[i+1])."""
    from torch.nn.attention.varlen import varlen_attn

    params = inspect.signature(varlen_attn).parameters
    kw: dict = {}
    if "enable_gqa" in params:
        kw["enable_gqa"] = k.shape[1] != q.shape[1]
    elif k.shape[1] != q.shape[1]:  # older torch: K/V must have as many heads as Q
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if "window_size" in params:
        kw["window_size"] = (-1, 0)  # causal
    else:
        kw["is_causal"] = True
    if "scale" in params and scale is not None:
        kw["scale"] = scale
    out = varlen_attn(q, k, v, cu, cu, max_len, max_len, **kw)
    return out[0] if isinstance(out, tuple) else out


_FLASH: list[bool] = []


def _has_flash_varlen() -> bool:
    """torch.nn.attention.varlen exists (torch >= 2.9); otherwise one SDPA per example, said once."""
    if not _FLASH:
        try:
            from torch.nn.attention.varlen import varlen_attn  # noqa: F401

            _FLASH.append(True)
        except ImportError:
            print(
                "varlen attention: this torch has no torch.nn.attention.varlen; one SDPA per example",
                flush=True,
            )
            _FLASH.append(False)
    return _FLASH[0]


def _reference_varlen(q, k, v, cu: torch.Tensor, scale: float | None) -> torch.Tensor:
    """One causal SDPA per example: the CPU path and the reference for the flash kernel."""
    out = torch.empty_like(q)
    rep = q.shape[1] // k.shape[1]
    bounds = cu.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        if e <= s:
            continue
        qs = q[s:e].transpose(0, 1)  # (H, n, D)
        ks = k[s:e].transpose(0, 1).repeat_interleave(rep, dim=0)
        vs = v[s:e].transpose(0, 1).repeat_interleave(rep, dim=0)
        out[s:e] = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale).transpose(0, 1)
    return out


def varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # (b, H, t, D)
    key: torch.Tensor,  # (b, H_kv, t, D)
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    b, h, t, d = query.shape
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:  # no boundaries given (e.g. evaluation): every row is one causal sequence
        cu = torch.arange(0, (b + 1) * t, t, dtype=torch.int32, device=query.device)
        max_len = t
    else:
        max_len = int(kwargs.get("max_length_q") or t)
    q = query.transpose(1, 2).reshape(b * t, h, d)  # (T, H, D)
    k = key.transpose(1, 2).reshape(b * t, key.shape[1], d)
    v = value.transpose(1, 2).reshape(b * t, value.shape[1], d)
    if query.device.type == "cuda" and _has_flash_varlen():
        out = _flash_varlen(q, k, v, cu.to(device=query.device, dtype=torch.int32), max_len, scaling)
    else:
        out = _reference_varlen(q, k, v, cu, scaling)
    return out.reshape(b, t, h, d), None  # transformers expects (b, t, H, D)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, _no_mask)


def enable(model: torch.nn.Module) -> None:
    """Switch a transformers model (or a peft model around one) to the varlen backend."""
    register()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in base.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "_attn_implementation"):
            cfg._attn_implementation = NAME


def boundaries(lengths_per_row: list[list[int]], width: int) -> tuple[torch.Tensor, int]:
    """(cu_seq_lens int32 over the flattened rows, longest segment): examples, then each row's padding tail."""
    cu, pos, longest = [0], 0, 1
    for row in lengths_per_row:
        used = 0
        for n in row:
            pos += n
            used += n
            cu.append(pos)
            longest = max(longest, n)
        if used < width:  # the padding tail: a segment of its own (no targets)
            pos += width - used
            cu.append(pos)
            longest = max(longest, width - used)
    return torch.tensor(cu, dtype=torch.int32), longest
