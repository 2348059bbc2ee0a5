"""LoRA / QLoRA training of the answering model with peft.

The core idea, per example: tokens = chat_template(system+sources+question) + answer + end-of-turn,
and the loss is the cross-entropy on the answer tokens only (prompt labels are -100).

- ``train_model`` trains an already-built model (the seam tests and benchmarks use); ``train``
  loads a Hugging Face folder (bf16 on CUDA, fp32 on CPU, 4-bit NF4 with double quantization for
  ``qlora``), then calls it.
- Batches are built from a deterministic permutation: a step always covers the same examples, on
  any number of processes, so a checkpoint resumes on a different GPU count. Inside a step the
  examples are sorted by length and dealt round-robin to the processes; each process then packs
  its share into rows of ``max_seq_len`` tokens (``packing``: several examples per row, positions
  restart per example, attention cannot cross examples) and runs ``micro_batch`` rows per forward
  pass, or (``packing=False``) cuts it into length-bucketed, right-padded micro-batches.
  Packed rows use transformers' own packed-sequence mask (``attention="sdpa"``) or per-example
  flash attention over the example boundaries (``attention="varlen"``, ``varlen``).
- The loss never materialises the (tokens x vocabulary) logits (``fused_loss``: Liger's fused
  linear cross-entropy on CUDA, a chunked fallback elsewhere) and covers answer tokens only. It is
  normalised by the number of answer tokens in the whole global batch, so 1 GPU and N GPUs follow
  the same curve.
- On CUDA with a bf16 base, Liger's RMSNorm/RoPE/SwiGLU kernels are swapped in and the LoRA
  matmuls run in bf16 under autocast (fp32 master weights; peft's per-layer fp32 cast of the input
  is skipped).
- Activation checkpointing: ``grad_checkpointing=None`` decides from the memory estimate
  (``plan.checkpointing_needed``: weights + LoRA state + activations of one micro-batch against
  the device's memory or ``memory_budget_gb``); True/False override it.
- Several processes (torchrun; NCCL on CUDA, gloo on CPU): DDP when the weights fit one device,
  FSDP2 when they do not (``distributed``). Checkpoints (LoRA weights + optimizer + scheduler +
  step) hold full, name-keyed tensors, so they resume on another process count; written to a
  temporary folder and renamed into place, so a crash never leaves a half-written checkpoint.

Not here: data building (``data``), the registry (``assistant.llm.adapters``), evaluation.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from assistant.errors import ConfigError, ModelError
from assistant.finetune import distributed as DI
from assistant.finetune import packing as PK
from assistant.finetune.checkpoints import load_checkpoint, save_checkpoint
from assistant.finetune.data import messages_of
from assistant.finetune.distributed import Dist, init_distributed  # noqa: F401  (public here too)
from assistant.finetune.runtime import attach_lora, setup, sync_context  # noqa: F401  (attach_lora: public)

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
    grad_checkpointing: bool | None = None  # None: decide from the memory estimate
    bucketing: bool = True
    pad_to_max: bool = False  # pad every sequence to max_seq_len (the plain recipe; for benchmarks)
    # Padding is on the right and attention is causal, so real tokens never see the pads: no mask
    # is needed, and without one SDPA takes its flash kernel (a mask plus GQA forces the slow path).
    attention_mask: bool = False
    seed: int = 0
    save_every: int = 50
    min_lr_ratio: float = 0.1
    packing: bool = True  # several examples per row (micro_batch then counts rows of max_seq_len)
    loss_impl: str = "auto"  # auto | liger | chunked | none (full logits)
    liger_kernels: bool = True  # Liger RMSNorm/RoPE/SwiGLU on CUDA when installed
    lora_autocast: bool = True  # CUDA + bf16 base: LoRA matmuls in bf16 under autocast
    memory_budget_gb: float | None = None  # for the checkpointing decision (default: the device)
    strategy: str = "auto"  # several processes: auto | ddp | fsdp
    attention: str = "sdpa"  # packed rows: sdpa (transformers' mask) | varlen (per-example flash kernel)

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
            (
                "loss_impl",
                self.loss_impl in ("auto", "liger", "chunked", "none"),
                "auto, liger, chunked or none",
            ),
            ("strategy", self.strategy in ("auto", "ddp", "fsdp"), "auto, ddp or fsdp"),
            ("attention", self.attention in ("sdpa", "varlen"), "sdpa or varlen"),
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
    checkpointing: bool = False  # activation checkpointing as decided (or forced) for this run
    loss_impl: str = ""  # liger | chunked | none
    liger: bool = False  # Liger's RMSNorm/RoPE/SwiGLU kernels were swapped in
    strategy: str = ""  # ddp | fsdp (one process: ddp, meaning no wrapper)

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


def forward_batches(
    indices: list[int], lengths: list[int], cfg: TrainConfig, *, rank: int, world: int
) -> list[list[list[int]]]:
    """This process's forward passes of one step: passes → rows → example indices.

    Packing: the process's share is packed into rows of ``max_seq_len`` and ``micro_batch`` rows go
    into each pass. Otherwise one example per row, ``micro_batch`` rows per pass.
    """
    if cfg.packing and not cfg.pad_to_max:
        mine = micro_batches(
            indices, lengths, rank=rank, world=world, micro_batch=len(indices) or 1, bucketing=True
        )
        share = mine[0] if mine else []
        return PK.packed_micro_batches(share, lengths, width=cfg.max_seq_len, rows_per_batch=cfg.micro_batch)
    mbs = micro_batches(
        indices, lengths, rank=rank, world=world, micro_batch=cfg.micro_batch, bucketing=cfg.bucketing
    )
    return [[[i] for i in mb] for mb in mbs]


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
    after_wrap: Callable[[torch.nn.Module], None] | None = None,
) -> TrainResult:
    """The training loop over tokenized (input_ids, labels) pairs; ``out_dir=None`` saves nothing.

    ``after_wrap(net)`` runs once the model is wrapped/sharded and before the optimizer is built:
    the place to materialise a model built on the meta device (each process fills its shards).
    """
    d = dist or Dist(device=next(model.parameters()).device)
    torch.manual_seed(cfg.seed)
    lengths = [len(ids) for ids, _ in encoded]
    answer_tokens = [sum(1 for y in labels[1:] if y != -100) for _, labels in encoded]
    gb = min(cfg.global_batch, len(encoded))
    total = total_steps(len(encoded), cfg)

    s = setup(model, cfg, d, total=total, after_wrap=after_wrap)
    meta = {"data": data_fingerprint, "config": asdict(cfg)}
    start, losses = (
        load_checkpoint(out_dir, s.peft_model, s.opt, s.sched, meta) if (resume and out_dir) else (0, [])
    )
    s.net.train()
    bar = _progress(total, start, enabled=progress and d.main)
    tokens, t0 = 0, time.perf_counter()
    last = total if stop_after is None else min(total, start + stop_after)
    for step in range(start, last):
        idx = step_indices(len(encoded), step, global_batch=gb, seed=cfg.seed)
        denom = max(1, sum(answer_tokens[i] for i in idx))  # answer tokens in the whole global batch
        passes = forward_batches(idx, lengths, cfg, rank=d.rank, world=d.world)
        if s.strategy == "fsdp":  # every process must run as many passes (each one is a collective)
            most = max(len(forward_batches(idx, lengths, cfg, rank=r, world=d.world)) for r in range(d.world))
            passes += [[]] * (most - len(passes))
        loss_sum = torch.zeros((), device=d.device)
        for j, rows in enumerate(passes):
            batch = _collate(rows, encoded, cfg, pad_id=pad_id)
            batch = {
                k: v.to(d.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
            }
            with sync_context(s, last_pass=j == len(passes) - 1):  # forward and backward inside
                with s.autocast():  # the forward only, as autocast wants
                    nll = s.net(**batch)  # summed CE over this pass's answer tokens
                (nll * d.world / denom).backward()  # DDP/FSDP average gradients over processes; undo that
            loss_sum += nll.detach()
            tokens += sum(lengths[i] for row in rows for i in row)
        torch.nn.utils.clip_grad_norm_(s.trainable, 1.0)
        s.opt.step()
        s.sched.step()
        s.opt.zero_grad(set_to_none=True)
        losses.append(DI.all_sum(float(loss_sum), d) / denom)
        if on_step is not None:
            on_step(step, losses[-1])
        if bar is not None:
            elapsed = time.perf_counter() - t0
            bar.set_postfix(
                loss=f"{losses[-1]:.4f}",
                tok_s=f"{tokens * d.world / max(elapsed, 1e-9):,.0f}",
                lr=f"{s.sched.get_last_lr()[0]:.1e}",
            )
            bar.update(1)
        if out_dir and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < last:
            save_checkpoint(out_dir, s.peft_model, s.opt, s.sched, step + 1, losses, meta, d)
    seconds = time.perf_counter() - t0
    done = max(last, start)
    if bar is not None:
        bar.close()
    adapter_dir = (out_dir or Path(".")) / "adapter"
    if out_dir:
        weights = save_checkpoint(out_dir, s.peft_model, s.opt, s.sched, done, losses, meta, d)
        if done >= total and d.main:
            s.peft_model.save_pretrained(str(adapter_dir), state_dict=weights)
            (out_dir / "training.json").write_text(
                json.dumps(
                    {
                        **meta,
                        "steps": done,
                        "losses": losses,
                        "examples": len(encoded),
                        "world": d.world,
                        "strategy": s.strategy,
                        "checkpointing": s.checkpointing,
                        "loss_impl": s.loss_impl,
                        "launch_env": _launch_env(),
                    },
                    indent=1,
                )
                + "\n"
            )
    DI.barrier(d)
    return TrainResult(
        adapter_dir=adapter_dir,
        steps=done,
        resumed_from=start,
        losses=losses,
        tokens=tokens,
        seconds=seconds,
        checkpointing=s.checkpointing,
        loss_impl=s.loss_impl,
        liger=s.liger,
        strategy=s.strategy,
    )


def _collate(rows: list[list[int]], encoded, cfg: TrainConfig, *, pad_id: int) -> dict[str, torch.Tensor]:
    if not rows:  # an empty pass (FSDP2 keeps process counts of passes equal): one row, no targets
        b = PK.collate_padded([([pad_id] * 16, [-100] * 16)], pad_id=pad_id)
        return {"input_ids": b["input_ids"], "targets": b["targets"]}
    if cfg.packing and not cfg.pad_to_max:
        b = PK.collate_packed([[encoded[i] for i in row] for row in rows], pad_id=pad_id)
        if cfg.attention != "varlen":  # transformers' sdpa path finds the boundaries in position_ids
            del b["cu_seq_lens"], b["max_length"]
        return b
    b = PK.collate_padded(
        [encoded[row[0]] for row in rows], pad_id=pad_id, width=cfg.max_seq_len if cfg.pad_to_max else None
    )
    if not cfg.attention_mask:
        del b["attention_mask"]
    return b


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
    on_disk = float(sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors")))
    sharded = (
        d.world > 1 and DI.choose_strategy(cfg.strategy, weight_bytes=on_disk, device=d.device) == "fsdp"
    )  # type: ignore[arg-type]
    # FSDP2: load on the CPU; fully_shard moves only this process's shards to its GPU
    load_on = "cpu" if sharded else str(d.device)
    if sharded and dtype == "auto" and d.device.type == "cuda":
        dtype = "bfloat16"  # the dtype it will train in on the GPU, not the CPU's float32
    model, tok = load_model(
        model_dir, device=load_on, dtype=dtype, quantize="nf4" if cfg.method == "qlora" else "none"
    )
    if sharded and cfg.strategy == "auto":
        cfg = replace(cfg, strategy="fsdp")  # decided from the weights on disk, not the CPU copy
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


def _launch_env() -> dict[str, str | None]:
    """The NVLink-multicast switches this process was started with, for training.json. Read through
    ``assistant.settings`` (the one module that reads the environment), imported here so that training
    still imports on a GPU host without pydantic; there the record says so instead."""
    try:
        from assistant.settings import environment_values
    except ImportError:
        return {name: "unknown (assistant.settings needs pydantic)" for name in DI.NO_MULTICAST}
    return environment_values(*DI.NO_MULTICAST)
