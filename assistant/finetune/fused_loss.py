"""The training loss of a causal LM without materialising the full (tokens × vocabulary) logits.

The core idea: run the decoder (``model.model``) for hidden states, keep only the positions that
carry a target (answer tokens; every other target is -100), and apply the output projection and the
cross-entropy together on those rows only:

    loss_sum = CE(h[targets != -100] @ lm_head.weight.T, targets[targets != -100])

- ``liger``: Liger-Kernel's fused linear cross-entropy (Triton, CUDA only): logits exist one chunk at
  a time inside the kernel, and the gradient of the hidden states is computed in the same pass.
- ``chunked``: the portable fallback (CPU, or CUDA without liger-kernel): the rows are cut into
  chunks and each chunk's logits are recomputed in the backward pass (activation checkpointing of
  the projection + CE), so at most one chunk of logits is alive at a time. Same numbers as plain CE.
- ``none``: the plain path: full fp32 logits for every position (what ``model(...).logits`` +
  ``F.cross_entropy`` does); the reference and the "plain PEFT" benchmark recipe.

Targets are already shifted (``targets[t]`` is the token after position ``t``), so packed rows never
predict across an example boundary. ``CausalLMLoss`` wraps a (peft) causal LM as one module whose
``forward`` returns the summed loss, so DDP and FSDP2 see the whole forward pass.

Not here: batching and packing (``packing``), the optimizer loop (``train``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LossImpl = Literal["auto", "liger", "chunked", "none"]
CHUNK_ROWS = 4096  # rows per logits chunk in the fallback: 4096 × 128k vocab × 4 B = 2 GiB at most


def liger_available() -> bool:
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import (  # noqa: F401
            LigerFusedLinearCrossEntropyLoss,
        )
    except Exception:  # ImportError, or triton failing to initialise on this machine
        return False
    return True


def resolve_impl(impl: LossImpl, device: torch.device) -> Literal["liger", "chunked", "none"]:
    """``auto`` → liger on CUDA when installed, else the chunked fallback."""
    if impl != "auto":
        return impl
    return "liger" if device.type == "cuda" and liger_available() else "chunked"


def _chunk_ce(h: torch.Tensor, weight: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = (h @ weight.t()).float()  # (rows, vocab) fp32, one chunk only
    return F.cross_entropy(logits, y, reduction="sum")


def chunked_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, chunk: int = CHUNK_ROWS
) -> torch.Tensor:
    """Summed CE of ``hidden @ weight.T`` against ``targets`` (no -100 here), ``chunk`` rows at a time."""
    total = hidden.new_zeros((), dtype=torch.float32)
    for i in range(0, hidden.shape[0], chunk):
        h, y = hidden[i : i + chunk], targets[i : i + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            total = total + checkpoint(_chunk_ce, h, weight, y, use_reentrant=False)
        else:
            total = total + _chunk_ce(h, weight, y)
    return total


def liger_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

    # "mean" over rows that all carry a target, times their number: the sum in every Liger version
    # (some ignore ``reduction``); every target here is a real token, none is -100
    out = LigerFusedLinearCrossEntropyLoss(reduction="mean")(weight, hidden, targets)
    if isinstance(out, tuple):  # (loss, z_loss) in some versions
        out = out[0]
    return getattr(out, "loss", out).float() * targets.numel()


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, impl: str = "chunked"
) -> torch.Tensor:
    """Summed CE over the rows of ``hidden`` (n, h) whose target is not -100; ``weight`` is (vocab, h)."""
    hidden, targets = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    keep = targets != -100
    if impl == "none":
        logits = (hidden @ weight.t()).float()  # (n, vocab): every position, as model(...).logits does
        return F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
    h, y = hidden[keep], targets[keep]  # (n_answer, h): only rows that carry a loss
    if y.numel() == 0:
        return (hidden.sum() * 0).float()  # keeps the graph connected (DDP expects every grad)
    if impl == "liger":
        return liger_linear_cross_entropy(h, weight, y)
    return chunked_linear_cross_entropy(h, weight, y)


class CausalLMLoss(torch.nn.Module):
    """``forward(input_ids, targets, position_ids=None, attention_mask=None)`` → summed loss (fp32 scalar).

    Wraps a transformers causal LM (or a peft model around one): ``lm.model`` gives the hidden
    states, ``lm.get_output_embeddings().weight`` is the projection. Being one module, it is what
    DDP wraps and what FSDP2's root ``fully_shard`` manages (embeddings, final norm, lm_head).
    """

    def __init__(self, model: torch.nn.Module, *, impl: str = "chunked") -> None:
        super().__init__()
        self.model = model  # registered, so parameters / state_dict / DDP see it
        self.impl = impl

    def causal_lm(self) -> torch.nn.Module:
        m = self.model
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def forward(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seq_lens: torch.Tensor | None = None,
        max_length: int | None = None,
    ) -> torch.Tensor:
        hidden = self.hidden_states(
            input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            cu_seq_lens=cu_seq_lens,
            max_length=max_length,
        )
        weight = self.causal_lm().get_output_embeddings().weight  # (vocab, h)
        return linear_cross_entropy(hidden, weight, targets, impl=self.impl)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cu_seq_lens: torch.Tensor | None = None,
        max_length: int | None = None,
    ) -> torch.Tensor:
        """(b, t, h) after the final norm. ``use_cache=False`` matters: transformers reads restarting
        ``position_ids`` as packed sequences only when there is no cache and no attention mask.
        ``cu_seq_lens``/``max_length``: example boundaries for the varlen backend (``varlen``)."""
        extra = {}
        if cu_seq_lens is not None:
            extra = dict(
                cu_seq_lens_q=cu_seq_lens,
                cu_seq_lens_k=cu_seq_lens,
                max_length_q=max_length,
                max_length_k=max_length,
            )
        out = self.causal_lm().model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=False,
            **extra,
        )
        return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def apply_liger_kernels(model: torch.nn.Module) -> bool:
    """Swap RMSNorm, RoPE and SwiGLU for Liger's Triton kernels in place (CUDA); False when unavailable.

    The cross-entropy patches stay off: the loss is computed by ``CausalLMLoss``.
    """
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except Exception:
        return False
    try:
        _apply_liger_kernel_to_instance(
            model=model,
            rope=True,
            rms_norm=True,
            swiglu=True,
            cross_entropy=False,
            fused_linear_cross_entropy=False,
        )
    except Exception as e:  # an architecture Liger does not know: train without it, say so
        print(f"liger kernels not applied: {type(e).__name__}: {e}", flush=True)
        return False
    return True
