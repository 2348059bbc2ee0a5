"""Processes and GPUs for training: the process group, DDP or FSDP2 wrapping, world-size-free state.

- ``init_distributed``: joins the process group when started by torchrun (NCCL on CUDA, gloo on
  the CPU); otherwise one process.
- ``wrap``: DDP when the model fits one device, FSDP2 (``fully_shard`` per decoder layer, then the
  root) when it does not (``choose_strategy`` decides from the weights' size, or the caller says).
- ``trainable_state`` / ``load_trainable_state``: the LoRA weights and the optimizer state as
  full, name-keyed tensors (``torch.distributed.checkpoint.state_dict``), so a checkpoint written
  by N processes (DDP or FSDP2) loads into M processes, or into one.
- ``launch_environment``: the variables every child process gets: NVLink multicast stays off
  (``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, ``NVSHMEM_DISABLE_NVLS=1``), since
  on a shared host it can take the GPUs out of service.

Not here: what a step contains (``train``), the loss (``fused_loss``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Strategy = Literal["auto", "ddp", "fsdp"]
PLAIN = "index_keyed_state"  # marks an optimizer state saved by opt.state_dict() (see trainable_state)
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch_environment(base: dict[str, str]) -> dict[str, str]:
    """``base`` (the launcher's environment, from ``settings.child_environment``) with NVLink multicast off."""
    return {**base, **NO_MULTICAST}


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group when started by torchrun; otherwise a single process."""
    use_cuda = torch.cuda.is_available() and device != "cpu"
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_torchelastic_launched()):
        return Dist(
            device=torch.device("cuda" if use_cuda else "cpu") if device == "auto" else torch.device(device)
        )
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if use_cuda:
        dev = torch.device("cuda", rank % torch.cuda.device_count())  # one host: local rank = rank
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return Dist(rank=rank, world=world, device=dev)


def all_sum(x: float, d: Dist) -> float:
    if d.world == 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def device_bytes(device: torch.device) -> float | None:
    """Total memory of a CUDA device, or None (CPU: no limit we can plan against)."""
    if device.type != "cuda":
        return None
    return float(torch.cuda.get_device_properties(device).total_memory)


def choose_strategy(
    strategy: Strategy, *, weight_bytes: float, device: torch.device
) -> Literal["ddp", "fsdp"]:
    """``auto``: FSDP2 when the frozen weights take more than 60 % of one device, else DDP.

    60 % leaves room for activations, LoRA optimizer state and the allocator; a 70B model in bf16
    (141 GB) never fits one 141 GB H200, an 8B one (16 GB) always does. On the CPU: DDP.
    """
    if strategy != "auto":
        return strategy
    total = device_bytes(device)
    return "fsdp" if total is not None and weight_bytes > 0.6 * total else "ddp"


def decoder_layers(lm: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a (peft-wrapped) causal LM: FSDP2's sharding units."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    inner = getattr(base, "model", base)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError("FSDP needs a decoder with model.layers (Llama/Qwen/Mistral-style)")
    return list(layers)


def wrap(loss_module: torch.nn.Module, d: Dist, *, strategy: Literal["ddp", "fsdp"]) -> torch.nn.Module:
    """DDP around ``loss_module``, or FSDP2 in place (each decoder layer, then the root)."""
    if d.world == 1:
        return loss_module
    if strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # on CUDA compute in bf16 (the fp32 LoRA weights are cast when gathered), reduce in fp32
        mp = (
            MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            if d.device.type == "cuda"
            else MixedPrecisionPolicy()
        )
        for layer in decoder_layers(loss_module.model):
            fully_shard(layer, mp_policy=mp)
        fully_shard(loss_module, mp_policy=mp)
        return loss_module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(loss_module, device_ids=[d.device.index] if d.device.type == "cuda" else None)


def trainable_state(model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> tuple[dict, dict | None]:
    """(trainable weights, optimizer state), full tensors on the CPU keyed by parameter name.

    A collective under FSDP2: every process must call it; the values are complete on rank 0.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    weights = get_model_state_dict(model, options=opts)
    optim = None
    if opt is not None:
        try:
            optim = get_optimizer_state_dict(
                model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        except Exception:  # an optimizer the name-keyed API cannot read (bitsandbytes' paged 8-bit)
            if any(getattr(p, "device_mesh", None) is not None for p in model.parameters()):
                raise  # sharded: only the name-keyed form can move between process counts
            optim = {PLAIN: opt.state_dict()}  # index-keyed: same parameters on any DDP world size
    return weights, optim


def load_trainable_state(
    model: torch.nn.Module, opt: torch.optim.Optimizer | None, weights: dict, optim: dict | None
) -> None:
    """Load full, name-keyed state (from ``trainable_state``, any world size) into this process."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    if opt is not None and optim is not None and PLAIN in optim:
        opt.load_state_dict(optim[PLAIN])
    elif opt is not None and optim is not None:
        set_optimizer_state_dict(model, opt, optim, options=StateDictOptions(full_state_dict=True))
