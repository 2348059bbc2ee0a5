"""Benchmark LLM serving on one GPU: our server's engines vs transformers' fastest paths vs a naive loop.

Model: Llama-3.1-8B shapes with RANDOM bf16 weights, built on the GPU directly (no 8B weights exist
offline; speed does not depend on weight values). EOS is ignored, so every configuration generates
exactly the requested number of tokens. Optional: a converted Qwen2.5-Coder-1.5B HF folder (--qwen).

Methodology (every figure in the output follows it):
  * Each configuration is first run once at exactly the shapes it is then timed at: that first run
    is the COLD figure (it includes compilation / CUDA-graph capture / allocator growth) and is
    reported on its own, never averaged in.
  * Then ``--runs`` (default 5, at least 5) timed WARM runs; the table shows their median and
    min–max. Nothing else is timed in between; the GPU is synchronised before a clock is read.
  * Throughput = generated tokens / wall time from submit to the last token (prefill included).
    Batch-1 decode uses a 128-token prompt (prefill is ~1 % of the run); "% of floor" divides by the
    bandwidth floor = measured device copy bandwidth (read+write, median of 5) / bytes of weights
    read per decode step.
  * Time to first token: a 2,000-token prompt, max_new_tokens=1, batch 1.
  * Concurrency c: c requests (prompt 1,000, output 200) submitted at once; tok/s over all of them.
    The naive loop (``model.generate`` per request, dynamic cache, eager) serves one request at a
    time, so its throughput is the same at every c: measured once at c=1.
  * Engines: "server-slots" = ``assistant.llm.slots.SlotEngine`` (continuous batching, fixed KV
    slots, decode step compiled with CUDA graphs per batch bucket; ``serve-llm --engine slots``);
    "server-auto" = ``assistant.llm.serving.ServingEngine`` (compiled solo path when alone, eager
    continuous batching otherwise; the default); both built and warmed up as ``build_engine`` does
    (the start-up cost is reported). "eager batch engine" = ``BatchEngine`` alone (the engine before
    this change); "hf-static" = transformers ``generate`` with the static cache + ``torch.compile``
    (reduce-overhead, fullgraph), the prompts of one run as one batch (``--static-levels``, one
    compile each); "hf-cb" = transformers continuous batching (``generate_batch``, paged attention);
    "naive" = the loop above.
  * Adapters: 4 LoRA adapters (r=16, all linear layers) on the same model, 32 concurrent requests
    (output 100) mixed round-robin, vs the same engine kind on the plain model (no LoRA) at the same
    shapes, measured in the curve section; the cost's spread comes from the runs' extremes.
  * Sections run in this order: bw, servers' start-up, b1, ttft, curve (server-slots at every c,
    server-auto at c=1 — its higher c is the eager batch engine, measured before — hf-static,
    naive), adapters, qwen (server-slots), nf4 (server-auto's solo path), cb (least predictable:
    last); a section is skipped when it would start after ``--budget-s``.

Run on the H200 (the lead's command; ~8 minutes):

    PYTHONPATH=. python scripts/bench_llm.py --out $OUT/bench_llm [--qwen /path/to/qwen-hf-folder]

(``--adapter-engine`` picks the engine of the adapter section: slots (default) or auto.)

``--parts`` picks sections (default: all): bw,b1,ttft,curve,static,naive,adapters,nf4,cb,qwen.
``--budget-s`` skips sections that would start after that many seconds (reported as skipped).
``python scripts/bench_llm.py --tiny --out /tmp/b`` checks the script on CPU with a tiny model.
Writes ``bench_llm.json`` (every raw timing) and ``bench_llm.md`` (the table) to ``--out``.
Not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import queue
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from assistant.llm.batching import BatchEngine
from assistant.llm.serving import ServingEngine
from assistant.llm.slots import SlotEngine

T0 = time.perf_counter()
RESULTS: list[dict] = []  # one dict per measured configuration
ARGS: argparse.Namespace
CAP = 4096  # the engines' KV capacity (set from the arguments)


def say(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


class StubTokenizer:
    """Random-weight models have no tokenizer: token ids decode to short strings (the cost is similar)."""

    pad_token_id = 0
    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(f" t{i}" for i in ids)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(name: str, fn, *, unit: str = "tok/s", runs: int, note: str = "", **extra) -> dict:
    """One cold call of ``fn`` (reported apart), then ``runs`` warm calls: median and min–max."""
    say(f"{name}: cold run ...")
    try:
        cold = fn()
        warm = []
        for i in range(runs):
            warm.append(fn())
            say(f"{name}: run {i + 1}/{runs}: {warm[-1]:.1f} {unit}")
    except Exception as e:  # noqa: BLE001  (one failed configuration must not lose the rest)
        nan = float("nan")
        failed = {"name": name, "skipped": f"failed: {e!r}"[:300], "median": nan, "min": nan, "max": nan}
        say(f"{name}: {failed['skipped']}")
        RESULTS.append(failed)
        write()
        return failed
    r = {
        "name": name,
        "unit": unit,
        "cold": cold,
        "warm": warm,
        "median": statistics.median(warm),
        "min": min(warm),
        "max": max(warm),
        "note": note,
        **extra,
    }
    RESULTS.append(r)
    write()
    return r


def skipped(name: str, why: str) -> None:
    say(f"{name}: {why}")
    RESULTS.append({"name": name, "skipped": why})
    write()


# -- models -------------------------------------------------------------------------------------
def build_model(tiny: bool, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig

    if tiny:
        shapes = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096)  # fmt: skip
    else:  # Llama-3.1-8B (default RoPE: the llama3 frequency scaling does not change speed)
        shapes = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                      rope_theta=500000.0, tie_word_embeddings=False, rms_norm_eps=1e-5)  # fmt: skip
    cfg = LlamaConfig(**shapes)
    cfg.eos_token_id, cfg.pad_token_id = None, 0
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return _no_eos(model.eval())


def _no_eos(model):
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.config.eos_token_id = None
    return model


def weight_bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: every parameter but the input embedding (unless tied)."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings().weight
    return sum(p.numel() * p.element_size() for p in model.parameters() if p is not emb or p is out)


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written), median of 5."""
    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    rates = []
    for _ in range(5):
        sync()
        t = time.perf_counter()
        for _ in range(10):
            b.copy_(a)
        sync()
        rates.append(2 * n * 10 / (time.perf_counter() - t))
    del a, b
    return statistics.median(rates)


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (n, length), generator=g).tolist()


