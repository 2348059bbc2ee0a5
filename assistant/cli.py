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

import typer

from assistant import cli_context
from assistant.errors import AssistantError, InputError
from assistant.settings import Settings, load_settings


def _plain_help_types() -> None:
    """Help without ``<bool>``/``<str>`` placeholders: this typer release prints every parameter's Python
    type, flags included. Flags show no type; values show click's names (TEXT, INTEGER, PATH)."""
    from typer.core import TyperArgument, TyperOption

    names = {
        "str": "TEXT",
        "int": "INTEGER",
        "int range": "INTEGER",
        "float": "FLOAT",
        "float range": "FLOAT",
        "path": "PATH",
        "file": "FILE",
        "directory": "DIRECTORY",
        "bool": "",
    }

    def plain(self, ctx) -> str:
        label = self.display_type(ctx).strip("<>")
        if label.startswith("list[") and label.endswith("]"):
            label = label[5:-1]  # a repeatable option: its help says so
        return names.get(label, label.upper())

    def option_type(self, ctx):
        if self.metavar is not None:
            return self.metavar
        if self.is_flag or self.count:
            return None
        return plain(self, ctx) + ("..." if self.nargs != 1 else "")

    def argument_type(self, ctx):
        return self.metavar if self.metavar is not None else plain(self, ctx)

    TyperOption.display_type_rich = option_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = argument_type  # type: ignore[method-assign]


_plain_help_types()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Workplace document Q&A: ingest sources, search, ask with citations, summarize.",
)

_state = cli_context.state
_who = cli_context.who
require_documents = cli_context.require_documents


