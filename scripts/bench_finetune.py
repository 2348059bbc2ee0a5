"""Benchmark LoRA / QLoRA training: tokens/s, MFU and peak memory per configuration (random weights).

Every configuration builds its model with random bf16 weights directly on the GPU, warms up
(``--warmup`` steps: kernels compiled, allocator settled; peak memory is reset after them) and then
times ``--steps`` optimizer steps (≥ 8), each one synchronised: median and min–max tokens/s over
the timed steps, never mixed with the warm-up. Synthetic examples have random lengths (8B rows:
uniform in [seq/8, seq]; Qwen rows: mean 820 tokens like the real answering data), half of each is
"prompt" without loss; tokens/s counts real tokens only (no padding).

Configurations (``--configs``, default ``1gpu``; every row is the same call into
``assistant.finetune.train`` with different options):

- ``8b-plain``: plain PEFT defaults: ``LoraConfig()`` → r=8 on q_proj,v_proj; every sequence padded
  to seq with an attention mask; gradient checkpointing on; micro-batch 1 + accumulation; full logits.
- ``8b-base``: our recipe before this change: r=16 on all 7 linear layers, length bucketing, no
  mask, micro-batch 4, full fp32 logits, no Liger, fp32 LoRA matmuls.
- ``8b-packing`` / ``8b-liger`` / ``8b-liger-packing``: + padding-free packing (4 rows of 2048 per
  pass), + Liger (RMSNorm/RoPE/SwiGLU kernels and the fused linear cross-entropy on answer tokens),
  + both.
- ``8b-all``: both, plus the LoRA matmuls in bf16 under autocast. ``8b-all-varlen``: the same with
  per-example flash attention (``finetune.varlen``) instead of transformers' dense packed mask.
  ``8b-fast``: that with LoRA dropout 0 (no dropout masks on 7 inputs per layer).
- ``8b-qlora-mb1``: QLoRA (bitsandbytes NF4 + double quantization, paged 8-bit AdamW), one packed
  row of 2048 per pass, memory budget 16 GB (checkpointing decided from the estimate).
- ``qwen1.5b`` (and ``qwen1.5b-varlen``): Qwen2.5-Coder-1.5B shapes, the answering adapter's recipe
  (r=16 on q/k/v/o, global batch 32, 8 rows per pass); the table adds the time of 200 steps of that
  adapter's training. (``8b-fast-mb8``, not in the default group: 8 rows per pass, where the
  memory estimate turns activation checkpointing on.)
- ``2gpu`` (``--configs 2gpu``, needs 2 GPUs): ``8b-all`` on one GPU, then under torchrun on two:
  ``8b-all`` with DDP (scaling efficiency and the loss curve against the 1-GPU row) and
  ``70b-fsdp`` (Llama-3.1-70B shapes, 141 GB of bf16 weights, built on the meta device and
  sharded by FSDP2 before they are materialised).

MFU = model FLOPs ÷ (GPUs × 989 TFLOP/s dense bf16). Model FLOPs per token: 4 × (decoder linear
parameters) + 12·L·d·n attention (n = the example's length) + 6 × LoRA parameters, plus 4 × (vocab ×
hidden) for the output projection on answer tokens only (the only positions with a loss). A
recipe that recomputes (checkpointing) or projects every position does more work than it is
credited with.

    # one H200, ~7 min (the lead's command; bitsandbytes and liger-kernel on PYTHONPATH):
    PYTHONPATH=. python scripts/bench_finetune.py --out-dir scripts/results/finetune_h200_run3
    # two H200s (not lent this session): 8B DDP scaling + 70B FSDP2 (= --configs 2gpu)
    PYTHONPATH=. python scripts/bench_finetune.py --gpus 2 --out-dir scripts/results/finetune_2xh200
    # tiny shapes on the CPU, to test the script (add --configs 2gpu for the gloo DDP/FSDP2 path)
    python scripts/bench_finetune.py --smoke --out-dir /tmp/bench-smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from assistant.finetune import distributed as DI  # noqa: E402
from assistant.finetune import plan as P  # noqa: E402
from assistant.finetune import train as T  # noqa: E402

PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16, datasheet
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")

PLAIN = dict(
    r=8,
    alpha=8,
    dropout=0.0,
    target_modules=("q_proj", "v_proj"),
    micro_batch=1,
    grad_checkpointing=True,
    bucketing=False,
    pad_to_max=True,
    attention_mask=True,
    packing=False,
    loss_impl="none",
    liger_kernels=False,
    lora_autocast=False,
)
BASE = dict(micro_batch=4, packing=False, loss_impl="none", liger_kernels=False, lora_autocast=False)
LIGER = dict(loss_impl="auto", liger_kernels=True)
ALL = dict(micro_batch=4, packing=True, loss_impl="auto", liger_kernels=True, lora_autocast=True)
FAST = {**ALL, "dropout": 0.0, "attention": "varlen"}

# name → (arch, method, GPUs, TrainConfig options, global batch, bench options)
CONFIGS: dict[str, tuple[str, str, int, dict, int, dict]] = {
    "8b-plain": ("llama-3.1-8b", "lora", 1, PLAIN, 16, {}),
    "8b-base": ("llama-3.1-8b", "lora", 1, BASE, 16, {}),
    "8b-packing": ("llama-3.1-8b", "lora", 1, {**BASE, "packing": True}, 16, {}),
    "8b-liger": ("llama-3.1-8b", "lora", 1, {**BASE, **LIGER}, 16, {}),
    "8b-liger-packing": ("llama-3.1-8b", "lora", 1, {**BASE, **LIGER, "packing": True}, 16, {}),
    "8b-all": ("llama-3.1-8b", "lora", 1, ALL, 16, {}),
    "8b-all-varlen": ("llama-3.1-8b", "lora", 1, {**ALL, "attention": "varlen"}, 16, {}),
    "8b-fast": ("llama-3.1-8b", "lora", 1, FAST, 16, {}),
    "8b-fast-mb8": ("llama-3.1-8b", "lora", 1, {**FAST, "micro_batch": 8}, 32, {}),
    "8b-qlora-mb1": (
        "llama-3.1-8b",
        "qlora",
        1,
        {**ALL, "micro_batch": 1, "lora_autocast": False, "memory_budget_gb": 16.0},
        4,
        {},
    ),
    "qwen1.5b": (
        "qwen2.5-coder-1.5b",
        "lora",
        1,
        {**ALL, "micro_batch": 8, "target_modules": QKVO},
        32,
        {"mean_len": 820, "adapter_steps": 200},
    ),
    "qwen1.5b-varlen": (
        "qwen2.5-coder-1.5b",
        "lora",
        1,
        {**ALL, "micro_batch": 8, "target_modules": QKVO, "attention": "varlen"},
        32,
        {"mean_len": 820, "adapter_steps": 200},
    ),
    "8b-all-ddp": ("llama-3.1-8b", "lora", 2, ALL, 16, {"baseline": "8b-all"}),
    "70b-fsdp": (
        "llama-3.1-70b",
        "lora",
        2,
        {**ALL, "micro_batch": 1, "strategy": "fsdp"},
        4,
        {"meta_init": True},
    ),
}
GROUPS = {
    "1gpu": [
        "8b-plain",
        "8b-base",
        "8b-packing",  # before any Liger row: Liger's RoPE patch is process-wide
        "8b-liger",
        "8b-liger-packing",
        "8b-all",
        "8b-all-varlen",
        "8b-fast",
        "8b-qlora-mb1",
        "qwen1.5b",
        "qwen1.5b-varlen",
    ],
    "2gpu": ["8b-all", "8b-all-ddp", "70b-fsdp"],
}
SMOKE_ARCH = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    tie_word_embeddings=False,
    max_position_embeddings=4096,
)


# ------------------------------------------------------------------ models and data


def _config(arch: dict):
    from transformers import LlamaConfig, Qwen2Config

    arch = dict(arch)
    kind = arch.pop("model_type", "llama")
    return (Qwen2Config if kind == "qwen2" else LlamaConfig)(**arch, attn_implementation="sdpa")


def build_model(arch: dict, *, device: torch.device | str, dtype: torch.dtype = torch.bfloat16):
    """Random weights of ``arch`` made directly on ``device`` (``meta``: shapes only, no memory)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # the same base weights in every run and every process
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(_config(arch))
    finally:
        torch.set_default_dtype(default)
    return model