# -- runners: each returns a function doing one timed run -----------------------------------------
def engine_run(engine, ps: list[list[int]], new: int, adapters=None, ttfts: list | None = None):
    """Submit all of ``ps`` at once, wait for all; output tok/s (and per-request first-token times)."""

    def run() -> float:
        qs: list[queue.Queue] = []
        firsts: dict[int, float] = {}
        t = time.perf_counter()
        for i, p in enumerate(ps):
            q: queue.Queue = queue.Queue()
            qs.append(q)

            def sink(ev, i=i, q=q):
                firsts.setdefault(i, time.perf_counter() - t)
                q.put(ev)

            engine.submit(p, max_new_tokens=new, adapter=adapters[i] if adapters else None, sink=sink)
        tokens = 0
        for q in qs:
            while (ev := q.get()).kind == "delta":
                pass
            if ev.kind == "error":
                raise RuntimeError(ev.text)
            tokens += ev.completion_tokens
        sync()
        wall = time.perf_counter() - t
        if ttfts is not None:
            ttfts.append(statistics.median(firsts.values()))
        return tokens / wall

    return run


def generate_run(model, ps: list[list[int]], new: int, *, static: bool):
    """``model.generate`` on the whole batch (all prompts the same length: no padding); output tok/s."""
    from transformers import CompileConfig

    ids = torch.tensor(ps, device=model.device)
    kw: dict = {"attention_mask": torch.ones_like(ids), "do_sample": False, "pad_token_id": 0}
    if static:
        kw.update(
            cache_implementation="static",
            compile_config=CompileConfig(fullgraph=True, mode="reduce-overhead"),
        )

    def run() -> float:
        sync()
        t = time.perf_counter()
        out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
        sync()
        return (out.shape[1] - ids.shape[1]) * ids.shape[0] / (time.perf_counter() - t)

    return run


