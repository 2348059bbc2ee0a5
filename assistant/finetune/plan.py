"""Compute planning: memory, FLOPs and time of full fine-tuning vs LoRA vs QLoRA, before you train.

All numbers are estimates from the model's shapes (a Hugging Face ``config.json`` or a preset):

- Memory = weights + gradients + optimizer states + activations (at a sequence length and micro-batch).
  Full fine-tuning with AdamW in mixed precision: 16 bytes/param (bf16 weights 2, bf16 grads 2,
  fp32 master 4, Adam m and v 8). LoRA: frozen bf16 weights (2 bytes/param) + 16 bytes per
  trainable LoRA param. QLoRA: NF4 weights with double quantization (~4.13 bits per linear-layer
  param; embeddings stay bf16) + LoRA params with paged 8-bit AdamW (4 + 4 + 2 bytes).
- FLOPs per token: full ≈ 6N (forward 2N, backward 4N); LoRA ≈ 4N (forward 2N + activation
  gradients 2N; no weight gradients for the frozen N), plus attention 12·L·d·s and 6 per LoRA param.
  Gradient checkpointing adds one more forward (2N) of hardware work that MFU does not count.
- Time = tokens × FLOPs/token ÷ (peak × MFU).
- Data guidance from the scaling-law literature (Chinchilla ≈ 20 tokens/param; Kaplan D ≳ 5×10³·N^0.74)
  is for PRE-TRAINING a model from scratch. It is shown for scale, not as a fine-tuning rule.

Not here: measuring anything (``scripts/bench_finetune.py`` measures; its MFU feeds the default here).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import ConfigError

# Llama-family shapes. "bundled" is SmolLM2-135M-Instruct, the model shipped with the assistant.
ARCHS: dict[str, dict] = {
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
        max_position_embeddings=8192,
    ),
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        max_position_embeddings=131072,
    ),
    "llama-3.1-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        max_position_embeddings=131072,
    ),
    # the answering model (assistant/adapters/qwen15); model_type picks the transformers class
    "qwen2.5-coder-1.5b": dict(
        model_type="qwen2",
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
    ),
}
ARCHS["bundled"] = ARCHS["smollm2-135m"]
ARCHS["llama-8b"] = ARCHS["llama-3.1-8b"]

# Dense bf16 peak TFLOP/s (vendor datasheets, SXM parts) and memory in GB.
GPUS: dict[str, tuple[float, float]] = {
    "h200": (989.0, 141.0),
    "h100": (989.0, 80.0),
    "a100": (312.0, 80.0),
    "a10g": (125.0, 24.0),
    "l4": (121.0, 24.0),
    "rtx4090": (165.0, 24.0),
}
DEFAULT_MFU = 0.18  # measured: Llama-3.1-8B LoRA on one H200 (scripts/results/finetune_h200.md)
GB = 1e9


@dataclass(frozen=True)
class Shapes:
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, c: dict) -> Shapes:
        try:
            return cls(
                c["hidden_size"],
                c["intermediate_size"],
                c["num_hidden_layers"],
                c["num_attention_heads"],
                c.get("num_key_value_heads") or c["num_attention_heads"],
                c["vocab_size"],
                bool(c.get("tie_word_embeddings", False)),
            )
        except KeyError as e:
            raise ConfigError(
                f"the model config lacks {e}; plan supports Llama-style configs (hidden_size, "
                "intermediate_size, ...)"
            ) from e

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block, by peft target-module name."""
        h, i, kv = self.hidden, self.inter, self.kv_dim
        return {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linear_params(self) -> int:
        """Parameters in the decoder blocks' linear layers (what QLoRA quantizes)."""
        return self.layers * sum(a * b for a, b in self.module_shapes().values())

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embed_params + self.layers * 2 * self.hidden + self.hidden

    @property
    def matmul_params(self) -> int:
        """Parameters that cost FLOPs per token: the blocks plus the output projection."""
        return self.linear_params + self.vocab * self.hidden

    def lora_params(self, r: int, targets: tuple[str, ...]) -> int:
        shapes = self.module_shapes()
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)


def load_shapes(base: str) -> tuple[str, Shapes]:
    """(name, shapes) from a preset name or a folder with config.json."""
    key = base.lower()
    if key in ARCHS:
        return key, Shapes.from_config(ARCHS[key])
    cfg = Path(base).expanduser() / "config.json"
    if cfg.is_file():
        return Path(base).name, Shapes.from_config(json.loads(cfg.read_text()))
    raise ConfigError(f"unknown base {base!r}: use a model folder with config.json or one of {sorted(ARCHS)}")


