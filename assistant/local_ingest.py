"""Ingesting a local folder safely: the folder and access rules stay with the source.

Part of the composition root (only ``assistant.cli`` imports it, which is why it may import
``connectors.local_files``). Before a folder is synced, ``plan_local_ingest`` compares what the
user asked for with what the index already holds for that source name and refuses, with a message
that says which flag to use, whenever the run would silently

- make files readable by more people: a re-run without ``--acl-file`` keeps the rules the source was
  ingested with; other rules need ``--replace-acl`` (or ``--drop-acl``), and the run says which files
  change visibility and to whom;
- delete another folder's documents: ``/b/docs`` is refused under the source name ``docs`` that
  ``/a/docs`` already uses, unless ``--replace-source`` (or another ``--source``) is given;
- empty a source because the folder is empty (an unmounted disk): refused without ``--allow-empty``.

An ACL file is validated by ``connectors.local_files.load_acl`` (types, known keys) and here (every
glob must match a file: an error, naming the glob). What it does not do: run the sync itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from assistant.errors import ConfigError
from assistant.parsing import SUPPORTED
from assistant.store import Store
from assistant.sync import SyncReport
from connectors.local_files import (
    LocalFilesConnector,
    load_acl,
    rules_as_json,
    rules_from_json,
    visibility_changes,
)

KIND = "local"


@dataclass
class LocalPlan:
    connector: LocalFilesConnector
    total_files: int
    notices: list[str] = field(default_factory=list)  # what becomes visible to whom (printed after the run)
    warnings: list[str] = field(default_factory=list)  # printed before the run
    saved: dict = field(default_factory=dict)  # written with the source after the run

    def save(self, store: Store) -> None:
        store.set_source_settings(self.connector.name, KIND, self.saved)

    def run(self, engine, *, full: bool = False, progress=None, ray=None) -> SyncReport:
        """Sync the folder into ``engine`` and keep its folder and rules with the source (also when the
        run fails half-way: the documents already written carry these rules). ``ray``: see ``Engine.sync``."""
        try:
            return engine.sync(self.connector, full=full, progress=progress, ray=ray)
        finally:
            self.save(engine.store)


def _flag_hint(name: str, path: Path) -> str:
    return (
        f"Give it its own name (assistant ingest {path} --source {name}-2), or replace the "
        f"indexed folder with this one (--replace-source)."
    )


def plan_local_ingest(
    store: Store,
    path: Path,
    *,
    source: str | None = None,
    acl_file: Path | None = None,
    replace_acl: bool = False,
    drop_acl: bool = False,
    replace_source: bool = False,
    allow_empty: bool = False,
) -> LocalPlan:
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{path} is not a folder. Give `assistant ingest` an existing folder.")
    name = source or root.name
    if acl_file is not None and drop_acl:
        raise ConfigError(
            "--acl-file and --drop-acl contradict each other: give new rules or drop them, not both."
        )
    if replace_acl and acl_file is None:
        raise ConfigError(
            "--replace-acl needs the new rules: add --acl-file FILE (or use --drop-acl to make the "
            "folder public)."
        )
    saved = store.get_source_settings(name)
    indexed = store.access_by_doc(name)

    # 1. the same source name for another folder (or another kind of source)
    if saved is not None and saved.get("kind") != KIND:
        raise ConfigError(
            f"The source name {name!r} is used by a {saved.get('kind')} source. "
            f"Ingest {root} under another name: --source NAME."
        )
    if saved is not None and Path(saved["root"]) != root and not replace_source:
        raise ConfigError(
            f"The source {name!r} already holds the folder {saved['root']} ({len(indexed)} documents); "
            f"ingesting {root} under the same name would delete them. " + _flag_hint(name, root)
        )

    # 2. the access rules: the saved ones unless new ones are given explicitly
    old_acl_file = saved.get("acl_file") if saved else None
    if acl_file is not None:
        rules, rules_from = load_acl(acl_file), f"the ACL file {acl_file}"
    elif drop_acl:
        rules, rules_from = [], "--drop-acl"
    elif saved is not None:
        rules, rules_from = rules_from_json(saved.get("rules", [])), saved.get("rules_from", "saved rules")
    else:
        rules, rules_from = [], "no ACL file (every file public)"
    exclude = Path(acl_file) if acl_file is not None else (Path(old_acl_file) if old_acl_file else None)
    conn = LocalFilesConnector(root, name=name, acl_file=exclude, rules=rules)
    paths = conn.paths()
    plan = LocalPlan(conn, total_files=len(paths))

    if saved is None and indexed and not replace_source and not set(paths) & set(indexed):
        raise ConfigError(
            f"The source {name!r} already holds {len(indexed)} documents, none of them from {root} "
            f"(it was ingested from another folder); ingesting this one would delete them. "
            + _flag_hint(name, root)
        )

    unmatched = conn.unmatched_globs()
    if unmatched:
        listing = ", ".join(repr(g) for g in unmatched)
        if acl_file is not None:
            raise ConfigError(
                f"ACL file {acl_file}: the glob(s) {listing} match no file in {root}, so the files "
                f"they were meant to restrict would stay public. Fix the glob (paths are relative to "
                f"the folder, e.g. 'restricted/**') or remove the rule."
            )
        plan.warnings.append(
            f"warning: saved access rule(s) {listing} of source {name!r} match no file in {root} any more."
        )

    # 3. what would change visibility, and whether the user said so
    lines, widened = visibility_changes(indexed, conn.accesses())
    explicit = replace_acl or drop_acl or replace_source
    rules_changed = saved is not None and rules_as_json(rules) != saved.get("rules", [])
    if (rules_changed or (saved is None and lines)) and not explicit:
        what = "\n".join(f"  {ln}" for ln in lines) or "  (no indexed file changes visibility)"
        if saved is None:
            raise ConfigError(
                f"The {len(indexed)} indexed documents of source {name!r} were ingested with other "
                f"access rules than {rules_from}; this run would change:\n{what}\n"
                f"Pass the ACL file they were ingested with (--acl-file), or apply the change with "
                f"--replace-acl --acl-file FILE (or --drop-acl to make them public)."
            )
        raise ConfigError(
            f"The access rules of source {name!r} differ from the ones it was ingested with "
            f"({len(saved.get('rules', []))} rules); this run would change:\n{what}\n"
            f"Re-run with --replace-acl to apply {rules_from} (or --drop-acl to make the folder "
            f"public), or leave out --acl-file to keep the saved rules."
        )
    plan.notices = [f"access: {ln}" for ln in lines]
    if widened and len(lines) > 1:
        plan.notices.append(f"access: {widened} file(s) readable by more people than before ({rules_from}).")

    # 4. an empty folder never empties a source by accident
    readable, others = conn.unsupported()
    if readable == 0 and not allow_empty:
        found = (
            f"{len(paths)} files, none of a supported type ({', '.join(others[:8])})"
            if paths
            else "it is empty"
        )
        more = (
            (
                f" The source {name!r} holds {len(indexed)} documents; to remove them because the folder is empty on "
                f"purpose, pass --allow-empty."
            )
            if indexed
            else ""
        )
        raise ConfigError(
            f"No supported files found in {root}: {found}. Supported: {SUPPORTED}; hidden files and "
            f"folders are skipped.{more}"
        )

    plan.saved = {
        "root": str(root),
        "acl_file": str(exclude.resolve()) if exclude else None,
        "rules_from": rules_from,
        "rules": rules_as_json(rules),
        "coverage": conn.rule_coverage(),
    }
    return plan
