"""Benchmark LoRA / QLoRA training throughput, peak GPU memory and MFU (random weights, synthetic data).

Architectures come from assistant.finetune.plan.ARCHS (SmolLM2-135M = the bundled model; Llama-3.1-8B
shapes). Sequences have random lengths in [seq/8, seq] so padding matters; tokens/s counts real
(non-padding) tokens. Two recipes per method, same call:

- ours:  assistant.finetune.train (LoRA r=16 on all linear layers, length bucketing, fused AdamW /
         paged 8-bit AdamW, bf16 embeddings and norms, checkpointing only where memory needs it);
- plain: plain PEFT defaults (LoraConfig() → r=8 on q_proj,v_proj; every sequence padded to seq;
         gradient checkpointing on; micro-batch 1 with gradient accumulation; QLoRA through
         peft.prepare_model_for_kbit_training, which upcasts non-quantized weights to fp32).

MFU = model FLOPs (LoRA: 4N per token + attention 12·L·d·s + 6 per LoRA param) ÷ (GPUs × 989 TFLOP/s).
``--gpus 1,2`` re-runs the LoRA rows under torchrun (DDP, NCCL_NVLS_ENABLE=0) on 2 GPUs.

    python scripts/bench_finetune.py --out scripts/results/finetune_h200.md
    python scripts/bench_finetune.py --smoke          # tiny shapes on the CPU, to test the script
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from assistant.finetune import plan as P  # noqa: E402
from assistant.finetune import train as T  # noqa: E402

PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16, datasheet


def build_model(arch: dict, *, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**arch, attn_implementation="sdpa")
    torch.manual_seed(0)  # the same base weights in every run and every process
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    return model


def quantize_nf4_(model) -> None:
    """Replace the decoder blocks' nn.Linear layers by bitsandbytes NF4 (double-quantized) layers in place."""
    import bitsandbytes as bnb

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=False,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    device="meta",
                )
                w = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
                )
                q.weight = w._quantize(child.weight.device)
                setattr(parent, name, q)
                del child
    model.is_loaded_in_4bit = True


def synthetic(n: int, seq: int, vocab: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(seq // 8, seq)
        ids = [rng.randrange(vocab) for _ in range(length)]
        cut = length // 2  # the "prompt" half carries no loss, as in real examples
        out.append((ids, [-100] * cut + ids[cut:]))
    return out


def model_flops(shapes: P.Shapes, lengths: list[int], lora_params: int) -> float:
    return sum(
        4 * shapes.matmul_params * n + 12 * shapes.layers * shapes.hidden * n * n + 6 * lora_params * n
        for n in lengths
    )


def run_one(
    arch_name: str,
    method: str,
    recipe: str,
    *,
    seq: int,
    steps: int,
    warmup: int,
    global_batch: int,
    dist: T.Dist,
    micro: int | None = None,
    profile: bool = False,
) -> dict:
    arch = P.ARCHS[arch_name]
    shapes = P.Shapes.from_config(arch)
    big = shapes.params > 1e9
    dev = dist.device
    model = build_model(arch, device=dev, dtype=torch.bfloat16)
    if method == "qlora":
        quantize_nf4_(model)
        if recipe == "plain":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    if recipe == "ours":
        micro = micro or (4 if big else 16)
        cfg = T.TrainConfig(
            method=method,
            r=16,
            alpha=32,
            target_modules=T.ALL_LINEAR,
            global_batch=global_batch,
            micro_batch=micro,
            max_seq_len=seq,
            grad_checkpointing=method == "qlora" and big,
            bucketing=True,
            save_every=0,
            max_steps=warmup + steps,
            lr=1e-4,
        )
    else:
        cfg = T.TrainConfig(
            method=method,
            r=8,
            alpha=8,
            dropout=0.0,
            target_modules=("q_proj", "v_proj"),
            global_batch=global_batch,
            micro_batch=1,
            max_seq_len=seq,
            grad_checkpointing=True,
            bucketing=False,
            pad_to_max=True,
            attention_mask=True,
            save_every=0,
            max_steps=warmup + steps,
            lr=1e-4,
        )
    data = synthetic(global_batch * (warmup + steps), seq, shapes.vocab, seed=0)
    lengths = [len(x) for x, _ in data]
    marks: list[float] = []

    def on_step(step: int, loss: float) -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        marks.append(time.perf_counter())
        if step + 1 == warmup and dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    prof = None
    if profile and dist.main:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        prof = torch_profile(
            activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        )
        prof.__enter__()
    res = T.train_encoded(
        model, data, cfg, pad_id=0, out_dir=None, dist=dist, progress=False, on_step=on_step
    )
    if prof is not None:
        prof.__exit__(None, None, None)
        key = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60), flush=True)
    seconds = marks[-1] - marks[warmup - 1]
    timed = []
    for s in range(warmup, warmup + steps):
        timed += [lengths[i] for i in T.step_indices(len(data), s, global_batch=global_batch, seed=cfg.seed)]
    tok_s = sum(timed) / seconds  # all processes together (each step covers the global batch)
    lora = shapes.lora_params(cfg.r, cfg.target_modules)
    mfu = model_flops(shapes, timed, lora) / seconds / (PEAK_TFLOPS * 1e12 * dist.world)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    row = dict(
        model=arch_name,
        method=method,
        recipe=recipe,
        gpus=dist.world,
        micro=cfg.micro_batch,
        ckpt=cfg.grad_checkpointing,
        r=cfg.r,
        targets=len(cfg.target_modules),
        tok_s=tok_s,
        mfu=mfu,
        peak_gib=peak,
        loss0=res.losses[0],
        loss_last=res.losses[-1],
        losses=[round(x, 4) for x in res.losses],
    )
    del model, res
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def worker(args) -> list[dict]:
    dist = T.init_distributed("cpu" if args.smoke else "auto")
    rows = []
    for arch in args.models.split(","):
        for method in args.methods.split(","):
            for recipe in args.recipes.split(","):
                if dist.world > 1 and (method == "qlora" or recipe == "plain"):
                    continue  # the multi-GPU rows measure scaling of our LoRA recipe
                big = P.Shapes.from_config(P.ARCHS[arch]).params > 1e9
                micros = (
                    [int(x) for x in args.qlora_micro.split(",")]
                    if (method == "qlora" and big and recipe == "ours")
                    else [None]
                )
                for micro in micros:
                    try:
                        row = run_one(
                            arch,
                            method,
                            recipe,
                            seq=args.seq,
                            steps=args.steps,
                            warmup=args.warmup,
                            global_batch=args.global_batch,
                            dist=dist,
                            micro=micro,
                            profile=args.profile,
                        )
                    except Exception as e:  # one failing row must not lose the others
                        row = dict(
                            model=arch,
                            method=method,
                            recipe=recipe,
                            gpus=dist.world,
                            error=f"{type(e).__name__}: {e}"[:300],
                        )
                    if dist.main:
                        print(json.dumps(row), flush=True)
                    rows.append(row)
    return rows


