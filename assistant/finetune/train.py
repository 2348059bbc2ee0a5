"""LoRA / QLoRA training of the answering model with peft.

The core idea, per example: tokens = chat_template(system+sources+question) + answer + end-of-turn,
and the loss is the cross-entropy on the answer tokens only (prompt labels are -100).

- ``train_model`` trains an already-built model (the seam tests and benchmarks use); ``train``
  loads a Hugging Face folder (bf16 on CUDA, fp32 on CPU, 4-bit NF4 with double quantization for
  ``qlora``), then calls it.
- Batches are built from a deterministic permutation: a step always covers the same examples, on
  any number of processes, so a checkpoint resumes on a different GPU count. Inside a step the
  examples are sorted by length (length bucketing) and dealt round-robin to the processes, then
  cut into micro-batches (gradient accumulation); padding per micro-batch is minimal.
- The loss is normalised by the number of answer tokens in the whole global batch, so 1 GPU and
  N GPUs follow the same curve.
- DDP runs when started by ``torchrun`` (NCCL on CUDA, gloo on CPU); only rank 0 writes.
- Checkpoints (adapter + optimizer + scheduler + step) are written to a temporary folder and
  renamed into place, so a crash never leaves a half-written checkpoint.

Not here: data building (``data``), the registry (``assistant.llm.adapters``), evaluation.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from assistant.errors import ConfigError, ModelError
from assistant.finetune.data import messages_of

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one run; validated on creation with messages that name the field."""

    method: Literal["lora", "qlora"] = "lora"
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ALL_LINEAR
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs
    global_batch: int = 16  # examples per optimizer step, over all processes
    micro_batch: int = 4  # examples per forward pass per process
    max_seq_len: int = 1024
    grad_checkpointing: bool = False
    bucketing: bool = True
    pad_to_max: bool = False  # pad every sequence to max_seq_len (the plain recipe; for benchmarks)
    # Padding is on the right and attention is causal, so real tokens never see the pads: no mask
    # is needed, and without one SDPA takes its flash kernel (a mask plus GQA forces the slow path).
    attention_mask: bool = False
    seed: int = 0
    save_every: int = 50
    min_lr_ratio: float = 0.1

    def __post_init__(self) -> None:
        checks = [
            ("method", self.method in ("lora", "qlora"), "lora or qlora"),
            ("r", self.r >= 1, ">= 1"),
            ("alpha", self.alpha >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("lr", self.lr > 0, "> 0"),
            ("global_batch", self.global_batch >= 1, ">= 1"),
            ("micro_batch", 1 <= self.micro_batch, ">= 1"),
            ("max_seq_len", self.max_seq_len >= 16, ">= 16"),
            ("target_modules", bool(self.target_modules), "a non-empty list such as q_proj,v_proj"),
            ("epochs", self.epochs > 0 or (self.max_steps or 0) > 0, "> 0 (or set max_steps)"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(
                    f"training setting {name}={getattr(self, name)!r} is invalid: it must be {want}"
                )


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    resumed_from: int
    losses: list[float] = field(default_factory=list)
    tokens: int = 0  # tokens processed (prompt + answer, no padding) in this process's run
    seconds: float = 0.0
    dropped: int = 0  # examples longer than max_seq_len

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


# ---------------------------------------------------------------- tokenization


def encode(tokenizer, example: dict, *, max_seq_len: int) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) with labels -100 on the prompt, or None when longer than max_seq_len."""
    messages = messages_of(example)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": example["answer"]}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ModelError(
            "the tokenizer's chat template does not extend the generation prompt with the answer; use a "
            "model with a standard chat template"
        )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(full[len(prompt) :].rstrip("\n"), add_special_tokens=False)["input_ids"]
    if len(p_ids) + len(a_ids) > max_seq_len:
        return None
    return p_ids + a_ids, [-100] * len(p_ids) + a_ids


def encode_all(
    tokenizer, examples: list[dict], *, max_seq_len: int
) -> tuple[list[tuple[list[int], list[int]]], int]:
    out, dropped = [], 0
    for ex in examples:
        enc = encode(tokenizer, ex, max_seq_len=max_seq_len)
        if enc is None:
            dropped += 1
        else:
            out.append(enc)
    return out, dropped


def collate(
    items: list[tuple[list[int], list[int]]], *, pad_id: int, width: int | None = None
) -> dict[str, torch.Tensor]:
    width = width or max(len(ids) for ids, _ in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)  # (b, t)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, (x, y) in enumerate(items):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---------------------------------------------------------------- batching


def step_indices(n: int, step: int, *, global_batch: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step``: a fresh permutation per epoch, any world size."""
    steps_per_epoch = max(1, n // global_batch)
    epoch, k = divmod(step, steps_per_epoch)
    perm = list(range(n))
    random.Random(seed * 100_003 + epoch).shuffle(perm)
    return perm[k * global_batch : (k + 1) * global_batch]


def micro_batches(
    indices: list[int], lengths: list[int], *, rank: int, world: int, micro_batch: int, bucketing: bool
) -> list[list[int]]:
    """This process's micro-batches of one step: sorted by length, dealt round-robin, chunked."""
    order = sorted(indices, key=lambda i: (lengths[i], i)) if bucketing else list(indices)
    mine = order[rank::world]
    return [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]


# ---------------------------------------------------------------- model preparation


def attach_lora(model, cfg: TrainConfig):
    """Wrap ``model`` with a peft LoRA adapter (after k-bit preparation for QLoRA)."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in cfg.target_modules if t in present]
    if not targets:
        raise ConfigError(
            f"none of the target modules {list(cfg.target_modules)} exist in this model; its linear "
            f"layers are named like {sorted(present)[:12]}"
        )
    if cfg.grad_checkpointing:
        # non-reentrant checkpointing needs no input-grad hooks; for QLoRA we keep norms and
        # embeddings in bf16 (peft's prepare_model_for_kbit_training would upcast them to fp32)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "config"):
        model.config.use_cache = False
    lcfg = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    return get_peft_model(model, lcfg)


def _optimizer(params, cfg: TrainConfig, device: torch.device):
    if cfg.method == "qlora":
        try:
            import bitsandbytes as bnb
        except ImportError as e:
            raise ModelError("QLoRA needs bitsandbytes on a CUDA machine: pip install bitsandbytes") from e
        return bnb.optim.PagedAdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda")


def _schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    warm = max(1, int(total * cfg.warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


# ---------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


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
        dev = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return Dist(rank=rank, world=world, device=dev)


def _all_sum(x: float, d: Dist) -> float:
    if d.world == 1:
        return x
    import torch.distributed as dist

    t = torch.tensor([x], dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return float(t.item())


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(out_dir: Path, model, opt, sched, step: int, losses: list[float], meta: dict) -> None:
    """Write out_dir/checkpoint atomically: build in a temp folder, then rename into place."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp, final, old = out_dir / ".checkpoint.tmp", out_dir / "checkpoint", out_dir / ".checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, str(tmp / "adapter.safetensors"))
    torch.save(
        {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "losses": losses,
            "meta": meta,
        },
        tmp / "trainer.pt",
    )
    (tmp / "step.json").write_text(json.dumps({"step": step, **meta}) + "\n")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(out_dir: Path, model, opt, sched, meta: dict) -> tuple[int, list[float]]:
    from peft import set_peft_model_state_dict
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
    set_peft_model_state_dict(model, load_file(str(ck / "adapter.safetensors")))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["step"]), list(state["losses"])


# ---------------------------------------------------------------- the loop


def total_steps(n_examples: int, cfg: TrainConfig) -> int:
    if cfg.max_steps:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * max(1, n_examples // cfg.global_batch)))


def train_model(
    model,
    tokenizer,
    examples: list[dict],
    cfg: TrainConfig,
    *,
    out_dir: Path,
    dist: Dist | None = None,
    resume: bool = True,
    progress: bool = True,
    data_fingerprint: str = "",
    stop_after: int | None = None,
) -> TrainResult:
    """Tokenize ``examples`` (loss on answers only), attach LoRA to ``model`` and train.

    The adapter is saved to out_dir/adapter; ``stop_after`` ends this call after that many steps
    (the checkpoint is kept, so a later call resumes).
    """
    encoded, dropped = encode_all(tokenizer, examples, max_seq_len=cfg.max_seq_len)
    if not encoded:
        raise ConfigError(
            f"no training example fits in max_seq_len={cfg.max_seq_len} tokens; raise --seq-len"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    result = train_encoded(
        model,
        encoded,
        cfg,
        pad_id=pad_id,
        out_dir=out_dir,
        dist=dist,
        resume=resume,
        progress=progress,
        data_fingerprint=data_fingerprint,
        stop_after=stop_after,
    )
    result.dropped = dropped
    return result


def train_encoded(
    model,
    encoded: list[tuple[list[int], list[int]]],
    cfg: TrainConfig,
    *,
    pad_id: int,
    out_dir: Path | None,
    dist: Dist | None = None,
    resume: bool = True,
    progress: bool = True,
    data_fingerprint: str = "",
    stop_after: int | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """The training loop over tokenized (input_ids, labels) pairs; ``out_dir=None`` saves nothing."""
    d = dist or Dist(device=next(model.parameters()).device)
    torch.manual_seed(cfg.seed)
    lengths = [len(ids) for ids, _ in encoded]
    answer_tokens = [sum(1 for y in labels[1:] if y != -100) for _, labels in encoded]
    gb = min(cfg.global_batch, len(encoded))
    total = total_steps(len(encoded), cfg)

    peft_model = attach_lora(model, cfg)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = _optimizer(trainable, cfg, d.device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, total))
    meta = {"data": data_fingerprint, "config": asdict(cfg)}
    start, losses = (
        _load_checkpoint(out_dir, peft_model, opt, sched, meta) if (resume and out_dir) else (0, [])
    )
    net = peft_model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(peft_model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    net.train()
    bar = _progress(total, start, enabled=progress and d.main)
    tokens, t0 = 0, time.perf_counter()
    last = total if stop_after is None else min(total, start + stop_after)
    for step in range(start, last):
        idx = step_indices(len(encoded), step, global_batch=gb, seed=cfg.seed)
        denom = max(1, sum(answer_tokens[i] for i in idx))  # answer tokens in the whole global batch
        mbs = micro_batches(
            idx, lengths, rank=d.rank, world=d.world, micro_batch=cfg.micro_batch, bucketing=cfg.bucketing
        )
        loss_sum = torch.zeros((), device=d.device)
        for j, mb in enumerate(mbs):
            batch = collate(
                [encoded[i] for i in mb], pad_id=pad_id, width=cfg.max_seq_len if cfg.pad_to_max else None
            )
            batch = {k: v.to(d.device, non_blocking=True) for k, v in batch.items()}
            with nullcontext() if j == len(mbs) - 1 or d.world == 1 else net.no_sync():
                mask = batch["attention_mask"] if cfg.attention_mask else None
                logits = net(input_ids=batch["input_ids"], attention_mask=mask).logits  # (b, t, vocab)
                nll = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1).float(),
                    batch["labels"][:, 1:].flatten(),
                    ignore_index=-100,
                    reduction="sum",
                )
                (nll * d.world / denom).backward()  # DDP averages gradients over processes; undo that
            del logits
            loss_sum += nll.detach()
            tokens += sum(lengths[i] for i in mb)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(_all_sum(float(loss_sum), d) / denom)
        if on_step is not None:
            on_step(step, losses[-1])
        if bar is not None:
            elapsed = time.perf_counter() - t0
            bar.set_postfix(
                loss=f"{losses[-1]:.4f}",
                tok_s=f"{tokens * d.world / max(elapsed, 1e-9):,.0f}",
                lr=f"{sched.get_last_lr()[0]:.1e}",
            )
            bar.update(1)
        if out_dir and d.main and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < last:
            _save_checkpoint(out_dir, peft_model, opt, sched, step + 1, losses, meta)
    seconds = time.perf_counter() - t0
    done = max(last, start)
    if bar is not None:
        bar.close()
    adapter_dir = (out_dir or Path(".")) / "adapter"
    if out_dir and d.main:
        _save_checkpoint(out_dir, peft_model, opt, sched, done, losses, meta)
        if done >= total:
            peft_model.save_pretrained(str(adapter_dir))
            (out_dir / "training.json").write_text(
                json.dumps(
                    {**meta, "steps": done, "losses": losses, "examples": len(encoded), "world": d.world},
                    indent=1,
                )
                + "\n"
            )
    if d.world > 1:
        import torch.distributed as dist_mod

        dist_mod.barrier()
    return TrainResult(
        adapter_dir=adapter_dir, steps=done, resumed_from=start, losses=losses, tokens=tokens, seconds=seconds
    )


def _progress(total: int, start: int, *, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)


# ---------------------------------------------------------------- from a model folder


def train(
    model_dir: Path,
    examples: list[dict],
    cfg: TrainConfig,
    *,
    out_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    resume: bool = True,
    progress: bool = True,
    data_fingerprint: str = "",
) -> TrainResult:
    from assistant.llm.loading import load_model

    d = init_distributed(device)
    if cfg.method == "qlora" and d.device.type != "cuda":
        raise ConfigError("QLoRA (4-bit NF4) needs a CUDA GPU; use --method lora on this machine")
    model, tok = load_model(
        model_dir, device=str(d.device), dtype=dtype, quantize="nf4" if cfg.method == "qlora" else "none"
    )
    return train_model(
        model,
        tok,
        examples,
        cfg,
        out_dir=out_dir,
        dist=d,
        resume=resume,
        progress=progress,
        data_fingerprint=data_fingerprint,
    )
