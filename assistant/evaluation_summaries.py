"""Scoring summaries on a task set: key-point coverage, length, verified share and time per task.

A task (one JSON line) names a ``scope`` (a path prefix as stored, e.g.
"content/benefits-pay-perks/benefits-perks/travel"), an optional ``focus`` ("for a weekly report to new
managers") and 5–6 ``points``, each with 1–3 ``must`` strings copied from the pages. A point is
covered when all its strings appear in the summary's bullets (case-insensitive). Per task we record
coverage, words, sentences checked/verified and seconds; the table reports means and the worst time.
``assistant eval-summaries TASKS.jsonl`` runs it (mounted by the CLI); ``missing_strings`` checks
that a task set is fair (every string is on some page of its scope).

Not done: judging fluency or order — coverage of what a careful reader would report is the target.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from assistant.settings import Settings


@dataclass
class TaskResult:
    id: str
    scope: str
    covered: int
    points: int
    words: int
    checked: int
    verified: int
    seconds: float
    missed: list[str]
    summary: str
    seconds_min: float = (
        0.0  # with --repeat N: the fastest and slowest of N warm runs (``seconds`` is the median)
    )
    seconds_max: float = 0.0
    runs: int = 1

    @property
    def coverage(self) -> float:
        return self.covered / (self.points or 1)


def load_tasks(path: Path) -> list[dict]:
    tasks = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if line.strip():
            t = json.loads(line)
            if not t.get("scope") or not t.get("points"):
                raise ValueError(f"{path}:{n}: a task needs 'scope' and 'points'")
            tasks.append(t)
    return tasks


def covered(text: str, point: dict) -> bool:
    low = text.lower()
    return all(s.lower() in low for s in point["must"])


def run_task(assistant, task: dict, *, who, use_focus: bool = True, use_llm: bool = False) -> TaskResult:
    t0 = time.perf_counter()
    s = assistant.summarize(
        who=who,
        scope=task["scope"],
        use_llm=use_llm,
        max_docs=50,
        **({"focus": task.get("focus")} if use_focus and task.get("focus") else {}),
    )
    secs = time.perf_counter() - t0
    body = s.body() if hasattr(s, "body") else "\n".join(f"{b.title}: {b.text}" for b in s.bullets)
    hits = [covered(body, p) for p in task["points"]]
    return TaskResult(
        task.get("id", task["scope"]),
        task["scope"],
        sum(hits),
        len(hits),
        getattr(s, "words", len(body.split())),
        getattr(s, "checked", 0),
        getattr(s, "verified", 0),
        round(secs, 2),
        [p.get("point", str(p["must"])) for p, h in zip(task["points"], hits) if not h],
        s.as_text(),
    )


def run_repeated(assistant, task: dict, *, repeat: int, **kw) -> TaskResult:
    """One warm-up run, then ``repeat`` timed runs: the last run's result with the median seconds and
    the min–max (a cold first run — model compile, caches — never mixes with the warm ones)."""
    if repeat <= 1:
        return run_task(assistant, task, **kw)
    run_task(assistant, task, **kw)
    runs = [run_task(assistant, task, **kw) for _ in range(repeat)]
    secs = sorted(r.seconds for r in runs)
    last = runs[-1]
    last.seconds, last.seconds_min, last.seconds_max, last.runs = (
        round(statistics.median(secs), 2),
        secs[0],
        secs[-1],
        repeat,
    )
    return last


def table(results: list[TaskResult]) -> str:
    lines = ["| task | coverage | words | verified | seconds |", "|---|---|---|---|---|"]
    for r in results:
        secs = f"{r.seconds:.1f}" + (
            f" ({r.seconds_min:.1f}–{r.seconds_max:.1f}, {r.runs} runs)" if r.runs > 1 else ""
        )
        lines.append(f"| {r.id} | {r.covered}/{r.points} | {r.words} | {r.verified}/{r.checked} | {secs} |")
    n = len(results) or 1
    cov = sum(r.coverage for r in results) / n
    ver = sum(r.verified for r in results) / (sum(r.checked for r in results) or 1)
    lines.append(
        f"| **mean** | **{cov:.2f}** | {sum(r.words for r in results) / n:.0f} (max {max((r.words for r in results), default=0)}) "
        f"| {ver:.2f} | {sum(r.seconds for r in results) / n:.1f} (max {max((r.seconds for r in results), default=0):.1f}) |"
    )
    return "\n".join(lines)


def missing_strings(store, tasks: list[dict]) -> list[str]:
    """'task: string' for every must-string that no page of the task's scope contains (an unfair task)."""
    from assistant.summary_changes import document_text
    from assistant.summary_facts import clean_markdown

    out = []
    for t in tasks:
        pages = [document_text(store.chunks_of(d.key)) for d in store.iter_documents(path_prefix=t["scope"])]
        text = "\n".join(pages + [clean_markdown(p) for p in pages]).lower()
        out += [
            f"{t.get('id', t['scope'])}: {s!r}"
            for p in t["points"]
            for s in p["must"]
            if s.lower() not in text
        ]
    return out


