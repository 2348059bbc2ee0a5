"""The ``finetune`` (plan, build-data, train, eval) and ``adapters`` (list, use, eval) commands.

Thin: options → the functions in ``assistant.finetune`` and ``assistant.llm``. Settings used:
``data_dir`` (training sets, runs, the adapter registry) and ``llm.model`` / ``llm.device`` (the
base model). Everything else is an option with a default.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import typer

from assistant.errors import ConfigError


def _registry(settings):
    from assistant.llm.adapters import AdapterRegistry

    return AdapterRegistry(Path(settings.data_dir))


def _model_dir(settings, base: str | None) -> Path:
    from assistant.llm.loading import ensure_model_dir

    return ensure_model_dir(base or settings.llm.model, cache_dir=Path(settings.model_cache_dir))


def _evaluate_spec(
    settings, data: Path, adapter: str, *, base: str | None, limit: int, split: str, compare_base: bool
) -> dict:
    from assistant.finetune import data as D
    from assistant.finetune import evaluate as E
    from assistant.llm.adapters import attach_adapter, check_base
    from assistant.llm.loading import load_model, model_fingerprint

    examples = D.read_split(data, split)[:limit]
    if not examples:
        raise ConfigError(
            f"{data}/{split}.jsonl has no examples; rebuild with a larger --validation fraction"
        )
    model_dir = _model_dir(settings, base)
    model, tok = load_model(model_dir, device=settings.llm.device)
    results: dict[str, dict] = {}
    if compare_base or adapter.lower() == "none":
        results["base"], _ = E.evaluate(model, tok, examples)
    reg = _registry(settings)
    path = reg.resolve(adapter)
    if path is not None:
        check_base(path, expected=reg.fingerprint_of(path), loaded=model_fingerprint(model_dir), name=adapter)
        model = attach_adapter(model, path, "candidate")
        results[adapter], _ = E.evaluate(model, tok, examples)
    typer.echo(E.format_table(results))
    out = data / f"eval-{Path(adapter).name}.json"
    E.save_report(out, results)
    typer.echo(f"saved {out}")
    return results


def register(app: typer.Typer, get_settings: Callable[[], object]) -> None:
    ft = typer.Typer(
        no_args_is_help=True, help="Fine-tune the answering model (LoRA / QLoRA) on your own material."
    )
    ad = typer.Typer(no_args_is_help=True, help="Trained LoRA adapters: list, switch, evaluate.")
    app.add_typer(ft, name="finetune")
    app.add_typer(ad, name="adapters")

    @ft.command("plan")
    def plan_cmd(
        base: str = typer.Option(
            "bundled", help="model folder, 'bundled', or a preset: smollm2-135m, llama-3.1-8b, llama-3.1-70b"
        ),
        data: float = typer.Option(..., "--data", help="training tokens (e.g. 2e7)"),
        gpu: str = typer.Option("h200", help="h200 | h100 | a100 | a10g | l4 | rtx4090"),
        gpus: int = typer.Option(1, min=1),
        seq: int = typer.Option(2048, min=16),
        batch: int = typer.Option(1, min=1),
        r: int = typer.Option(16, min=1),
        epochs: float = typer.Option(1.0),
        mfu: float | None = typer.Option(
            None, help="default: each method's MFU measured by scripts/bench_finetune.py (--rates)"
        ),
        rates: list[Path] = typer.Option(
            [], "--rates", help="results.json of bench_finetune runs (default: scripts/results/finetune*)"
        ),
        checkpointing: bool = typer.Option(True, help="gradient checkpointing in the activation estimate"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Memory, FLOPs and time for full fine-tuning vs LoRA vs QLoRA, and which hardware fits each."""
        from assistant.finetune import plan as P
        from assistant.finetune import rates as R

        p = P.plan(
            base,
            data_tokens=data,
            gpu=gpu,
            seq=seq,
            batch=batch,
            r=r,
            mfu=mfu,
            epochs=epochs,
            checkpointing=checkpointing,
            gpus=gpus,
            rates=R.load_rates(list(rates)) if rates else None,
        )
        typer.echo(json.dumps(p, indent=1) if as_json else P.format_plan(p))

    @ft.command("build-data")
    def build_data(
        sources: list[str] = typer.Option(
            ["index"], "--from", help="index | feedback | FILE.jsonl (repeatable)"
        ),
        out: Path = typer.Option(
            ..., "--out", help="folder for train.jsonl, validation.jsonl, manifest.json"
        ),
        validation: float = typer.Option(0.1, min=0.0, max=0.9, help="fraction of DOCUMENTS held out"),
        seed: int = typer.Option(0),
        per_doc: int = typer.Option(4, min=1, help="answer examples per document at most"),
        refusal_rate: float = typer.Option(0.3, min=0.0, max=1.0),
        source: str | None = typer.Option(None, help="only this source of the index"),
        path_prefix: str | None = typer.Option(None, help="only documents under this path"),
        include_restricted: bool = typer.Option(
            False,
            help="also train on documents shared with named users/groups only "
            "(an adapter can repeat what it learned to anyone who uses it)",
        ),
    ) -> None:
        """Build a training set: grounded Q/A synthesised from the index, 👍 feedback, or your JSONL."""
        from assistant.finetune import data as D

        examples, meta, negative = [], {"sources": list(sources), "seed": seed}, 0
        engine = None
        try:
            for src in sources:
                if src in ("index", "feedback") and engine is None:
                    from assistant.engine import Engine

                    engine = Engine.open(get_settings())
                if src == "index":
                    docs = D.documents_from_store(
                        engine.store,
                        source=source,
                        path_prefix=path_prefix,
                        include_restricted=include_restricted,
                    )
                    examples += D.synthesise(docs, seed=seed, per_doc=per_doc, refusal_rate=refusal_rate)
                elif src == "feedback":
                    rows, negative = D.from_feedback(engine.store.list_feedback())
                    examples += rows
                else:
                    examples += D.from_jsonl(Path(src))
        finally:
            if engine is not None:
                engine.close()
        if not examples:
            raise ConfigError(
                "no training examples were built; ingest documents first ('assistant ingest PATH') or "
                "pass --from FILE.jsonl"
            )
        train, val = D.split_by_document(examples, validation=validation, seed=seed)
        report = D.write_dataset(out, train, val, meta={**meta, "excluded_negative_feedback": negative})
        typer.echo(
            f"{report.train} train / {report.validation} validation examples from {report.documents} "
            "documents "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(report.kinds.items()))}); "
            f"{negative} 👎 excluded; fingerprint {report.fingerprint}; written to {out}"
        )

    @ft.command("train", context_settings={"allow_extra_args": False})
    def train_cmd(
        data: Path = typer.Option(..., help="folder written by build-data"),
        name: str = typer.Option(..., help="adapter name in the registry"),
        method: str = typer.Option("lora", help="lora | qlora (QLoRA needs CUDA + bitsandbytes)"),
        base: str | None = typer.Option(None, help="base model (default: llm.model)"),
        r: int = typer.Option(16),
        alpha: int = typer.Option(32),
        dropout: float = typer.Option(0.05),
        targets: str = typer.Option(
            ",".join(("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
            help="comma-separated module names",
        ),
        lr: float = typer.Option(2e-4),
        epochs: float = typer.Option(1.0),
        max_steps: int | None = typer.Option(None),
        global_batch: int = typer.Option(
            16, help="examples per optimizer step over all GPUs (keeps runs comparable across GPU counts)"
        ),
        micro_batch: int = typer.Option(
            4, help="examples per forward pass per GPU; the rest is gradient accumulation"
        ),
        seq_len: int = typer.Option(1024),
        grad_checkpointing: bool | None = typer.Option(
            None,
            "--grad-checkpointing/--no-grad-checkpointing",
            help="default: on only when the memory estimate says a micro-batch would not fit",
        ),
        save_every: int = typer.Option(50, help="checkpoint every N steps (0: only at the end)"),
        out: Path | None = typer.Option(None, help="run folder (default: DATA_DIR/finetune/NAME)"),
        resume: bool = typer.Option(True, help="continue from the run folder's checkpoint if there is one"),
        gpus: int = typer.Option(
            1,
            min=1,
            help="more than 1: relaunch under torchrun (NCCL on GPUs, gloo on CPU; NVLink multicast off)",
        ),
        packing: bool = typer.Option(
            True, help="several examples per row of --seq-len (then --micro-batch counts rows)"
        ),
        loss: str = typer.Option(
            "auto", help="auto | liger | chunked | none (full logits); auto: Liger on CUDA when installed"
        ),
        strategy: str = typer.Option(
            "auto",
            help="with --gpus > 1: auto | ddp | fsdp (auto: FSDP2 when the weights do not fit one GPU)",
        ),
        attention: str = typer.Option(
            "sdpa", help="packed rows: sdpa (transformers' packed mask) | varlen (per-example flash kernel)"
        ),
        memory_budget_gb: float | None = typer.Option(
            None, help="memory per GPU the checkpointing decision plans against (default: the GPU's)"
        ),
        use: bool = typer.Option(False, "--use", help="make it the active adapter afterwards"),
        evaluate_after: bool = typer.Option(
            True, "--eval/--no-eval", help="score the validation split before registering"
        ),
        eval_limit: int = typer.Option(100),
    ) -> None:
        """Train a LoRA/QLoRA adapter and register it (same command line under torchrun)."""
        import torch.distributed as dist

        from assistant.settings import child_environment

        if gpus > 1 and not dist.is_torchelastic_launched():
            argv = [
                a
                for i, a in enumerate(sys.argv[1:])
                if not (a.startswith("--gpus") or (i and sys.argv[i] == "--gpus"))
            ]
            from assistant.finetune.distributed import NO_MULTICAST

            # NVLink multicast can take a shared host's GPUs out of service: always off for our children
            env = child_environment(**NO_MULTICAST)
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc-per-node={gpus}",
                "-m",
                "assistant.finetune.torchrun_entry",
                "--",  # torchrun would otherwise read --r as an abbreviation of its own options
                *argv,
            ]
            raise typer.Exit(subprocess.call(cmd, env=env))
        from assistant.finetune import data as D
        from assistant.finetune import train as T
        from assistant.llm.loading import model_fingerprint

        settings = get_settings()
        cfg = T.TrainConfig(
            method=method,
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=tuple(t.strip() for t in targets.split(",") if t.strip()),
            lr=lr,
            epochs=epochs,
            max_steps=max_steps,
            global_batch=global_batch,
            micro_batch=micro_batch,
            max_seq_len=seq_len,
            grad_checkpointing=grad_checkpointing,
            save_every=save_every,
            packing=packing,
            loss_impl=loss,
            strategy=strategy,
            memory_budget_gb=memory_budget_gb,
            attention=attention,
        )
        manifest = D.read_manifest(data)
        run_dir = out or Path(settings.data_dir) / "finetune" / name
        model_dir = _model_dir(settings, base)
        result = T.train(
            model_dir,
            D.read_split(data, "train"),
            cfg,
            out_dir=run_dir,
            device=settings.llm.device,
            resume=resume,
            data_fingerprint=manifest["fingerprint"],
        )
        if dist.is_initialized() and dist.get_rank() != 0:
            return
        typer.echo(
            f"trained {result.steps} steps ({result.resumed_from} resumed), {result.tokens_per_s:,.0f} "
            f"tokens/s; adapter in {result.adapter_dir}"
        )
        metrics = {
            "loss_first": result.losses[0] if result.losses else None,
            "loss_last": result.losses[-1] if result.losses else None,
        }
        if evaluate_after and (data / "validation.jsonl").exists() and D.read_split(data, "validation"):
            from assistant.finetune import evaluate as E
            from assistant.llm.adapters import attach_adapter
            from assistant.llm.loading import load_model

            val = D.read_split(data, "validation")[:eval_limit]
            model, tok = load_model(model_dir, device=settings.llm.device)
            scores, _ = E.evaluate(attach_adapter(model, result.adapter_dir, "new"), tok, val)
            metrics.update(scores)
            typer.echo(E.format_table({name: scores}))
        rec = _registry(settings).register(
            name,
            result.adapter_dir,
            base_fingerprint=model_fingerprint(model_dir),
            data_fingerprint=manifest["fingerprint"],
            params={**asdict(cfg), "target_modules": list(cfg.target_modules)},
            metrics=metrics,
        )
        if use:
            _registry(settings).use(name)
        typer.echo(f"registered {rec.name} v{rec.version}{' (active)' if use else ''}")

    @ft.command("eval")
    def eval_cmd(
        data: Path = typer.Option(..., help="folder written by build-data"),
        adapter: str = typer.Option("default", help="registered name, folder, 'default' or 'none'"),
        base: str | None = typer.Option(None),
        limit: int = typer.Option(200),
        split: str = typer.Option("validation"),
        compare_base: bool = typer.Option(True, help="also score the base model (before/after)"),
    ) -> None:
        """Before/after table on the validation split: key fact, citation, refusal, answer length."""
        _evaluate_spec(
            get_settings(), data, adapter, base=base, limit=limit, split=split, compare_base=compare_base
        )

    @ad.command("list")
    def list_cmd(as_json: bool = typer.Option(False, "--json")) -> None:
        """Registered adapters (name, version, base and data fingerprints, metrics); * = active."""
        from assistant.llm.adapters import SHIPPED_DEFAULT, is_adapter_dir

        reg = _registry(get_settings())
        records, active = reg.list(), reg.active()
        if as_json:
            typer.echo(json.dumps({"active": active, "adapters": [r.to_json() for r in records]}, indent=1))
            return
        if is_adapter_dir(SHIPPED_DEFAULT):
            typer.echo(f"{'*' if active in (None,) else ' '} default (shipped)  {SHIPPED_DEFAULT}")
        for r in records:
            m = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(r.metrics.items())[:4]
            )
            typer.echo(
                f"{'*' if r.name == active else ' '} {r.name} v{r.version}  base={r.base_fingerprint} "
                f"data={r.data_fingerprint}  {m}"
            )
        if not records:
            typer.echo("no trained adapters yet: assistant finetune train --data DIR --name NAME")

    @ad.command("use")
    def use_cmd(
        name: str = typer.Argument(..., help="registered name, or 'none' for the base model"),
    ) -> None:
        """Make NAME the adapter that answering and the LLM server load."""
        _registry(get_settings()).use(name)
        typer.echo(f"active adapter: {name}")

    @ad.command("eval")
    def adapter_eval(
        name: str = typer.Argument(...),
        data: Path = typer.Option(..., help="folder written by build-data"),
        base: str | None = typer.Option(None, help="base model it was trained on (default: llm.model)"),
        limit: int = typer.Option(200),
    ) -> None:
        """Before/after table of adapter NAME on DATA's validation split."""
        _evaluate_spec(
            get_settings(), data, name, base=base, limit=limit, split="validation", compare_base=True
        )