def block_bytes_per_token(s: Shapes) -> int:
    """Bytes one decoder block keeps per token for the backward pass (bf16): attention in/out, q/k/v,
    the MLP's gate/up/act (without LoRA's extra inputs, see ``LORA_SAVED_FACTOR``)."""
    return 2 * (8 * s.hidden + 2 * s.kv_dim + 4 * s.inter)


def activation_bytes(
    s: Shapes, *, seq: int, batch: int, checkpointing: bool, fused_loss: bool = False
) -> float:
    """Activations kept for the backward pass (bf16, SDPA/flash attention: no seq² scores stored).

    ``fused_loss``: the logits exist one chunk (4096 rows) at a time instead of for every token.
    """
    tokens = seq * batch
    per_layer = block_bytes_per_token(s)
    logits = min(tokens, 4096) * s.vocab * 4 * 2 if fused_loss else tokens * s.vocab * (2 + 4 + 4)
    if checkpointing:
        return tokens * (s.layers * 2 * s.hidden + per_layer) + logits
    return tokens * s.layers * per_layer + logits


def estimate(
    s: Shapes,
    *,
    seq: int = 2048,
    batch: int = 1,
    r: int = 16,
    targets: tuple[str, ...] | None = None,
    checkpointing: bool = True,
    fused_loss: bool = True,
) -> dict[str, dict[str, float]]:
    """Memory (GB) and FLOPs/token for full fine-tuning, LoRA and QLoRA (``fused_loss``: as we train)."""
    targets = targets or tuple(s.module_shapes())
    n, lora = s.params, s.lora_params(r, targets)
    act = activation_bytes(s, seq=seq, batch=batch, checkpointing=checkpointing, fused_loss=fused_loss)
    attn = 12 * s.layers * s.hidden * seq  # attention score/value matmuls, forward + backward, per token
    nf4_bytes = s.linear_params * 4.127 / 8 + (n - s.linear_params) * 2
    rows = {
        "full": dict(
            weights=2 * n, grads=2 * n, optimizer=12 * n, flops=6 * s.matmul_params + attn, trainable=n
        ),
        "lora": dict(
            weights=2 * n + 4 * lora,
            grads=4 * lora,
            optimizer=8 * lora,
            flops=4 * s.matmul_params + attn + 6 * lora,
            trainable=lora,
        ),
        "qlora": dict(
            weights=nf4_bytes + 4 * lora,
            grads=4 * lora,
            optimizer=2 * lora,
            flops=4 * s.matmul_params + attn + 6 * lora,
            trainable=lora,
        ),
    }
    for row in rows.values():
        row["activations"] = act
        row["total"] = row["weights"] + row["grads"] + row["optimizer"] + act
        for k in ("weights", "grads", "optimizer", "activations", "total"):
            row[k] /= GB
    return rows


def data_guidance(n_params: int) -> dict[str, float]:
    """Pre-training heuristics (NOT fine-tuning rules): Chinchilla and Kaplan et al. token counts."""
    return {"chinchilla_tokens": 20.0 * n_params, "kaplan_tokens": 5e3 * n_params**0.74}


def plan(
    base: str,
    *,
    data_tokens: float,
    gpu: str = "h200",
    seq: int = 2048,
    batch: int = 1,
    r: int = 16,
    mfu: float | None = None,
    epochs: float = 1.0,
    checkpointing: bool = True,
    gpus: int = 1,
    rates: list[dict] | None = None,
) -> dict:
    """``mfu=None``: each method's measured MFU from ``rates`` (default: ``rates.load_rates()``)."""
    from assistant.finetune import rates as R

    if gpu.lower() not in GPUS:
        raise ConfigError(f"unknown GPU {gpu!r}; use one of {sorted(GPUS)}")
    if mfu is not None and not 0 < mfu <= 1:
        raise ConfigError(f"mfu={mfu} must be in (0, 1]")
    name, s = load_shapes(base)
    peak, mem = GPUS[gpu.lower()]
    measured = R.load_rates() if rates is None else rates
    rows = estimate(s, seq=seq, batch=batch, r=r, checkpointing=checkpointing)
    for method, row in rows.items():
        found = (
            None if mfu is not None else R.measured_mfu(measured, method=method, gpus=gpus, params=s.params)
        )
        row["mfu"] = mfu if mfu is not None else (found[0] if found else DEFAULT_MFU)
        row["mfu_source"] = (
            "given" if mfu is not None else (found[1] if found else "default (nothing measured)")
        )
        flops = row["flops"] * data_tokens * epochs
        row["hours"] = flops / (peak * 1e12 * row["mfu"] * gpus) / 3600
        row["fits"] = row["total"] <= mem
    return {
        "base": name,
        "params": s.params,
        "gpu": gpu,
        "gpu_gb": mem,
        "peak_tflops": peak,
        "mfu": mfu,
        "gpus": gpus,
        "seq": seq,
        "batch": batch,
        "r": r,
        "tokens": data_tokens,
        "epochs": epochs,
        "methods": rows,
        "hardware": R.hardware_table(
            base, data_tokens=data_tokens * epochs, seq=seq, batch=batch, r=r, rows=measured
        ),
        "pretraining_heuristics": data_guidance(s.params),
    }


