"""CLI commands that need the model: ``ask``, ``summarize`` and ``demo`` (mounted by ``assistant.cli``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from assistant.errors import InputError
from assistant.settings import Settings

SAMPLE_DOCS = Path(__file__).parent / "sample_docs"
DEMO_QUESTIONS = [
    ("bob@northwind.example", "How many weeks of paid parental leave does a primary caregiver get?"),
    ("bob@northwind.example", "How do I roll back a bad deploy?"),
    ("bob@northwind.example", "What is the hotel limit per night in New York?"),
    ("bob@northwind.example", "Can I bring my dog to the office?"),
    ("bob@northwind.example", "What is the salary band for an L5 engineer?"),
    ("alice@northwind.example", "What is the salary band for an L5 engineer?"),
]


MAX_QUESTION_CHARS = 2000  # what the answerer reads of a question (assistant.answering)


def check_question(question: str) -> None:
    """Refuse, before any model loads, a question that is empty or longer than the answerer reads."""
    words = " ".join(question.split())
    if not words:
        raise InputError(
            'The question is empty. Ask something, e.g. assistant ask "How do I request a laptop?"'
        )
    if len(words) > MAX_QUESTION_CHARS:
        raise InputError(
            f"The question is {len(words):,} characters; the limit is {MAX_QUESTION_CHARS:,}. Ask the "
            "question itself (to search a document's text, ingest the document)."
        )


def _print_answer(ans, *, as_json: bool, streamed: bool = False) -> None:
    if as_json:
        typer.echo(json.dumps(ans.as_json(), indent=2, ensure_ascii=False))
        return
    if streamed:
        typer.echo("\n")
    typer.secho(ans.answer, bold=True)
    for c in ans.citations:
        typer.echo(f"  [{c.n}] {c.title} — {c.url or c.path}")
        typer.echo(f"      “{c.quote[:300]}”")
    t = ans.timings_ms
    typer.echo(
        f"  ({t.get('total', 0):.0f} ms: retrieve {t.get('retrieve', 0):.0f}, generate {t.get('generate', 0):.0f})",
        err=True,
    )


def register(app: typer.Typer, get_settings: Callable[[], Settings]) -> None:
    from assistant.cli_context import require_documents
    from assistant.cli_context import who as _who

    def build():
        from assistant.service import Assistant

        return Assistant(get_settings())

    @app.command()
    def ask(
        question: str = typer.Argument(..., help="your question, in plain words"),
        as_email: str | None = typer.Option(None, "--as", help="answer with this person's permissions"),
        group: list[str] = typer.Option([], "--group", help="groups of the --as person (repeatable)"),
        adapter: str | None = typer.Option(
            None, "--adapter", help="LoRA adapter name ('none' for the base model)"
        ),
        as_json: bool = typer.Option(False, "--json", help="print the answer contract as JSON"),
        stream: bool = typer.Option(True, "--stream/--no-stream", help="show the model's words as they come"),
    ) -> None:
        """Answer a question from the documents, with verified citations (or refuse)."""
        check_question(question)
        who = _who(as_email, group)
        with build() as a:
            require_documents(a.engine)
            on_delta = None
            if stream and not as_json and sys.stdout.isatty():

                def on_delta(d: str) -> None:
                    typer.secho(d, nl=False, dim=True)

            ans = a.ask(question, who=who, adapter=adapter, on_delta=on_delta)
        _print_answer(ans, as_json=as_json, streamed=on_delta is not None)

    @app.command()
    def summarize(
        scope: str | None = typer.Option(None, "--scope", help="source, path prefix, or slack:#channel"),
        since: str | None = typer.Option(None, "--since", help="time window: 7d, 24h, 2w or a date"),
        as_email: str | None = typer.Option(None, "--as", help="only documents this person can read"),
        group: list[str] = typer.Option([], "--group"),
        max_docs: int = typer.Option(12, "--max-docs", min=1, max=200),
        no_llm: bool = typer.Option(False, "--no-llm", help="extractive only (fast)"),
        focus: str | None = typer.Option(
            None, "--focus", help="steer what is chosen, e.g. 'for a weekly report to new managers'"
        ),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Summarize what a scope contains, or what changed in it within a time window."""
        from assistant.summaries import parse_since

        def progress(line: str) -> None:
            if sys.stderr.isatty():  # for a person at a terminal, not for pipes and scripts
                typer.secho(line, err=True, dim=True)

        who = _who(as_email, group)
        with build() as a:
            require_documents(a.engine)
            progress("summarize: loading the index…")
            s = a.summarize(
                who=who,
                scope=scope,
                since=parse_since(since),
                use_llm=not no_llm,
                max_docs=max_docs,
                focus=focus,
                progress=progress,
            )
        typer.echo(json.dumps(s.as_json(), indent=2, ensure_ascii=False) if as_json else s.as_text())

    @app.command()
    def demo(questions: bool = typer.Option(True, "--questions/--no-questions")) -> None:
        """Ingest the bundled sample documents if needed, then ask a few questions and summarize."""
        from assistant.documents import Principals
        from connectors.local_files import LocalFilesConnector

        with build() as a:
            rep = a.engine.sync(
                LocalFilesConnector(SAMPLE_DOCS, name="sample", acl_file=SAMPLE_DOCS / "acl.toml")
            )
            typer.echo(rep.line())
            for email, q in DEMO_QUESTIONS if questions else []:
                typer.secho(f"\n{email} asks: {q}", fg="cyan")
                _print_answer(a.ask(q, who=Principals(email=email)), as_json=False)
            typer.secho("\nSummary of the engineering folder:", fg="cyan")
            typer.echo(
                a.summarize(who=Principals(email="bob@northwind.example"), scope="engineering/").as_text()
            )
