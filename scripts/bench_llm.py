"""Benchmark the LLM serving engine on a GPU: one run, one Markdown table.

The model is a Llama-3.1-8B-shaped network with RANDOM weights (no 8B weights exist offline; speed
does not depend on weight values). Generation length is fixed (EOS ignored) so every configuration
does the same work. Measured in one process:
  1. batch-1 decode tokens/s (our engine and plain ``generate``) and the fraction of the
     memory-bandwidth floor (weight bytes read per token / measured device copy bandwidth);
  2. time to first token for a 2,000-token prompt;
  3. output tokens/s at 1, 8, 32, 128 concurrent requests (prompt 1,000, output 200): our
     continuous-batching engine vs a naive loop of ``model.generate()`` calls (a sequential loop's
     throughput does not depend on how many requests wait, so it is measured once), and
     transformers' own ``generate_batch`` for reference;
  4. the same at 32 concurrent with 1 and with 4 LoRA adapters (r=16, all linear layers; mixed
     batch through peft ``adapter_names``);
  5. NF4 (bitsandbytes, double quantization) vs bf16.

    python scripts/bench_llm.py --tokenizer .benchtok --out scripts/results/bench_llm_h200.md
    python scripts/bench_llm.py --tiny        # CPU smoke test of the script itself

Not a test: nothing here asserts; it prints and saves numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from assistant.llm.batching import BatchEngine

T0 = time.perf_counter()
ROWS: list[tuple[str, str, str]] = []  # (measurement, value, note)
LOG: list[str] = []


def say(msg: str) -> None:
    line = f"[{time.perf_counter() - T0:7.1f}s] {msg}"
    print(line, flush=True)
    LOG.append(line)


def row(name: str, value: str, note: str = "") -> None:
    ROWS.append((name, value, note))
    say(f"{name}: {value} {note}")


class ModTokenizer:
    """A real tokenizer for detokenization costs; random-model ids are folded into its vocabulary."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.n = len(tok)
        self.pad_token_id = 0
        self.eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return self.tok.decode([i % self.n for i in ids], skip_special_tokens=skip_special_tokens)


