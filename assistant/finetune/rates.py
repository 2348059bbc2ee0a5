"""Measured training rates, and which method fits which hardware.

``scripts/bench_finetune.py`` writes rows (model, method, GPUs, strategy, tokens/s, MFU, peak
memory) to ``<out-dir>/results.json``; ``scripts/results/finetune_rates.json`` keeps the earlier
measurements in the same row format. ``load_rates`` reads them all; ``measured_mfu`` picks the
rate for a method on N GPUs (our recipe, the measured model closest in size, the best MFU), and
says when it had to assume one (no row for that GPU count: the 1-GPU rate; full fine-tuning: the
LoRA rate). ``hardware_table`` checks every method against a few GPU set-ups: memory per GPU
(FSDP2 shards weights, gradients and optimizer state; DDP does not), with and without
activation checkpointing, and the time at the measured rate.

MFU measured on an H200 is assumed to carry over to other GPUs (scaled by their peak); that is an
estimate, and the table says so.

Not here: the memory/FLOP model itself (``plan``), measuring (``scripts/bench_finetune.py``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from assistant.finetune import plan as P

REPO_RESULTS = Path(__file__).resolve().parents[2] / "scripts" / "results"
# (label, GPU key in plan.GPUS, count, strategy)
SETUPS: list[tuple[str, str, int, str]] = [
    ("1x H200 141 GB", "h200", 1, "single"),
    ("2x H200, DDP", "h200", 2, "ddp"),
    ("2x H200, FSDP2", "h200", 2, "fsdp"),
    ("1x H100 80 GB", "h100", 1, "single"),
    ("1x A100 80 GB", "a100", 1, "single"),
    ("1x L4 24 GB", "l4", 1, "single"),
]


def default_rate_files(results: Path = REPO_RESULTS) -> list[Path]:
    """The seed file plus every benchmark output folder (``finetune*/results.json``), oldest first."""
    files = [results / "finetune_rates.json"] + sorted(
        results.glob("finetune*/results.json"), key=lambda p: p.stat().st_mtime
    )
    return [f for f in files if f.is_file()]


def load_rates(files: list[Path] | None = None) -> list[dict]:
    """Rows with an MFU from the rate files (a bench ``results.json`` or a list of rows)."""
    rows: list[dict] = []
    for f in default_rate_files() if files is None else files:
        data = json.loads(Path(f).read_text())
        for row in data["rows"] if isinstance(data, dict) else data:
            if "error" not in row and row.get("mfu"):
                rows.append({**row, "source": row.get("source", str(f))})
    return rows


def recipe_of(row: dict) -> str:
    name = str(row.get("recipe") or row.get("config", ""))
    return "plain" if "plain" in name else "base" if name.endswith("base") else "ours"


def measured_mfu(rows: list[dict], *, method: str, gpus: int, params: float) -> tuple[float, str] | None:
    """(MFU, where it comes from) for ``method`` on ``gpus`` GPUs, or None with no measurement at all."""
    want = "lora" if method == "full" else method
    note = " (assumed: full fine-tuning not measured; the LoRA rate)" if method == "full" else ""
    ours = [r for r in rows if r.get("method") == want and recipe_of(r) == "ours"]
    same = [r for r in ours if int(r.get("gpus", 1)) == gpus]
    if not same:
        same = [r for r in ours if int(r.get("gpus", 1)) == 1]
        if same and gpus > 1:
            note += f" (assumed: not measured on {gpus} GPUs; the 1-GPU rate)"
    if not same:
        return None

    def distance(r: dict) -> float:
        arch = P.ARCHS.get(str(r.get("model", "")).lower())
        size = P.Shapes.from_config(arch).params if arch else params
        return abs(math.log(size / params))

    best = min(same, key=lambda r: (round(distance(r), 1), -r["mfu"]))
    return float(best["mfu"]), f"{best.get('config') or best.get('recipe', '')} on {best.get('model')}, " + (
        f"{int(best.get('gpus', 1))} GPU(s): {best.get('tok_s', 0):,.0f} tok/s{note}"
    )


def hardware_table(
    base: str, *, data_tokens: float, seq: int = 2048, batch: int = 1, r: int = 16, rows: list[dict]
) -> list[dict]:
    """Each set-up x method: memory per GPU, whether it fits (and whether only with checkpointing), hours."""
    _, s = P.load_shapes(base)
    out = []
    for label, gpu, n, strategy in SETUPS:
        peak, mem = P.GPUS[gpu]
        cells = {}
        for ckpt in (False, True):
            est = P.estimate(s, seq=seq, batch=batch, r=r, checkpointing=ckpt)
            for method, m in est.items():
                state = m["weights"] + m["grads"] + m["optimizer"]
                per_gpu = (state / n if strategy == "fsdp" else state) + m["activations"]
                if method in cells and cells[method]["fits"]:
                    continue
                rate = measured_mfu(rows, method=method, gpus=n, params=s.params)
                mfu = rate[0] if rate else P.DEFAULT_MFU
                hours = m["flops"] * data_tokens / (peak * 1e12 * mfu * n) / 3600
                cells[method] = dict(
                    per_gpu_gb=per_gpu,
                    fits=per_gpu <= 0.9 * mem,
                    checkpointing=ckpt,
                    hours=hours,
                    mfu=mfu,
                    assumed=rate is None or "assumed" in rate[1] or gpu != "h200",
                    supported=not (method == "qlora" and strategy == "fsdp"),
                )
        out.append(dict(setup=label, gpu_gb=mem, methods=cells))
    return out


def format_hardware(table: list[dict]) -> str:
    lines = [
        "Which method fits which hardware (memory per GPU at 90% of the card; time at the measured MFU):",
        "",
        "| hardware | full | lora | qlora |",
        "|---|---|---|---|",
    ]
    for row in table:
        cells = []
        for method in ("full", "lora", "qlora"):
            c = row["methods"][method]
            if not c["supported"]:
                cells.append("n/a (QLoRA: one GPU or DDP)")
            elif not c["fits"]:
                cells.append(f"no ({c['per_gpu_gb']:.0f} GB > {0.9 * row['gpu_gb']:.0f})")
            else:
                how = "with checkpointing" if c["checkpointing"] else "no checkpointing"
                mark = "*" if c["assumed"] else ""
                cells.append(f"yes, {how}: {c['per_gpu_gb']:.0f} GB, {c['hours']:.3g} h{mark}")
        lines.append(f"| {row['setup']} | " + " | ".join(cells) + " |")
    lines.append(
        "\n* time from a rate not measured on that set-up (another GPU count, GPU model or method); "
        "an estimate."
    )
    return "\n".join(lines)