def format_plan(p: dict) -> str:
    lines = [
        f"base {p['base']}: {p['params'] / 1e6:,.1f}M parameters; {p['tokens']:,.0f} tokens x "
        f"{p['epochs']} epoch(s); "
        f"seq {p['seq']}, micro-batch {p['batch']}, LoRA r={p['r']} on all linear layers",
        f"{p['gpus']} x {p['gpu'].upper()} ({p['gpu_gb']:.0f} GB, {p['peak_tflops']:.0f} TFLOP/s bf16 "
        "peak)"
        + (
            f" at MFU {p['mfu']:.0%} (given)" if p["mfu"] is not None else ", each method at its measured MFU"
        ),
        "",
        "| method | trainable | weights GB | grads GB | optimizer GB | activations GB | total GB | fits | "
        "FLOPs/token | MFU | hours |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for m, r in p["methods"].items():
        lines.append(
            f"| {m} | {r['trainable'] / 1e6:,.2f}M | {r['weights']:.2f} | {r['grads']:.2f} | "
            f"{r['optimizer']:.2f} | "
            f"{r['activations']:.2f} | {r['total']:.2f} | {'yes' if r['fits'] else 'NO'} | "
            f"{r['flops']:.3g} | {r['mfu']:.0%} | {r['hours']:.3g} |"
        )
    lines += ["", "MFU from: " + "; ".join(f"{m}: {r['mfu_source']}" for m, r in p["methods"].items())]
    from assistant.finetune import rates as R

    lines += ["", R.format_hardware(p["hardware"])]
    h = p["pretraining_heuristics"]
    lines += [
        "",
        "Data guidance (PRE-TRAINING heuristics from scaling-law papers, not fine-tuning rules):",
        f"  Chinchilla ~20 tokens/param: {h['chinchilla_tokens']:.3g} tokens; Kaplan D >= 5e3*N^0.74: "
        f"{h['kaplan_tokens']:.3g} tokens.",
        "  LoRA fine-tuning for a task/format typically needs 1e3-1e5 examples (1e6-1e8 tokens), far "
        "below these;",
        "  watch the validation metrics (assistant finetune eval) rather than a token budget.",
    ]
    return "\n".join(lines)


LORA_SAVED_FACTOR = 1.75  # measured activations / formula, 8B LoRA on an H200 (see checkpointing_needed)


def checkpointing_needed(
    s: Shapes,
    *,
    weight_bytes: float,
    tokens: int,
    lora_params: int,
    fused_loss: bool,
    budget_bytes: float,
    headroom: float = 0.85,
) -> bool:
    """True when weights + LoRA state + activations of one forward pass (no checkpointing) exceed
    ``headroom`` x ``budget_bytes``.

    ``tokens`` is the tokens of one forward pass (micro-batch x sequence length). Activations come
    from ``activation_bytes`` (per token and layer, bf16) times ``LORA_SAVED_FACTOR``: peft keeps
    more than the plain block (each LoRA module's input, dropout masks); calibrated on one H200,
    where 8B LoRA at 8,192 tokens per pass held 84 GB of activations against 48 GB from the
    formula. With a fused loss the logits term is one chunk, not every token. The LoRA state is
    fp32 weight + grad + Adam m and v (16 bytes/param). Every pass is counted at full length, so
    the estimate errs high and a "no" is safe.
    """
    blocks = tokens * s.layers * block_bytes_per_token(s) * LORA_SAVED_FACTOR
    logits = min(tokens, 4096) * s.vocab * 4 * 2 if fused_loss else tokens * s.vocab * (2 + 4 + 4)
    act = blocks + logits
    return weight_bytes + 16 * lora_params + act > headroom * budget_bytes