def materialize(net: torch.nn.Module, *, device: torch.device, arch: dict) -> None:
    """After FSDP2 sharded a meta-device model: allocate each process's shards and fill them.

    Base weights ~ N(0, 0.02), norms 1, LoRA A ~ N(0, 1/r) and LoRA B = 0 (so the adapter starts
    as the identity, as peft's init does); the rotary embedding is rebuilt (its buffers are computed,
    not learned).
    """
    net.to_empty(device=device)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "lora_B" in name:
                p.zero_()
            elif "lora_A" in name:
                p.normal_(0.0, 1.0 / p.shape[0])
            elif "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02)
    lm = net.causal_lm() if hasattr(net, "causal_lm") else net
    rotary = lm.model.rotary_emb
    with torch.device("cpu"):  # built for real (the meta copy has no values), then moved
        lm.model.rotary_emb = type(rotary)(config=rotary.config).to(device)


def quantize_nf4_(model) -> None:
    """Replace the decoder blocks' nn.Linear layers by bitsandbytes NF4 (double-quantized) layers in place."""
    import bitsandbytes as bnb

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    device="meta",
                )
                w = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
                )
                q.weight = w._quantize(child.weight.device)
                if child.bias is not None:
                    q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del child
    model.is_loaded_in_4bit = True