class StubTokenizer:
    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_model(tiny: bool, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    if tiny:
        cfg = LlamaConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1024,
            max_position_embeddings=4096,
        )
    else:  # Llama-3.1-8B shapes (default RoPE: the llama3 frequency scaling does not change speed)
        cfg = LlamaConfig(
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            tie_word_embeddings=False,
            rms_norm_eps=1e-5,
        )
    cfg.eos_token_id = None
    cfg.pad_token_id = 0
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def weight_bytes_per_token(model) -> int:
    """Bytes of weights a decode step reads: every parameter except the input embedding table."""
    emb = model.get_input_embeddings().weight
    total = 0
    for p in model.parameters():
        if p is emb:
            continue
        total += p.numel() * p.element_size()
    return total


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read and written."""
    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    sync()
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        b.copy_(a)
    sync()
    dt = time.perf_counter() - t
    del a, b
    return 2 * n * reps / dt


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (n, length), generator=g).tolist()


def engine_run(engine: BatchEngine, ps: list[list[int]], new: int, adapters: list[str | None] | None = None):
    """Submit all at once; return (wall seconds, output tokens, first-token times)."""
    firsts: dict[int, float] = {}
    t = time.perf_counter()
    handles = []
    for i, p in enumerate(ps):

        def sink(ev, i=i, q=None):
            if i not in firsts:
                firsts[i] = time.perf_counter() - t
            handles[i][1].put(ev)

        import queue

        q: queue.Queue = queue.Queue()
        handles.append([None, q])
        h = engine.submit(p, max_new_tokens=new, adapter=adapters[i] if adapters else None, sink=sink)
        handles[i][0] = h
    tokens = 0
    for _h, q in handles:
        while True:
            ev = q.get()
            if ev.kind == "done":
                tokens += ev.completion_tokens
                break
            if ev.kind == "error":
                raise RuntimeError(ev.text)
    sync()
    return time.perf_counter() - t, tokens, firsts


def decode_rate(engine: BatchEngine, prompt: list[int], new: int) -> float:
    """Batch-1 decode tokens/s, excluding the prefill: tokens after the first / time after the first."""
    stamps: list[float] = []
    import queue

    q: queue.Queue = queue.Queue()

    def sink(ev):
        stamps.append(time.perf_counter())
        q.put(ev)

    engine.submit(prompt, max_new_tokens=new, sink=sink)
    while q.get().kind != "done":
        pass
    return (len(stamps) - 2) / (stamps[-2] - stamps[0])  # last stamp is the "done" event


def naive_rate(model, prompt: list[int], new: int, device: str, reps: int = 2) -> float:
    ids = torch.tensor([prompt], device=device)
    model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False, pad_token_id=0
    )
    rates = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new,
            do_sample=False,
            min_new_tokens=new,
            pad_token_id=0,
        )
        sync()
        rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random model on CPU: checks the script only")
    ap.add_argument("--tokenizer", default=None, help="folder with tokenizer.json (detokenization cost)")
    ap.add_argument("--out", default=None, help="Markdown file to write the table to")
    ap.add_argument("--budget-s", type=float, default=420, help="skip optional parts after this many seconds")
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument(
        "--quick", action="store_true", help="skip the loader check, naive loops and NF4 (re-runs)"
    )
    ap.add_argument(
        "--hf-batch", action="store_true", help="also time transformers' generate_batch (slow warm-up)"
    )
    ap.add_argument(
        "--static", action="store_true", help="also time generate() with a static cache + torch.compile"
    )
    ap.add_argument("--prompt", type=int, default=1000)
    ap.add_argument(
        "--naive", type=float, default=22.0, help="with --quick: the naive loop's tok/s from a full run"
    )
    ap.add_argument("--new", type=int, default=200)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        args.prompt, args.new, args.concurrency = 64, 16, "1,4"
    levels = [int(x) for x in args.concurrency.split(",")]

    import transformers

    gpu = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    say(f"torch {torch.__version__}, transformers {transformers.__version__}, device {gpu}")
    tok = StubTokenizer()
    if args.tokenizer:
        from transformers import AutoTokenizer

        tok = ModTokenizer(AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True))

    if device == "cuda" and args.tokenizer and not args.quick:
        check_loading(args.tokenizer)
    model = build_model(args.tiny, device)
    vocab = model.config.vocab_size
    wbytes = weight_bytes_per_token(model)
    n_params = sum(p.numel() for p in model.parameters())
    say(f"model: {n_params / 1e9:.2f} B parameters, {wbytes / 1e9:.2f} GB read per decode step")

    # 1. batch-1 decode vs the bandwidth floor
    engine = BatchEngine(model, tok, max_batch=128, max_queue=1024, eos_token_ids=set())
    p128 = prompts(1, 128, vocab, seed=1)[0]
    decode_rate(engine, p128, 8)  # warm-up (kernels, allocator)
    eng_rate = statistics.median(decode_rate(engine, p128, 64 if args.tiny else 256) for _ in range(2))
    if device == "cuda":
        bw = copy_bandwidth()
        floor = bw / wbytes
        row("copy bandwidth (device-to-device, read+write)", f"{bw / 1e12:.2f} TB/s")
        row(
            "batch-1 decode, bf16, our engine",
            f"{eng_rate:.1f} tok/s",
            f"{eng_rate / floor:.0%} of the bandwidth floor ({floor:.0f} tok/s = bandwidth / {wbytes / 1e9:.1f} GB)",
        )
    else:
        row("batch-1 decode, our engine", f"{eng_rate:.1f} tok/s")
    p1k = prompts(1, args.prompt, vocab, seed=5)[0]
    for slabs in (False, True):
        e = BatchEngine(model, tok, max_batch=4, eos_token_ids=set(), slabs=slabs)
        decode_rate(e, p1k, 8)
        r = decode_rate(e, p1k, 64 if args.tiny else 128)
        row(
            f"batch-1 decode after a {args.prompt}-token prompt, KV {'slab (in place)' if slabs else 'concat per step'}",
            f"{r:.1f} tok/s",
        )
        e.close()
    if not args.quick:
        naive1 = naive_rate(model, p128, 32 if args.tiny else 128, device)
        row("batch-1 decode, plain model.generate()", f"{naive1:.1f} tok/s")

    # 2. TTFT for a 2,000-token prompt
    p2k = prompts(3, 2000 if not args.tiny else 200, vocab, seed=2)
    engine_run(engine, p2k[:1], 1)
    ttfts = [engine_run(engine, [p], 1)[0] for p in p2k]
    row(
        "time to first token, 2,000-token prompt",
        f"{statistics.median(ttfts) * 1000:.0f} ms",
        "median of 3, batch 1",
    )

    # 3. concurrency sweep: our engine vs a naive generate() loop
    ps_all = prompts(max(levels), args.prompt, vocab, seed=3)
    naive = naive_rate(model, ps_all[0], args.new, device) if not args.quick else args.naive
    row(
        f"naive loop of generate(), prompt {args.prompt} / output {args.new}",
        f"{naive:.1f} tok/s",
        "sequential, so the same at every concurrency",
    )
    results: dict[int, float] = {}
    for n in levels:
        wall, toks, firsts = engine_run(engine, ps_all[:n], args.new)
        results[n] = toks / wall
        p50 = statistics.median(firsts.values())
        row(
            f"{n} concurrent, our engine",
            f"{toks / wall:.0f} tok/s",
            f"{toks / wall / naive:.1f}x naive; wall {wall:.1f} s; median TTFT {p50 * 1000:.0f} ms; "
            f"peak GPU mem {torch.cuda.max_memory_allocated() / 2**30:.0f} GiB"
            if device == "cuda"
            else f"{toks / wall / naive:.1f}x naive",
        )
    ref_n = 32 if 32 in levels else levels[-1]
    write(args, gpu)
    engine.close()

    # 4. LoRA adapters: 1 and 4 active, mixed in one batch
    try:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        lcfg = LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False)
        pmodel = get_peft_model(model, lcfg, adapter_name="a0")
        for i in range(1, 4):
            pmodel.add_adapter(f"a{i}", lcfg)
        pmodel.eval()
        if device == "cuda":
            pmodel.to(torch.bfloat16)
        names = [f"a{i}" for i in range(4)]
        peng = BatchEngine(pmodel, tok, adapters=names, max_batch=128, max_queue=1024, eos_token_ids=set())
        ps = ps_all[:ref_n]
        base_rate = results.get(ref_n)
        for label, ads in (
            ("1 adapter", ["a0"] * len(ps)),
            ("4 adapters, mixed", [names[i % 4] for i in range(len(ps))]),
        ):
            engine_run(peng, ps[:2], 4, ads[:2])
            wall, toks, _ = engine_run(peng, ps, args.new, ads)
            rate = toks / wall
            row(
                f"{ref_n} concurrent, LoRA r=16, {label}",
                f"{rate:.0f} tok/s",
                f"overhead {1 - rate / base_rate:.0%} vs no adapter" if base_rate else "",
            )
        peng.close()
        model = pmodel.unload()  # the plain base model again
        del pmodel, peng
    except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)
        row("LoRA adapters", "failed", repr(e)[:160])

    # 5. NF4 vs bf16
    if device == "cuda" and not args.quick and time.perf_counter() - T0 < args.budget_s * 0.8:
        try:
            import copy

            qmodel = quantize_nf4(copy.deepcopy(model))
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            qbytes = sum(p.numel() * p.element_size() for p in qmodel.parameters())
            qeng = BatchEngine(qmodel, tok, max_batch=128, max_queue=1024, eos_token_ids=set())
            decode_rate(qeng, p128, 8)
            q1 = decode_rate(qeng, p128, 128)
            row(
                "batch-1 decode, NF4",
                f"{q1:.1f} tok/s",
                f"{q1 / eng_rate:.2f}x bf16; weights {qbytes / 1e9:.1f} GB in memory",
            )
            wall, toks, _ = engine_run(qeng, ps_all[:ref_n], args.new)
            row(
                f"{ref_n} concurrent, NF4, our engine",
                f"{toks / wall:.0f} tok/s",
                f"{toks / wall / results[ref_n]:.2f}x bf16; peak GPU mem {torch.cuda.max_memory_allocated() / 2**30:.0f} GiB",
            )
            qeng.close()
            del qmodel, qeng
            gc.collect()
            torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)
            row("NF4", "failed", repr(e)[:160])
    elif device == "cuda":
        row("NF4", "skipped", "time budget")
    write(args, gpu)

    # 6. what CUDA graphs would buy at batch 1: generate() with a static cache (auto torch.compile)
    if args.static and time.perf_counter() - T0 < args.budget_s * 0.6:
        try:
            ids = torch.tensor([p128], device=device)
            kw = {
                "attention_mask": torch.ones_like(ids),
                "do_sample": False,
                "pad_token_id": 0,
                "cache_implementation": "static",
            }
            t = time.perf_counter()
            model.generate(ids, max_new_tokens=16, min_new_tokens=16, **kw)
            sync()
            warm = time.perf_counter() - t
            rates = []
            for _ in range(2):
                t = time.perf_counter()
                out = model.generate(ids, max_new_tokens=128, min_new_tokens=128, **kw)
                sync()
                rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - t))
            r = max(rates)
            note = f"first call {warm:.0f} s (compilation)"
            if device == "cuda":
                note += f"; {r / (copy_bandwidth() / wbytes):.0%} of the bandwidth floor"
            row("batch-1 decode, generate() static cache + torch.compile (reference)", f"{r:.1f} tok/s", note)
        except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)
            row("static cache + compile", "failed", repr(e)[:160])
        write(args, gpu)
    if args.hf_batch and time.perf_counter() - T0 < args.budget_s * 0.8:
        try:
            from transformers import GenerationConfig

            gc_ = GenerationConfig(
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
            t = time.perf_counter()
            out = model.generate_batch(inputs=ps_all[:ref_n], generation_config=gc_)
            sync()
            wall = time.perf_counter() - t
            toks = sum(len(o.generated_tokens) for o in out.values())
            row(
                f"{ref_n} concurrent, transformers generate_batch (reference)",
                f"{toks / wall:.0f} tok/s",
                f"wall {wall:.1f} s incl. its warm-up; one config for all requests, no adapters/stop strings",
            )
        except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)  # reference only
            row(f"{ref_n} concurrent, transformers generate_batch (reference)", "failed", repr(e)[:120])
        write(args, gpu)


def check_loading(tokenizer_dir: str) -> None:
    """The production loader on CUDA: a tiny saved model through load_model, bf16 and NF4."""
    import shutil
    import tempfile

    from assistant.llm.loading import load_model

    tmp = Path(tempfile.mkdtemp())
    try:
        build_model(True, "cpu").save_pretrained(tmp)
        for f in Path(tokenizer_dir).iterdir():
            shutil.copy(f, tmp / f.name)
        for q in ("none", "nf4"):
            m, t = load_model(tmp, quantize=q)
            eng = BatchEngine(m, t, eos_token_ids=set())
            out = eng.submit([5, 6, 7], max_new_tokens=4)
            out.result()
            eng.close()
            row(
                f"load_model(quantize={q!r}) on CUDA",
                "ok",
                f"{type(m.model.layers[0].mlp.up_proj).__name__}, {next(m.parameters()).dtype}",
            )
            del m
    except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)
        row("load_model on CUDA", "failed", repr(e)[:160])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quantize_nf4(model):
    """Swap every decoder nn.Linear for a bitsandbytes NF4 Linear4bit (double quantization), in place."""
    import bitsandbytes as bnb
    from torch import nn

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                q = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=torch.bfloat16,
                    compress_statistics=True,
                    quant_type="nf4",
                    device="meta",
                )
                q.weight = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, compress_statistics=True, quant_type="nf4"
                ).to("cuda")
                if child.bias is not None:
                    q.bias = nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, q)
                del child
    return model


def write(args, gpu: str) -> None:
    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        f"## LLM serving benchmark ({gpu})",
        "",
        (
            "Llama-3.1-8B architecture with **random weights** (no 8B weights offline; speed does not depend "
            "on weight values), bf16 unless noted, SDPA attention, eager PyTorch (no CUDA graphs). Output "
            "length fixed (EOS ignored)."
        ),
        "",
        f"torch {torch.__version__}, transformers {__import__('transformers').__version__}. Command: `{cmd}`",
        "",
        "| measurement | value | note |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in ROWS]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    for out in filter(
        None, [args.out, os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "bench_llm_h200.md")]
    ):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    if os.environ.get("OUT"):
        (Path(os.environ["OUT"]) / "bench_llm_log.txt").write_text("\n".join(LOG) + "\n")


if __name__ == "__main__":
    main()
