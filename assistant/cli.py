"""The ``assistant`` command: the composition root that wires settings → engine → connectors → commands.

Settings are read once here (``--config`` files, then ``ASSISTANT_*`` variables) and passed down.
Feature packages (llm, finetune, slackbot, scheduler) add their own commands through a
``register(app, get_settings)`` function so this file stays a thin table of contents.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from assistant.errors import AssistantError
from assistant.settings import Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Workplace document Q&A: ingest sources, search, ask with citations, summarize.")

_state: dict = {"config": [], "settings": None}


def get_settings() -> Settings:
    if _state["settings"] is None:
        _state["settings"] = load_settings(_state["config"] or None)
        logging.basicConfig(level=_state["settings"].log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return _state["settings"]


def open_engine():
    from assistant.engine import Engine

    return Engine.open(get_settings())


@app.callback()
def _main(config: list[Path] = typer.Option([], "--config", "-c", help="TOML settings file(s); later ones win",
                                            exists=False)) -> None:
    _state["config"] = list(config)
    _state["settings"] = None


def _who(as_email: Optional[str], groups: list[str]):
    from assistant.documents import Principals

    if as_email is None and not groups:
        return Principals(everything=True)
    return Principals(email=as_email, groups=frozenset(groups))


def _progress_bar(desc: str):
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit="doc", disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)
    counts: dict[str, int] = {}

    def tick(n: int, what: str) -> None:
        counts[what] = counts.get(what, 0) + n
        bar.update(n)
        bar.set_postfix(counts, refresh=False)

    return bar, tick


@app.command()
def ingest(path: Optional[Path] = typer.Argument(None, help="a folder to ingest (omit with --source NAME for a configured connector)"),
           source: Optional[str] = typer.Option(None, "--source", "-s", help="source name; or gdrive | onedrive | slack without PATH"),
           acl_file: Optional[Path] = typer.Option(None, "--acl-file", help="TOML rules mapping path globs to readers"),
           full: bool = typer.Option(False, "--full", help="ignore the saved cursor and re-enumerate everything"),
           as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Ingest a folder or a configured source into the index (incremental and resumable)."""
    from assistant.registry import build_connector

    settings = get_settings()
    connector = build_connector(settings, path=path, source=source, acl_file=acl_file)
    with open_engine() as engine:
        bar, tick = _progress_bar(f"ingest {connector.name}")
        try:
            rep = engine.sync(connector, full=full, progress=tick)
        finally:
            bar.close()
    if as_json:
        typer.echo(json.dumps(rep.as_dict(), indent=2))
        return
    typer.echo(rep.line())
    for f in rep.failures[:20]:
        typer.echo(f"  failed: {f.item_id} ({f.stage}): {f.reason}", err=True)
    if len(rep.failures) > 20:
        typer.echo(f"  … and {len(rep.failures) - 20} more; see `assistant status`", err=True)


@app.command()
def search(query: str = typer.Argument(..., help="what to look for"),
           k: int = typer.Option(5, "-k", min=1, max=100, help="number of results"),
           as_email: Optional[str] = typer.Option(None, "--as", help="search as this person (their permissions)"),
           group: list[str] = typer.Option([], "--group", help="groups of the --as person (repeatable)"),
           mode: Optional[str] = typer.Option(None, "--mode", help="hybrid | dense | keyword"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Hybrid search over everything the asker may read."""
    with open_engine() as engine:
        hits = engine.search(query, who=_who(as_email, group), k=k, mode=mode)
    if as_json:
        typer.echo(json.dumps([h.as_json() for h in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        typer.echo("No results" + (f" that {as_email} can read." if as_email else "."))
    for h in hits:
        snippet = " ".join(h.text.split())[:200]
        typer.echo(f"{h.rank}. {h.title}  [{h.source}:{h.path}]  score={h.score:.4f}\n   {snippet}")


@app.command()
def status(as_json: bool = typer.Option(False, "--json")) -> None:
    """Documents, chunks, sources, cursors, failures, index size, last sync."""
    with open_engine() as engine:
        st = engine.status()
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    typer.echo(f"data dir:   {st['data_dir']}")
    typer.echo(f"documents:  {st['documents']}   chunks: {st['chunks']}   "
               f"index: {st['index']['vectors']} vectors ({st['index']['kind']}, {st['index']['bytes'] / 1e6:.1f} MB, "
               f"{'consistent' if st['index']['consistent'] else 'INCONSISTENT'})")
    for src, n in st["sources"].items():
        run = st["last_sync"].get(src, {})
        typer.echo(f"  {src}: {n} documents; last sync {run.get('status', '?')} "
                   f"({run.get('added', 0)} added, {run.get('updated', 0)} updated, {run.get('deleted', 0)} deleted, "
                   f"{run.get('failed', 0)} failed, {run.get('seconds', 0):.1f} s)")
    if st["failures"]:
        typer.echo(f"failures: {len(st['failures'])}")
        for f in st["failures"][:20]:
            typer.echo(f"  {f['source']}:{f['item_id']} ({f['stage']}, {f['attempts']}x): {f['reason']}")


def _mount_optional() -> None:
    """Feature packages add their commands; a missing optional dependency only hides its commands."""
    import importlib

    for mod in ("assistant.commands", "assistant.llm.cli", "assistant.finetune.cli", "assistant.slackbot.cli",
                "assistant.scheduler_cli", "assistant.evaluation_cli", "assistant.evaluation_summaries"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("assistant"):
                continue
            raise
        m.register(app, get_settings)


_mount_optional()


def main() -> None:
    try:
        app()
    except AssistantError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