def synthetic(n: int, seq: int, vocab: int, seed: int, *, mean_len: int | None = None) -> list:
    rng = random.Random(seed)
    lo, hi = (seq // 8, seq) if mean_len is None else (mean_len // 2, min(seq, mean_len * 3 // 2))
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randrange(vocab) for _ in range(length)]
        cut = length // 2  # the "prompt" half carries no loss, as in real examples
        out.append((ids, [-100] * cut + ids[cut:]))
    return out


def model_flops(shapes: P.Shapes, data: list, lora_params: int) -> float:
    total = 0.0
    for ids, labels in data:
        n, answer = len(ids), sum(1 for y in labels[1:] if y != -100)
        total += 4 * shapes.linear_params * n + 12 * shapes.layers * shapes.hidden * n * n
        total += 6 * lora_params * n + 4 * shapes.vocab * shapes.hidden * answer
    return total


# ------------------------------------------------------------------ one configuration


def run_one(name: str, *, seq: int, steps: int, warmup: int, dist: T.Dist, smoke: bool) -> dict:
    arch_name, method, _gpus, opts, global_batch, bench = CONFIGS[name]
    arch = SMOKE_ARCH if smoke else P.ARCHS[arch_name]
    shapes = P.Shapes.from_config(arch)
    dev = dist.device
    meta = bench.get("meta_init", False) and dist.world > 1
    model = build_model(arch, device="meta" if meta else dev)
    if method == "qlora":
        quantize_nf4_(model)
    cfg = T.TrainConfig(
        method=method,
        **{"r": 16, "alpha": 32, **opts},
        global_batch=global_batch,
        max_seq_len=seq,
        save_every=0,
        max_steps=warmup + steps,
        lr=1e-4,
    )
    data = synthetic(
        global_batch * (warmup + steps), seq, shapes.vocab, seed=0, mean_len=bench.get("mean_len")
    )
    marks: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        marks.append(time.perf_counter())
        if dist.main:
            print(f"  {name} step {step + 1}/{warmup + steps} loss {loss:.4f}", flush=True)
        if step + 1 == warmup and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    hook = (lambda net: materialize(net, device=dev, arch=arch)) if meta else None
    t_start = time.perf_counter()
    res = T.train_encoded(
        model, data, cfg, pad_id=0, out_dir=None, dist=dist, progress=False, on_step=on_step, after_wrap=hook
    )
    per_step = []
    for k, s in enumerate(range(warmup, warmup + steps)):
        idx = T.step_indices(len(data), s, global_batch=global_batch, seed=cfg.seed)
        toks = sum(len(data[i][0]) for i in idx)
        per_step.append((toks, marks[warmup + k] - marks[warmup + k - 1], idx))
    rates = [t / dt for t, dt, _ in per_step]
    seconds = sum(dt for _, dt, _ in per_step)
    timed = [data[i] for _, _, idx in per_step for i in idx]
    lora = shapes.lora_params(cfg.r, cfg.target_modules)
    mfu = model_flops(shapes, timed, lora) / seconds / (PEAK_TFLOPS * 1e12 * dist.world)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    row = dict(
        config=name,
        model=arch_name,
        method=method,
        gpus=dist.world,
        global_batch=global_batch,
        micro=cfg.micro_batch,
        packing=cfg.packing,
        attention=cfg.attention,
        loss=res_info(res),
        r=cfg.r,
        targets=len(cfg.target_modules),
        dropout=cfg.dropout,
        tok_s=statistics.median(rates),
        tok_s_min=min(rates),
        tok_s_max=max(rates),
        tok_s_mean=sum(t for t, _, _ in per_step) / seconds,
        mfu=mfu,
        peak_gib=peak,
        setup_s=marks[0] - t_start,
        losses=[round(x, 4) for x in res.losses],
        checkpointing=res.checkpointing,
        loss_impl=res.loss_impl,
        liger=res.liger,
        strategy=res.strategy if dist.world > 1 else "-",
    )
    if "adapter_steps" in bench:
        mean_tokens = sum(len(x) for x, _ in data) / len(data)
        row["adapter_minutes"] = bench["adapter_steps"] * global_batch * mean_tokens / row["tok_s"] / 60
    del model, res
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def res_info(res) -> str:
    return f"{res.losses[0]:.3f} → {res.losses[-1]:.3f}"