def to_markdown(rows: list[dict], *, command: str, device: str) -> str:
    lines = [
        f"# Fine-tuning throughput ({device})",
        "",
        f"Command: `{command}`",
        "",
        "| model | method | recipe | GPUs | micro-batch | ckpt | LoRA r / modules | tokens/s | MFU | peak "
        "GiB | loss first → last |",
        "|---|---|---|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['model']} | {r['method']} | {r['recipe']} | {r['gpus']} | | | | failed: "
                f"{r['error']} | | | |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['method']} | {r['recipe']} | {r['gpus']} | {r['micro']} | "
            f"{'on' if r['ckpt'] else 'off'} | "
            f"{r['r']} / {r['targets']} | {r['tok_s']:,.0f} | {r['mfu']:.1%} | {r['peak_gib']:.1f} | "
            f"{r['loss0']:.3f} → {r['loss_last']:.3f} |"
        )
    one = {(r["model"], r["method"], r["recipe"]): r for r in rows if r.get("gpus") == 1 and "error" not in r}
    for r in rows:
        if r.get("gpus", 1) > 1 and "error" not in r and (r["model"], r["method"], r["recipe"]) in one:
            base = one[(r["model"], r["method"], r["recipe"])]
            eff = r["tok_s"] / (r["gpus"] * base["tok_s"])
            lines.append(
                f"\nScaling {r['model']} {r['method']}: {r['gpus']} GPUs = {eff:.2f} x ideal; "
                f"loss curves 1 GPU {base['losses']} vs {r['gpus']} GPUs {r['losses']}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,llama-3.1-8b")
    ap.add_argument("--methods", default="lora,qlora")
    ap.add_argument("--recipes", default="ours,plain")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument(
        "--qlora-micro", default="1,4", help="micro-batches to measure for 8B QLoRA (1: least memory)"
    )
    ap.add_argument(
        "--gpus", default="1", help="comma-separated GPU counts, e.g. 1,2 (more than 1 runs under torchrun)"
    )
    ap.add_argument("--out", type=Path, default=None, help="Markdown table to write")
    ap.add_argument(
        "--profile", action="store_true", help="print the top kernels of each row (torch.profiler)"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="tiny shapes on the CPU (tests the script, not the hardware)"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        P.ARCHS["smoke"] = dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=256,
            tie_word_embeddings=True,
            max_position_embeddings=4096,
        )
        args.models, args.methods, args.seq, args.global_batch = "smoke", "lora", min(args.seq, 128), 4
    if args.worker:
        rows = worker(args)
        if args.json and T.init_distributed("cpu" if args.smoke else "auto").main:
            args.json.write_text(json.dumps(rows))
        return
    rows: list[dict] = []
    for g in [int(x) for x in args.gpus.split(",")]:
        if g == 1:
            rows += worker(args)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nproc-per-node={g}",
                __file__,
                "--worker",
                "--json",
                str(out),
            ]
            cmd += [
                f"--models={args.models}",
                f"--methods={args.methods}",
                f"--recipes={args.recipes}",
                f"--seq={args.seq}",
                f"--steps={args.steps}",
                f"--warmup={args.warmup}",
                f"--global-batch={args.global_batch}",
            ] + (["--smoke"] if args.smoke else [])
            env = dict(
                os.environ,
                NCCL_NVLS_ENABLE="0",
                TORCH_SYMM_MEM_DISABLE_MULTICAST="1",
                NVSHMEM_DISABLE_NVLS="1",
                OMP_NUM_THREADS="1",
            )
            proc = subprocess.run(cmd, env=env)
            rows += (
                json.loads(out.read_text())
                if out.exists()
                else [
                    dict(
                        model=args.models,
                        method="lora",
                        recipe="ours",
                        gpus=g,
                        error=f"torchrun exited {proc.returncode}",
                    )
                ]
            )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "CPU"
    md = to_markdown(
        rows, command="python " + " ".join(sys.argv), device=f"{device}, torch {torch.__version__}"
    )
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)


if __name__ == "__main__":
    main()