def ttft_run(fn_tok_s, tokens: int = 1):
    """Turn a tok/s runner for ``tokens`` output tokens into a milliseconds-to-first-token runner."""
    return lambda: tokens / fn_tok_s() * 1000


def cb_run(model, ps: list[list[int]], new: int):
    """transformers' continuous batching (paged attention), one persistent manager when supported."""
    import inspect

    from transformers import GenerationConfig

    gcfg = GenerationConfig(
        max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    params = inspect.signature(model.generate_batch).parameters
    kw: dict = {"persistent_manager": True} if "persistent_manager" in params else {}
    if "continuous_batching_config" in params:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        # a KV cache sized for this workload (by default it takes 80-90 % of the free memory)
        blocks = -(-len(ps) * (len(ps[0]) + new) // 256) + 2 * len(ps)
        kw["continuous_batching_config"] = ContinuousBatchingConfig(
            num_blocks=blocks, max_batch_tokens=8192, max_memory_percent=0.3, allow_block_sharing=False
        )

    def run() -> float:
        sync()
        t = time.perf_counter()
        out = model.generate_batch(inputs=ps, generation_config=gcfg, **kw)
        sync()
        toks = sum(len(o.generated_tokens) for o in out.values())
        return toks / (time.perf_counter() - t)

    return run


# -- sections -----------------------------------------------------------------------------------
def due(part: str) -> bool:
    if part not in ARGS.parts:
        return False
    if time.perf_counter() - T0 > ARGS.budget_s:
        skipped(part, f"skipped: over the {ARGS.budget_s:.0f} s budget")
        return False
    return True


def bench_model(
    model,
    label: str,
    *,
    levels: list[int],
    full: bool,
    engine_kinds: tuple[str, ...],
    bandwidth: float | None = None,
) -> dict:
    """Every section for one model; returns facts (floor, b1 rate) for the notes."""
    runs, vocab, device = ARGS.runs, model.config.vocab_size, model.device.type
    P, N, B1 = ARGS.prompt, ARGS.new, ARGS.b1_new
    facts: dict = {"bandwidth": bandwidth}
    wbytes = weight_bytes_per_token(model)
    say(
        f"{label}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B parameters, {wbytes / 1e9:.2f} GB per step"
    )
    if device == "cuda" and full and due("bw"):
        facts["bandwidth"] = copy_bandwidth()
        RESULTS.append(
            {"name": "copy bandwidth (device-to-device, read+write)", "value_TBps": facts["bandwidth"] / 1e12}
        )
    floor = facts.get("bandwidth", 0) / wbytes if facts.get("bandwidth") else None
    floor_note = (lambda r: f"{r / floor:.0%} of the {floor:.0f} tok/s floor") if floor else (lambda r: "")

    cap = CAP
    engines = {}
    for kind in engine_kinds if ARGS.parts & {"b1", "ttft", "curve"} else ():
        t = time.perf_counter()
        try:
            eng = make_engine(kind, model, cap=cap, max_batch=max(levels))
            sizes = {"batch_sizes": tuple(c for c in levels if c > 1)} if kind == "auto" else {}
            took = eng.warm_up(prompt_lengths=(P,), new_tokens=4, **sizes)
        except Exception as e:  # noqa: BLE001  (one failed engine must not lose the rest)
            skipped(f"{label}: server-{kind}", f"failed at start-up: {e!r}"[:300])
            continue
        engines[kind] = eng
        compiled = getattr(eng, "compiled", None)
        if compiled is None and getattr(eng, "solo", None) is not None:
            compiled = eng.solo.compiled
        RESULTS.append({"name": f"{label}: server-{kind} start-up (engine + warm-up: compile, served shapes)",
                        "seconds": time.perf_counter() - t, "warm_up_s": took,
                        "compiled": compiled})  # fmt: skip
        say(f"{label}: server-{kind} warm-up {took:.1f} s (compiled: {compiled})")
    p128 = prompts(1, 128, vocab, seed=1)
    if due("b1"):
        for kind, eng in engines.items():
            r = measure(f"{label}: batch-1 decode, server-{kind}", engine_run(eng, p128, B1), runs=runs)
            r["note"] = floor_note(r["median"])
            facts["b1"] = max(facts.get("b1", 0), r["median"])
        if full:
            batch = BatchEngine(model, StubTokenizer(), max_batch=64, max_queue=1024, eos_token_ids=set())
            r = measure(
                f"{label}: batch-1 decode, our eager batch engine alone",
                engine_run(batch, p128, B1),
                runs=runs,
            )
            r["note"] = floor_note(r["median"])
            batch.close()
        if "static" in ARGS.parts:
            r = measure(f"{label}: batch-1 decode, hf-static (generate, static cache + compile)",
                        generate_run(model, p128, B1, static=True), runs=runs)  # fmt: skip
            r["note"] = floor_note(r["median"])
    if due("ttft"):
        p2k = prompts(1, ARGS.ttft_prompt, vocab, seed=2)
        for kind, eng in engines.items():
            measure(f"{label}: first token, {ARGS.ttft_prompt}-token prompt, server-{kind}",
                    ttft_run(engine_run(eng, p2k, 1)), unit="ms", runs=runs)  # fmt: skip
    if due("curve"):
        ps = prompts(max(levels), P, vocab, seed=3)
        for kind, eng in engines.items():
            for c in levels if kind == engine_kinds[0] else levels[:1]:
                ttfts: list[float] = []
                r = measure(
                    f"{label}: {c} concurrent, server-{kind}",
                    engine_run(eng, ps[:c], N, ttfts=ttfts),
                    runs=runs,
                )
                if "skipped" not in r:
                    r["ttft_ms_median"] = statistics.median(ttfts[1:]) * 1000
                    r["note"] = f"median first token {r['ttft_ms_median']:.0f} ms"
            if full and "adapters" in ARGS.parts and kind == ARGS.adapter_engine:
                c = max(levels)  # the base of the adapter comparison: same engine, no LoRA, same lengths
                facts["adapter_base"] = measure(
                    f"{label}: {c} concurrent, server-{kind}, base model (no LoRA), output {N // 2}",
                    engine_run(eng, ps[:c], N // 2),
                    runs=runs,
                )
        if "static" in ARGS.parts:
            for c in ARGS.static_levels:
                if due("static"):
                    measure(f"{label}: {c} concurrent, hf-static (one batch)", generate_run(model, ps[:c], N, static=True),
                            runs=runs)  # fmt: skip
        if "naive" in ARGS.parts and due("naive"):
            measure(f"{label}: 1 concurrent, naive generate() loop (same at every c)",
                    generate_run(model, ps[:1], N, static=False), runs=runs)  # fmt: skip
    for eng in engines.values():
        eng.close()
    return facts


def make_engine(kind: str, model, *, cap: int, max_batch: int, adapters: list[str] | None = None):
    """The server's engines as ``build_engine`` makes them: "slots" (SlotEngine) or "auto" (ServingEngine)."""
    if kind == "slots":
        return SlotEngine(model, StubTokenizer(), adapters=adapters, max_batch=max_batch, max_queue=1024,
                          capacity=cap, eos_token_ids=set())  # fmt: skip
    return ServingEngine(model, StubTokenizer(), adapters=adapters, max_batch=64, max_queue=1024, eos_token_ids=set(),
                         context_tokens=cap)  # fmt: skip


def bench_adapters(model, label: str, c: int, base: dict | None) -> None:
    """4 mixed adapters at ``c`` concurrent vs ``base``: the same engine kind on the plain model (bench_model)."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lcfg = LoraConfig(r=16, lora_alpha=32, target_modules=targets, init_lora_weights=False)
    pmodel = get_peft_model(model, lcfg, adapter_name="a0")
    for i in range(1, 4):
        pmodel.add_adapter(f"a{i}", lcfg)
    pmodel.eval()
    if model.device.type == "cuda":
        pmodel.to(torch.bfloat16)
    names = [f"a{i}" for i in range(4)]
    eng = make_engine(ARGS.adapter_engine, pmodel, cap=CAP, max_batch=c, adapters=names)
    try:
        if ARGS.adapter_engine == "slots":  # compile with the LoRA hooks in the graph (not timed: start-up)
            took = eng.warm_up(prompt_lengths=(ARGS.prompt,), new_tokens=4, batch_sizes=(c,))
            say(f"{label}: adapters engine warm-up {took:.1f} s")
        ps = prompts(c, ARGS.prompt, model.config.vocab_size, seed=3)
        mixed = measure(f"{label}: {c} concurrent, server-{ARGS.adapter_engine}, 4 adapters mixed (r=16, all linear), "
                        f"output {ARGS.new // 2}",
                        engine_run(eng, ps, ARGS.new // 2, adapters=[names[i % 4] for i in range(c)]),
                        runs=ARGS.runs)  # fmt: skip
        if base and "skipped" not in base and "skipped" not in mixed:
            mixed["note"] = (f"cost {1 - mixed['median'] / base['median']:.0%} vs the base model on the same "
                             f"engine (run extremes: {1 - mixed['max'] / base['min']:.0%} to "
                             f"{1 - mixed['min'] / base['max']:.0%})")  # fmt: skip
    finally:
        eng.close()
        pmodel.unload()


def quantize_nf4(model):
    """Swap every decoder nn.Linear for a bitsandbytes NF4 Linear4bit (double quantization), in place."""
    import bitsandbytes as bnb
    from torch import nn

    for parent in list(model.model.layers.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                      device="meta")  # fmt: skip
                q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4").to("cuda")  # fmt: skip
                setattr(parent, name, q)
    return model


def bench_nf4(label: str) -> None:
    qmodel = quantize_nf4(build_model(False, "cuda"))
    gc.collect()
    torch.cuda.empty_cache()
    p128 = prompts(1, 128, qmodel.config.vocab_size, seed=1)
    for compiled in (True, False):
        eng = ServingEngine(
            qmodel, StubTokenizer(), eos_token_ids=set(), context_tokens=1024, compiled=compiled
        )
        try:
            r = measure(f"{label}: batch-1 decode, NF4, server-auto solo path", engine_run(eng, p128, ARGS.b1_new),
                        runs=ARGS.runs)  # fmt: skip
        finally:
            eng.close()
        if "skipped" not in r:
            r["note"] = (
                "compiled" if eng.solo.compiled else "eager (torch.compile failed on the 4-bit layers)"
            )
            break
        torch._dynamo.reset()
    del qmodel
    gc.collect()
    torch.cuda.empty_cache()


def write() -> None:
    if not ARGS.out:
        return
    out = Path(ARGS.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    meta = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "elapsed_s": time.perf_counter() - T0,
    }
    (out / "bench_llm.json").write_text(json.dumps({"meta": meta, "results": RESULTS}, indent=1))
    lines = [
        f"## LLM serving benchmark ({meta['device']})",
        "",
        f"torch {meta['torch']}, transformers {meta['transformers']}; command `{meta['command']}`; "
        f"{meta['elapsed_s']:.0f} s. Random weights, EOS ignored; method in scripts/bench_llm.py's docstring. "
        f"Warm = median (min–max) of {ARGS.runs} runs after the cold run; cold = the first run at those shapes.",
        "",
        "| measurement | warm median (min–max) | cold first run | note |",
        "| --- | --- | --- | --- |",
    ]
    for r in RESULTS:
        if "skipped" in r:
            lines.append(f"| {r['name']} | — | — | {r['skipped']} |")
        elif "median" in r:
            u = r["unit"]
            lines.append(f"| {r['name']} | {r['median']:.1f} {u} ({r['min']:.1f}–{r['max']:.1f}) | "
                         f"{r['cold']:.1f} {u} | {r.get('note', '')} |")  # fmt: skip
        elif "value_TBps" in r:
            lines.append(f"| {r['name']} | {r['value_TBps']:.2f} TB/s | | median of 5 |")
        elif "seconds" in r:
            lines.append(f"| {r['name']} | {r['seconds']:.1f} s | | warm_up() {r['warm_up_s']:.1f} s; "
                         f"compiled after warm-up: {r.get('compiled')} |")  # fmt: skip
    (out / "bench_llm.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="folder for bench_llm.json and bench_llm.md")
    ap.add_argument("--tiny", action="store_true", help="tiny random model on CPU: checks the script only")
    ap.add_argument("--parts", default="bw,b1,ttft,curve,static,naive,adapters,nf4,cb,qwen")
    ap.add_argument("--qwen", default=None, help="a converted Qwen2.5-Coder-1.5B HF folder (optional)")
    ap.add_argument("--runs", type=int, default=5, help="timed warm runs per configuration (>= 5)")
    ap.add_argument("--budget-s", type=float, default=470, help="sections starting after this are skipped")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument(
        "--static-levels", default="1,32", help="concurrency levels for hf-static (a compile each)"
    )
    ap.add_argument("--adapter-engine", default="slots", choices=["slots", "auto"])
    ap.add_argument("--prompt", type=int, default=1000)
    ap.add_argument("--new", type=int, default=200)
    ap.add_argument("--b1-new", type=int, default=128, help="tokens generated in the batch-1 decode runs")
    ap.add_argument("--ttft-prompt", type=int, default=2000)
    ARGS = ap.parse_args()
    ARGS.parts = set(ARGS.parts.split(","))
    ARGS.runs = max(5, ARGS.runs)
    device = "cuda" if torch.cuda.is_available() and not ARGS.tiny else "cpu"
    if ARGS.tiny:
        ARGS.prompt, ARGS.new, ARGS.b1_new, ARGS.ttft_prompt, ARGS.concurrency = 48, 8, 8, 100, "1,4"
        ARGS.static_levels = "1,4"
    levels = [int(x) for x in ARGS.concurrency.split(",")]
    global CAP
    CAP = min(4096, max(ARGS.ttft_prompt, ARGS.prompt) + ARGS.new + 64)  # the engines' KV capacity
    ARGS.static_levels = [int(x) for x in ARGS.static_levels.split(",")]
    import transformers

    say(f"torch {torch.__version__}, transformers {transformers.__version__}, device {device}")
    model = build_model(ARGS.tiny, device)
    facts: dict = {"bandwidth": None}
    if ARGS.parts & {"bw", "b1", "ttft", "curve", "static", "naive"}:
        facts = bench_model(model, "8B" if not ARGS.tiny else "tiny", levels=levels, full=True,
                            engine_kinds=("slots", "auto"))  # fmt: skip
    label = "8B" if not ARGS.tiny else "tiny"
    if due("adapters"):
        try:
            bench_adapters(model, label, max(levels), facts.get("adapter_base"))
        except Exception as e:  # noqa: BLE001  (one failed section must not lose the rest)
            skipped(f"{label}: adapters", f"failed: {e!r}"[:300])
    if ARGS.qwen and due("qwen"):
        from transformers import AutoModelForCausalLM

        qwen = AutoModelForCausalLM.from_pretrained(
            ARGS.qwen, dtype=torch.bfloat16, local_files_only=True
        ).to(device)
        ARGS.parts = (ARGS.parts - {"static", "naive", "ttft", "bw"}) | {"b1", "curve"}
        bench_model(_no_eos(qwen.eval()), "Qwen2.5-Coder-1.5B", levels=levels, full=False, engine_kinds=("slots",),
                    bandwidth=facts["bandwidth"])  # fmt: skip
        del qwen
        gc.collect()
        torch.cuda.empty_cache()
    if device == "cuda" and due("nf4"):
        bench_nf4(label)
    if due("cb"):
        ps = prompts(max(levels), ARGS.prompt, model.config.vocab_size, seed=3)
        for c in [c for c in levels if c > 1]:
            try:
                measure(f"{label}: {c} concurrent, hf-cb (generate_batch, paged)", cb_run(model, ps[:c], ARGS.new),
                        runs=ARGS.runs)  # fmt: skip
            except Exception as e:  # noqa: BLE001  (a library reference; its failure is data)
                skipped(f"{label}: {c} concurrent, hf-cb", f"failed: {e!r}"[:300])
            if hasattr(model, "destroy_cached_continuous_batching_manager"):
                model.destroy_cached_continuous_batching_manager()  # sized for this c; frees its cache
            gc.collect()
    del model
    gc.collect()
    say("done")
    write()
    if ARGS.out:
        print((Path(ARGS.out) / "bench_llm.md").read_text())


if __name__ == "__main__":
    main()