def worker(names: list[str], args) -> list[dict]:
    dist = T.init_distributed("cpu" if args.smoke else "auto")
    rows = []
    for name in names:
        if CONFIGS[name][2] != dist.world:
            continue
        if dist.main:
            print(f"== {name} ({dist.world} process(es))", flush=True)
        try:
            row = run_one(
                name, seq=args.seq, steps=args.steps, warmup=args.warmup, dist=dist, smoke=args.smoke
            )
        except Exception as e:  # one failing row must not lose the others
            row = dict(config=name, gpus=dist.world, error=f"{type(e).__name__}: {e}"[:400])
        gc.collect()  # after the except block: the traceback no longer holds the failed row's model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if dist.main:
            print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ------------------------------------------------------------------ report


def to_markdown(rows: list[dict], *, command: str, device: str) -> str:
    lines = [
        f"# Fine-tuning throughput ({device})",
        "",
        f"Command: `{command}`",
        "",
        "| config | model | method | GPUs | global / micro | packing (attention) | ckpt | loss | LoRA r / modules / dropout | "
        "tokens/s median (min–max) | MFU | peak GiB | loss first → last |",
        "|---|---|---|---:|---|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | | | {r['gpus']} | | | | | | failed: {r['error']} | | | |")
            continue
        lines.append(
            f"| {r['config']} | {r['model']} | {r['method']} | {r['gpus']} | {r['global_batch']} / {r['micro']} | "
            f"{('yes, ' + r.get('attention', 'sdpa')) if r['packing'] else 'no'} | {'on' if r.get('checkpointing') else 'off'} | "
            f"{r.get('loss_impl', '?')}{' +liger' if r.get('liger') else ''} | {r['r']} / {r['targets']} / {r.get('dropout', 0):g} | "
            f"{r['tok_s']:,.0f} ({r['tok_s_min']:,.0f}–{r['tok_s_max']:,.0f}) | {r['mfu']:.1%} | "
            f"{r['peak_gib']:.1f} | {r['loss']} |"
        )
    ok = {r["config"]: r for r in rows if "error" not in r}
    notes = []
    if "8b-plain" in ok:
        for name in [
            n for n in GROUPS["1gpu"] if n.startswith("8b-") and n not in ("8b-plain", "8b-qlora-mb1")
        ]:
            if name in ok:
                notes.append(
                    f"- {name}: {ok[name]['tok_s'] / ok['8b-plain']['tok_s']:.2f}x plain PEFT tokens/s"
                )
    for r in ok.values():
        if "adapter_minutes" in r:
            notes.append(
                f"- {r['config']}: 200 steps of the answering adapter ≈ {r['adapter_minutes']:.1f} min"
            )
        base = CONFIGS.get(r["config"], (None,) * 6)[5].get("baseline") if r["config"] in CONFIGS else None
        if base in ok:
            eff = r["tok_s"] / (r["gpus"] * ok[base]["tok_s"])
            notes.append(
                f"- {r['config']}: scaling efficiency {eff:.2f} ({r['gpus']} GPUs vs {base}); loss curves "
                f"1 GPU {ok[base]['losses']} vs {r['gpus']} GPUs {r['losses']}"
            )
    return "\n".join(lines + [""] + notes) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=None, help="comma-separated names or groups (1gpu, 2gpu)")
    ap.add_argument(
        "--gpus", type=int, default=1, choices=(1, 2), help="without --configs: the 1gpu or 2gpu group"
    )
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per configuration (>= 8)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out-dir", type=Path, default=None, help="folder for results.json and results.md")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (tests the script)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    names: list[str] = []
    args.configs = args.configs or ("1gpu" if args.gpus == 1 else "2gpu")
    for part in args.configs.split(","):
        for n in GROUPS.get(part, [part]):
            if n not in CONFIGS:
                ap.error(
                    f"unknown configuration {n!r}; known: {', '.join(CONFIGS)}, groups {', '.join(GROUPS)}"
                )
            if n not in names:
                names.append(n)
    if args.smoke:
        args.seq = min(args.seq, 128)
        for n, (arch, method, gpus, opts, gb, bench) in list(CONFIGS.items()):
            bench = {k: v for k, v in bench.items() if k != "mean_len"}
            CONFIGS[n] = (arch, method, gpus, opts, min(gb, 8), bench)
        names = [n for n in names if CONFIGS[n][1] != "qlora"]  # bitsandbytes needs CUDA
    if args.worker:
        rows = worker(names, args)
        if args.json and T.init_distributed("cpu" if args.smoke else "auto").main:
            args.json.write_text(json.dumps(rows))
        return
    t0 = time.perf_counter()
    rows = worker([n for n in names if CONFIGS[n][2] == 1], args)
    for g in sorted({CONFIGS[n][2] for n in names} - {1}):
        out = (args.out_dir or Path("/tmp")) / f"rows-{g}gpu.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={g}"]
        cmd += [__file__, "--worker", "--json", str(out), f"--configs={','.join(names)}"]
        cmd += [f"--seq={args.seq}", f"--steps={args.steps}", f"--warmup={args.warmup}"]
        cmd += ["--smoke"] if args.smoke else []
        env = DI.launch_environment({**os.environ, "OMP_NUM_THREADS": "1"})
        print(f"== torchrun on {g} processes: {' '.join(cmd)}", flush=True)
        proc = subprocess.run(cmd, env=env)
        got = json.loads(out.read_text()) if out.exists() else []
        out.unlink(missing_ok=True)
        rows += got or [dict(config=f"{g}-gpu rows", gpus=g, error=f"torchrun exited {proc.returncode}")]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "CPU"
    import transformers

    info = f"{device}, torch {torch.__version__}, transformers {transformers.__version__}"
    md = to_markdown(rows, command="python " + " ".join(sys.argv), device=info)
    md += f"\nWall time of the whole run: {time.perf_counter() - t0:.0f} s\n"
    print(md, flush=True)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "results.json").write_text(
            json.dumps({"device": info, "rows": rows}, indent=1) + "\n"
        )
        (args.out_dir / "results.md").write_text(md)
        print(f"wrote {args.out_dir}/results.json and results.md", flush=True)


if __name__ == "__main__":
    main()
