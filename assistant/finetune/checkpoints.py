"""Training checkpoints that resume on any number of processes.

A checkpoint is a folder ``<run>/checkpoint`` with ``trainable.safetensors`` (the full LoRA
weights, keyed by parameter name), ``trainer.pt`` (the full optimizer state keyed by parameter
name, the schedule, the step = the data position, the loss history, the run's metadata) and
``step.json``. Written by rank 0 after every process took part in gathering FSDP2 shards, in a
temporary folder renamed into place, so a crash never leaves a half-written checkpoint; read by
every process, each keeping its own part (``distributed.load_trainable_state``).

Not here: when to save (``train``), the final adapter folder (peft's ``save_pretrained``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from assistant.errors import ConfigError
from assistant.finetune import distributed as DI
from assistant.finetune.distributed import Dist


def save_checkpoint(
    out_dir: Path, model, opt, sched, step: int, losses: list[float], meta: dict, d: Dist
) -> dict:
    """Write out_dir/checkpoint atomically (rank 0); every process must call it (FSDP2 gathers).

    Returns the full trainable weights (complete on rank 0), for the final adapter.
    """
    from safetensors.torch import save_file

    weights, optim = DI.trainable_state(model, opt)
    if d.main:
        tmp, final, old = out_dir / ".checkpoint.tmp", out_dir / "checkpoint", out_dir / ".checkpoint.old"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "trainable.safetensors"))
        torch.save(
            {
                "optimizer": optim,
                "scheduler": sched.state_dict(),
                "step": step,
                "losses": losses,
                "meta": meta,
            },
            tmp / "trainer.pt",
        )
        (tmp / "step.json").write_text(json.dumps({"step": step, "world": d.world, **meta}) + "\n")
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    DI.barrier(d)
    return weights


def load_checkpoint(out_dir: Path, model, opt, sched, meta: dict) -> tuple[int, list[float]]:
    """Every process reads the full state and keeps its part; any process count wrote it."""
    from safetensors.torch import load_file

    ck = out_dir / "checkpoint"
    if not (ck / "trainer.pt").exists():
        return 0, []
    state = torch.load(ck / "trainer.pt", map_location="cpu", weights_only=False)
    if state["meta"].get("data") != meta.get("data"):
        raise ConfigError(
            f"{ck} was made from other training data ({state['meta'].get('data')} != {meta.get('data')}); "
            "pass --no-resume or another --out"
        )
    if not (ck / "trainable.safetensors").exists():
        raise ConfigError(f"{ck} was written by an older version; pass --no-resume or another --out")
    DI.load_trainable_state(model, opt, load_file(str(ck / "trainable.safetensors")), state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"]), list(state["losses"])
