"""``assistant eval``: several configurations side by side on one question set (mounted by the CLI)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer

from assistant.settings import Settings


def _variant(spec: str) -> tuple[str, dict]:
    """'dense:retrieval.mode=dense,llm.model=none' → ('dense', {'retrieval': {'mode': 'dense'}, 'llm': {...}})."""
    name, _, body = spec.partition(":")
    if not body:
        raise typer.BadParameter(f"--variant {spec!r}: use NAME:section.key=value[,section.key=value]")
    over: dict = {}
    for part in body.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            raise typer.BadParameter(f"--variant {spec!r}: {part!r} is not section.key=value")
        node = over
        *path, last = key.strip().split(".")
        for p in path:
            node = node.setdefault(p, {})
        v: object = value.strip()
        if v in ("true", "false"):
            v = v == "true"
        else:
            try:
                v = json.loads(str(v))
            except ValueError:
                pass
        node[last] = v
    return name, over


def register(app: typer.Typer, get_settings: Callable[[], Settings]) -> None:
    from assistant.cli_context import config_files
    from assistant.cli_context import who as _who

    @app.command("eval")
    def eval_cmd(
        questions: Path = typer.Argument(..., help="JSONL question set"),
        out: Path = typer.Option(Path("results"), "--out", help="folder for answers.jsonl, report.md, plots"),
        config: list[Path] = typer.Option(
            [], "--config", help="a configuration TOML to compare (repeatable)"
        ),
        variant: list[str] = typer.Option(
            [], "--variant", help="NAME:section.key=value,… a configuration given inline (repeatable)"
        ),
        as_email: str | None = typer.Option(None, "--as", help="evaluate with this person's permissions"),
        retrieval_only: bool = typer.Option(False, "--retrieval-only", help="skip answering (fast)"),
        limit: int = typer.Option(0, "--limit", help="only the first N questions"),
        concurrency: int = typer.Option(
            1,
            "--concurrency",
            min=1,
            help="questions answered at once (threads; for a batching llm.endpoint); "
            "latencies then include queueing",
        ),
        warmup: int = typer.Option(
            0,
            "--warmup",
            min=0,
            help="answer the first N questions once per configuration before the timed run (not recorded), "
            "so model loading and first-call costs stay out of the latencies",
        ),
    ) -> None:
        """Score retrieval and answers on a question set, for one or more configurations."""
        from tqdm import tqdm

        from assistant import evaluation as ev
        from assistant.service import Assistant
        from assistant.settings import load_settings

        qs = ev.load_questions(questions)[: limit or None]
        base_files = config_files()
        configs: list[tuple[str, Settings]] = []
        for c in config:
            configs.append((c.stem, load_settings(base_files + [c])))
        for v in variant:
            name, over = _variant(v)
            configs.append((name, load_settings(base_files or None, overrides=over)))
        if not configs:
            configs = [("default", get_settings())]
        out.mkdir(parents=True, exist_ok=True)
        who = _who(as_email, [])
        all_records: dict[str, list] = {}
        metrics = []
        shared: dict = {}
        with tqdm(total=len(qs) * len(configs), unit="q", desc="eval") as bar:
            for name, s in configs:
                engine_key = (str(s.data_dir), s.embedding)
                llm_key = (s.llm.model, s.llm.adapter, s.llm.endpoint, s.llm.quantize)
                from assistant.engine import Engine

                engine = shared.get(("engine", engine_key))
                if engine is None:
                    engine = shared[("engine", engine_key)] = Engine.open(s)
                a = Assistant(
                    s,
                    engine=engine,
                    **({"llm": shared[("llm", llm_key)]} if ("llm", llm_key) in shared else {}),
                )
                engine.set_retrieval(s.retrieval)  # retrieval settings differ per configuration
                for q in qs[:warmup]:
                    a.search(q.question, who=who, k=10)
                    if not retrieval_only:
                        a.ask(q.question, who=who)
                recs = ev.run_config(
                    name,
                    a,
                    qs,
                    who=who,
                    answer=not retrieval_only,
                    progress=bar.update,
                    concurrency=concurrency,
                )
                if not retrieval_only:
                    shared[("llm", llm_key)] = a.llm
                all_records[name] = recs
                metrics.append(ev.score(name, recs, shown=s.answering.sources, concurrency=concurrency))
        with (out / "answers.jsonl").open("w") as f:
            for recs in all_records.values():
                for r in recs:
                    f.write(json.dumps(r.as_json(), ensure_ascii=False) + "\n")
        (out / "metrics.json").write_text(json.dumps([m.__dict__ for m in metrics], indent=2))
        report = ev.table(metrics)
        (out / "report.md").write_text(f"Questions: {questions} ({len(qs)})\n\n" + report)
        ev.plots(metrics, all_records, out)
        typer.echo(report)
        typer.echo(f"wrote {out}/answers.jsonl, metrics.json, report.md, hit_at_k.png, latency.png")
        for e in {id(v): v for k, v in shared.items() if k[0] == "engine"}.values():
            e.close()