def get_settings() -> Settings:
    if _state["settings"] is None:
        _state["settings"] = load_settings(_state["config"] or None)
        logging.basicConfig(
            level=_state["settings"].log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        _quiet_libraries(_state["settings"].log_level)
    return _state["settings"]


# Libraries that talk on every command: faiss logs its CPU-feature probing at INFO, transformers warns
# about deprecations and draws a "Loading weights" bar, huggingface_hub draws download/conversion bars.
_CHATTY_LOGGERS = (
    "faiss",
    "transformers",
    "huggingface_hub",
    "sentence_transformers",
    "torch",
    "urllib3",
    "filelock",
    "httpx",
    "onnxruntime",
)


def _quiet_libraries(log_level: str) -> None:
    """Keep third-party chatter out of normal commands; ``log_level = "DEBUG"`` lets it all through.

    transformers and huggingface_hub read their verbosity and progress-bar switches once, when they are
    imported (later, lazily, when a model loads), so the switches are set here for this process only,
    without overriding a value the user exported.
    """
    if log_level.upper() == "DEBUG":
        return
    import warnings

    from assistant.settings import quiet_library_environment

    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_library_environment()
    for module in ("transformers", "torch", "sentence_transformers", "huggingface_hub", "peft"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=UserWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    if "transformers" in sys.modules:  # already imported: its switches were read; use its API instead
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def open_engine():
    from assistant.engine import Engine

    return Engine.open(get_settings())


@app.callback()
def _main(
    config: list[Path] = typer.Option(
        [], "--config", "-c", help="TOML settings file(s); later ones win", exists=False
    ),
) -> None:
    _state["config"] = list(config)
    _state["settings"] = None


SEARCH_MODES = ("hybrid", "dense", "keyword")


def _progress_bar(desc: str, *, total: int | None = None):
    """A bar over files (``total`` = files discovered) that advances as each file is written."""
    from tqdm import tqdm

    bar = tqdm(
        desc=desc, total=total, unit="file", disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True
    )
    counts: dict[str, int] = {}

    def tick(n: int, what: str) -> None:
        counts[what] = counts.get(what, 0) + n
        if bar.total is not None and bar.n + n > bar.total:
            bar.total = bar.n + n  # retried failures and deletions can add to what was discovered
        bar.update(n)
        bar.set_postfix(counts, refresh=False)

    return bar, tick


@app.command()
def ingest(
    path: Path | None = typer.Argument(
        None, help="a folder to ingest (omit with --source NAME for a configured connector)"
    ),
    source: str | None = typer.Option(
        None, "--source", "-s", help="source name; or gdrive | onedrive | slack without PATH"
    ),
    acl_file: Path | None = typer.Option(
        None,
        "--acl-file",
        help="TOML rules mapping path globs to readers; kept with the source for later runs",
    ),
    replace_acl: bool = typer.Option(
        False, "--replace-acl", help="apply --acl-file although the source was ingested with other rules"
    ),
    drop_acl: bool = typer.Option(
        False, "--drop-acl", help="remove the source's saved access rules: every file becomes public"
    ),
    replace_source: bool = typer.Option(
        False,
        "--replace-source",
        help="let this folder replace another folder ingested under the same source name",
    ),
    allow_empty: bool = typer.Option(
        False,
        "--allow-empty",
        help="ingest a folder with no supported files (removes the source's documents)",
    ),
    full: bool = typer.Option(False, "--full", help="ignore the saved cursor and re-enumerate everything"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="fetch, parse, chunk and embed on N Ray workers (a local Ray instance unless --ray-address; "
        "2 when only --ray-address is given; needs the [ray] extra)",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="run the workers on an existing Ray cluster: auto, HOST:PORT or ray://HOST:PORT",
    ),
) -> None:
    """Ingest a folder or a configured source into the index (incremental and resumable)."""
    from functools import partial

    from assistant.registry import build_connector

    ray_opts = None
    if workers is not None or ray_address is not None:
        from assistant.ingest_ray import RayOptions, check_address, import_ray

        import_ray()  # a missing install or a wrong address is reported before anything else happens
        if ray_address:
            check_address(ray_address)
        ray_opts = RayOptions(workers=workers or 2, address=ray_address)

    settings = get_settings()
    folder_flags = [
        f
        for f, on in (
            ("--acl-file", acl_file is not None),
            ("--replace-acl", replace_acl),
            ("--drop-acl", drop_acl),
            ("--replace-source", replace_source),
            ("--allow-empty", allow_empty),
        )
        if on
    ]
    if path is None and folder_flags:
        raise InputError(
            f"{', '.join(folder_flags)} apply to a folder (assistant ingest PATH …); a configured "
            "source takes its permissions from the source itself."
        )
    with open_engine() as engine:
        plan = None
        if path is not None:
            from assistant.local_ingest import plan_local_ingest

            plan = plan_local_ingest(
                engine.store,
                path,
                source=source,
                acl_file=acl_file,
                replace_acl=replace_acl,
                drop_acl=drop_acl,
                replace_source=replace_source,
                allow_empty=allow_empty,
            )
            connector = plan.connector
            for w in plan.warnings:
                typer.echo(w, err=True)
        else:
            connector = build_connector(settings, path=path, source=source, acl_file=acl_file)
        bar, tick = _progress_bar(f"ingest {connector.name}", total=plan.total_files if plan else None)
        try:
            rep = (
                plan.run(engine, full=full, progress=tick, ray=ray_opts)
                if plan
                else engine.sync(
                    connector,
                    full=full,
                    progress=tick,
                    ray=ray_opts,
                    connector_factory=partial(build_connector, settings, path=None, source=source),
                )
            )
        finally:
            bar.close()
    if as_json:
        out = rep.as_dict()
        if plan is not None:
            out["access_changes"] = plan.notices
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(rep.line())
    for line in plan.notices if plan else []:
        typer.echo(line)
    for f in rep.failures[:20]:
        typer.echo(f"  failed: {f.item_id} ({f.stage}): {f.reason}", err=True)
    if len(rep.failures) > 20:
        typer.echo(f"  … and {len(rep.failures) - 20} more; see `assistant status`", err=True)


@app.command()
def search(
    query: str = typer.Argument(..., help="what to look for"),
    k: int = typer.Option(5, "-k", min=1, max=100, help="number of results"),
    as_email: str | None = typer.Option(None, "--as", help="search as this person (their permissions)"),
    group: list[str] = typer.Option([], "--group", help="groups of the --as person (repeatable)"),
    mode: str | None = typer.Option(
        None, "--mode", metavar="[hybrid|dense|keyword]", help="retrieval mode (default: retrieval.mode)"
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Hybrid search over everything the asker may read."""
    if mode is not None and mode not in SEARCH_MODES:
        raise InputError(f"--mode {mode!r} is not a search mode; use one of: {', '.join(SEARCH_MODES)}.")
    if not query.strip():
        raise InputError(
            'The search text is empty; say what to look for, e.g. assistant search "parental leave".'
        )
    who = _who(as_email, group)
    with open_engine() as engine:
        require_documents(engine)
        hits = engine.search(query, who=who, k=k, mode=mode)
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
        st["source_settings"] = engine.store.all_source_settings()
        st["skipped"] = engine.store.skipped_counts()
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
        return
    typer.echo(f"data dir:   {st['data_dir']}")
    typer.echo(
        f"documents:  {st['documents']}   chunks: {st['chunks']}   "
        f"index: {st['index']['vectors']} vectors ({st['index']['kind']}, {st['index']['bytes'] / 1e6:.1f} MB, "
        f"{'consistent' if st['index']['consistent'] else 'INCONSISTENT'})"
    )
    for src, n in st["sources"].items():
        run = st["last_sync"].get(src, {})
        typer.echo(
            f"  {src}: {n} documents; last sync {run.get('status', '?')} "
            f"({run.get('added', 0)} added, {run.get('updated', 0)} updated, {run.get('deleted', 0)} deleted, "
            f"{run.get('failed', 0)} failed, {run.get('seconds', 0):.1f} s)"
        )
        if st["skipped"].get(src):
            typer.echo(
                f"    {st['skipped'][src]} files skipped: a type that cannot be read (not retried until they change)"
            )
        _print_source_settings(st["source_settings"].get(src))
    if st["failures"]:
        typer.echo(f"failures: {len(st['failures'])}")
        for f in st["failures"][:20]:
            typer.echo(f"  {f['source']}:{f['item_id']} ({f['stage']}, {f['attempts']}x): {f['reason']}")


def _print_source_settings(saved: dict | None) -> None:
    """The folder and access rules a source was ingested with, and how many files each rule covers."""
    if not saved or saved.get("kind") != "local":
        return
    typer.echo(f"    folder {saved['root']}; access rules: {saved.get('rules_from', 'saved rules')}")
    if not saved.get("rules"):
        typer.echo("    access: no rules, every file public")
    for c in saved.get("coverage", []):
        decides = f", decides {c['decides']}" if c["decides"] != c["matches"] else ""
        files = "1 file" if c["matches"] == 1 else f"{c['matches']} files"
        typer.echo(
            f"    rule {c['glob']!r} -> {c['readers']}: {files}{decides}"
            + ("   WARNING: matches no file" if c["matches"] == 0 else "")
        )


FEATURES = (
    "assistant.commands",
    "assistant.llm.cli",
    "assistant.finetune.cli",
    "assistant.slackbot.cli",
    "assistant.evaluation_cli",
    "assistant.evaluation_summaries",
)


def _mount_optional(modules: tuple[str, ...] = FEATURES) -> None:
    """Feature packages add their commands; a missing optional third-party dependency only hides
    that package's commands. A missing module of our own is a bug and is raised."""
    import importlib

    for mod in modules:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in ("assistant", "connectors"):
                raise
            logging.getLogger(__name__).debug("%s: commands hidden, %s is not installed", mod, e.name)
            continue
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