def register(app: typer.Typer, get_settings: Callable[[], Settings]) -> None:
    from assistant.cli_context import who as _who

    @app.command("eval-summaries")
    def eval_summaries(
        tasks_file: Path = typer.Argument(..., help="JSONL summary tasks (scope, focus, points)"),
        out: Path | None = typer.Option(None, "--out", help="write results.jsonl and report.md here"),
        no_focus: bool = typer.Option(False, "--no-focus", help="ignore the tasks' focus"),
        llm: bool = typer.Option(
            False, "--llm", help="let a capable model write (summaries.write_with_model)"
        ),
        as_email: str | None = typer.Option(None, "--as"),
        show: bool = typer.Option(False, "--show", help="print each summary"),
        repeat: int = typer.Option(
            1, "--repeat", min=1, help="timed runs per task after one warm-up run (median, min–max)"
        ),
        only: list[str] = typer.Option(  # noqa: B008
            [], "--task", help="run only the task with this id (repeatable)"
        ),
    ) -> None:
        """Score summaries on a task set: key-point coverage, words, verified sentences, seconds."""
        from assistant.service import Assistant

        tasks = [t for t in load_tasks(tasks_file) if not only or t.get("id") in only]
        results = []
        settings = get_settings()
        from assistant.summaries import model_writes

        writer = (
            f"model {settings.llm.model} at {settings.llm.endpoint or 'in-process'}, adapter {settings.llm.adapter}"
            if llm and model_writes(settings)
            else "extractive"
        )
        typer.echo(f"eval-summaries: {len(tasks)} tasks, {writer}", err=True)
        with Assistant(settings) as a:
            bad = missing_strings(a.engine.store, tasks)
            if bad:
                typer.echo("warning: strings no page of the scope contains: " + "; ".join(bad), err=True)
            a.engine.embedder.embed(["warm up"])  # model loading is not part of a summary's time
            if (
                llm and tasks and repeat == 1
            ):  # the model's first request (server warm-up) is not timed either
                run_task(a, tasks[0], who=_who(as_email, []), use_focus=not no_focus, use_llm=llm)
            for t in tasks:
                r = run_repeated(
                    a, t, repeat=repeat, who=_who(as_email, []), use_focus=not no_focus, use_llm=llm
                )
                results.append(r)
                typer.echo(
                    f"{r.id}: {r.covered}/{r.points} covered, {r.words} words, "
                    f"{r.verified}/{r.checked} verified, {r.seconds:.1f} s",
                    err=True,
                )
                if show:
                    typer.echo(r.summary + ("\nmissed: " + "; ".join(r.missed) if r.missed else "") + "\n")
        report = table(results)
        typer.echo(report)
        if out:
            out.mkdir(parents=True, exist_ok=True)
            with (out / "summary_results.jsonl").open("w") as f:
                for r in results:
                    f.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")
            (out / "summary_report.md").write_text(
                f"Tasks: {tasks_file} ({len(tasks)}); writer: {writer}\n\n{report}\n"
            )
