"""What one training run is made of, built in order: kernels, LoRA, loss module, DDP/FSDP2, optimizer.

``setup`` swaps in Liger's kernels (CUDA), decides activation checkpointing from the memory
estimate (unless the config forces it), attaches LoRA, wraps the model as one ``CausalLMLoss``
module, shards or replicates it over the processes, and only then builds the optimizer (FSDP2
replaces the parameters it shards).

Not here: the step loop and checkpoints (``train``, ``checkpoints``), the loss (``fused_loss``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from assistant.errors import ConfigError, ModelError
from assistant.finetune import distributed as DI
from assistant.finetune import fused_loss as FL
from assistant.finetune.distributed import Dist

if TYPE_CHECKING:
    from assistant.finetune.train import TrainConfig


def attach_lora(model, cfg: TrainConfig, *, checkpointing: bool | None = None):
    """Wrap ``model`` with a peft LoRA adapter; ``checkpointing`` overrides ``cfg.grad_checkpointing``."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise ConfigError(
            f"none of the target modules {list(cfg.target_modules)} exist in this model; its linear "
            f"layers are named like {sorted(present)[:12]}"
        )
    if checkpointing if checkpointing is not None else bool(cfg.grad_checkpointing):
        # non-reentrant checkpointing needs no input-grad hooks; for QLoRA we keep norms and
        # embeddings in bf16 (peft's prepare_model_for_kbit_training would upcast them to fp32)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
    lcfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lcfg)


def _optimizer(params, cfg: TrainConfig, device: torch.device, *, sharded: bool = False):
    if cfg.method == "qlora":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ModelError("QLoRA needs bitsandbytes on a CUDA machine: pip install bitsandbytes") from e
        return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    fused = device.type == "cuda" and not sharded  # FSDP2's DTensor parameters: the foreach path
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    warm = max(1, int(total * cfg.warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


@dataclass
class Setup:
    """What ``setup`` built: the peft model, the module the loop calls, optimizer and schedule."""

    peft_model: torch.nn.Module
    net: torch.nn.Module  # CausalLMLoss, wrapped in DDP or sharded by FSDP2 when world > 1
    trainable: list
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    strategy: str
    checkpointing: bool
    loss_impl: str
    bf16_lora: bool
    liger: bool

    def autocast(self):
        if not self.bf16_lora:
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)


def _weight_bytes(model) -> float:
    return float(sum(p.numel() * p.element_size() for p in model.parameters()))


def _checkpointing(model, cfg: TrainConfig, d: Dist, *, impl: str, strategy: str) -> bool:
    if cfg.grad_checkpointing is not None:
        return cfg.grad_checkpointing
    from assistant.finetune import plan as P

    budget = DI.device_bytes(d.device)
    if cfg.memory_budget_gb is not None:
        budget = min(budget or math.inf, cfg.memory_budget_gb * P.GB)
    if budget is None:
        return False  # the CPU: nothing to plan against
    try:
        shapes = P.Shapes.from_config(model.config.to_dict())
    except (ConfigError, AttributeError):
        return False
    shards = d.world if strategy == "fsdp" else 1
    return P.checkpointing_needed(
        shapes,
        weight_bytes=_weight_bytes(model) / shards,
        tokens=cfg.micro_batch * cfg.max_seq_len,
        lora_params=shapes.lora_params(cfg.r, cfg.target_modules),
        fused_loss=impl != "none",
        budget_bytes=budget,
    )


def setup(
    model,
    cfg: TrainConfig,
    d: Dist,
    *,
    total: int,
    after_wrap: Callable[[torch.nn.Module], None] | None = None,
) -> Setup:
    """Kernels, LoRA, the loss module, DDP/FSDP2, optimizer and schedule for ``model`` on ``d``."""
    impl = FL.resolve_impl(cfg.loss_impl, d.device)  # type: ignore[arg-type]
    cuda_bf16 = d.device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
    liger = cfg.liger_kernels and d.device.type == "cuda" and FL.apply_liger_kernels(model)
    if cfg.attention == "varlen":
        from assistant.finetune import varlen

        varlen.enable(model)
    strategy = DI.choose_strategy(cfg.strategy, weight_bytes=_weight_bytes(model), device=d.device)  # type: ignore[arg-type]
    ckpt = _checkpointing(model, cfg, d, impl=impl, strategy=strategy)
    peft_model = attach_lora(model, cfg, checkpointing=ckpt)
    bf16_lora = cuda_bf16 and cfg.method == "lora" and cfg.lora_autocast
    if bf16_lora:  # autocast runs the LoRA matmuls in bf16; peft's cast of x to fp32 would undo that
        for m in peft_model.modules():
            if hasattr(m, "cast_input_dtype_enabled"):
                m.cast_input_dtype_enabled = False
    net = DI.wrap(FL.CausalLMLoss(peft_model, impl=impl), d, strategy=strategy)
    if after_wrap is not None:
        after_wrap(net)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]  # after wrap: FSDP2 swaps them
    opt = _optimizer(trainable, cfg, d.device, sharded=strategy == "fsdp" and d.world > 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, total))
    return Setup(peft_model, net, trainable, opt, sched, strategy, ckpt, impl, bf16_lora, bool(liger))


def sync_context(s: Setup, *, last_pass: bool):
    """Gradient all-reduce only on the last pass of a step (DDP ``no_sync``; FSDP2 sync flag)."""
    net = s.net
    if hasattr(net, "no_sync") and not last_pass:
        return net.no_sync()
    if hasattr(net, "set_requires_gradient_sync"):
        net.set_requires_gradient_sync(last_pass)
    return nullcontext()
