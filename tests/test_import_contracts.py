"""The layout rules of DESIGN.md, checked on the source (AST only: nothing is imported, so it is fast).

1. Connectors import only ``assistant.documents``, ``assistant.errors`` and ``assistant.parsing``
   from the core (plus ``connectors.base``, their own package and third-party libraries).
2. Reports, the scheduler and cadences (``assistant/reports/``) never import ``assistant.slackbot``,
   ``slack_sdk`` or ``slack_bolt``: Slack has one home, ``assistant/slackbot/``.
3. Only ``assistant/settings.py`` reads the environment (``os.environ``, ``os.getenv``).
4. The package never imports ``tests`` — directly, or through a script it runs.

Imports inside functions count (a lazy import is still a dependency). Known violations are listed in
``ALLOWED_*`` below with the reason; each entry is checked to still exist, so fixing one makes this
test fail until the entry is removed (the lists only shrink).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("assistant", "connectors")
CONNECTOR_MAY_IMPORT = {"assistant.documents", "assistant.errors", "assistant.parsing"}
SLACK_FREE = ("assistant/reports",)
SLACK_MODULES = ("assistant.slackbot", "slack_bolt", "slack_sdk")

# (file, what) pairs known today; the lead empties these as the files' owners fix them.
ALLOWED_CONNECTOR_IMPORTS: set[tuple[str, str]] = set()
ALLOWED_SLACK_IMPORTS: set[tuple[str, str]] = set()
ALLOWED_ENV_READS: set[tuple[str, str]] = set()
ALLOWED_TESTS_IMPORTS: set[tuple[str, str]] = set()


def _files(root: str) -> list[Path]:
    return sorted(p for p in (REPO / root).rglob("*.py") if "__pycache__" not in p.parts)


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, module: str | None = None) -> set[str]:
    """Every module ``path`` imports, absolute, anywhere in the file (``from a import b`` gives a and a.b).
    ``module``: the file's dotted name (default: from its place in the repository)."""
    here = module or _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if a.name != "*"}
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
        ):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                out.add(node.args[0].value)
    return out


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _check(found: set[tuple[str, str]], allowed: set[tuple[str, str]]) -> None:
    new = sorted(found - allowed)
    assert not new, "new violations (fix them, don't allow-list them):\n" + "\n".join(
        f"  {f}: {w}" for f, w in new
    )
    fixed = sorted(allowed - found)
    assert not fixed, "fixed, so remove from the allow-list:\n" + "\n".join(f"  {f}: {w}" for f, w in fixed)


def test_connectors_import_only_the_data_model_errors_and_parsing():
    found = set()
    for path in _files("connectors"):
        own = ".".join(_module_name(path).split(".")[:2])  # connectors.slack, connectors.base, ...
        for name in imports(path):
            if _within(name, "assistant"):
                if not any(_within(name, ok) for ok in CONNECTOR_MAY_IMPORT) and name != "assistant":
                    found.add((_rel(path), name))
            elif _within(name, "connectors") and not (
                _within(name, own) or _within(name, "connectors.base") or name == "connectors"
            ):
                found.add((_rel(path), name))
    _check(found, ALLOWED_CONNECTOR_IMPORTS)


def test_reports_scheduler_and_cadence_never_import_slack():
    found = set()
    for root in SLACK_FREE:
        paths = _files(root)
        assert paths, f"{root} is gone: update SLACK_FREE"
        for path in paths:
            found |= {(_rel(path), n) for n in imports(path) if any(_within(n, m) for m in SLACK_MODULES)}
    _check(found, ALLOWED_SLACK_IMPORTS)


def _env_reads(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "putenv"):
            if isinstance(node.value, ast.Name) and node.value.id == "os":
                out.add(f"os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            out |= {
                f"from os import {a.name}" for a in node.names if a.name in ("environ", "getenv", "environb")
            }
    return out


def test_only_settings_reads_the_environment():
    found = {
        (_rel(p), what)
        for root in PACKAGES
        for p in _files(root)
        if _rel(p) != "assistant/settings.py"
        for what in _env_reads(p)
    }
    _check(found, ALLOWED_ENV_READS)


def _scripts_run_by(path: Path) -> set[Path]:
    """Scripts under scripts/ whose file name appears as a string in a module that uses runpy."""
    if not any(_within(n, "runpy") for n in imports(path)):
        return set()
    names = {
        node.value
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py")
    }
    return {REPO / "scripts" / Path(n).name for n in names if (REPO / "scripts" / Path(n).name).exists()}


def test_the_package_never_imports_tests():
    found = set()
    for root in PACKAGES:
        for path in _files(root):
            found |= {(_rel(path), n) for n in imports(path) if _within(n, "tests")}
            for script in _scripts_run_by(path):
                if any(_within(n, "tests") for n in imports(script)):
                    found.add((_rel(path), f"runs {_rel(script)}, which imports tests"))
    _check(found, ALLOWED_TESTS_IMPORTS)


@pytest.mark.parametrize(
    "source,expected",
    [
        ("from assistant.store import Store", {"assistant.store", "assistant.store.Store"}),
        ("def f():\n    import assistant.slackbot.app", {"assistant.slackbot.app"}),
        ("import importlib\nimportlib.import_module('assistant.cli')", {"importlib", "assistant.cli"}),
        ("from ..slackbot import identity", {"assistant.slackbot", "assistant.slackbot.identity"}),
        ("from . import base", {"assistant.reports", "assistant.reports.base"}),
    ],
)
def test_the_scan_sees_top_level_lazy_relative_and_importlib_imports(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert imports(path, module="assistant.reports.probe") == expected


def test_the_scan_sees_environment_reads(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text(
        "import os\nfrom os import getenv\ndef f():\n    return os.environ.get('X'), os.getenv('Y')\n"
    )
    assert _env_reads(path) == {"os.environ", "os.getenv", "from os import getenv"}


def test_nothing_imports_the_cli_back():
    """``assistant.cli`` is the composition root: it imports the command modules, never the reverse
    (what they share lives in ``assistant.cli_context``)."""
    found = {
        (_rel(p), n)
        for root in PACKAGES
        for p in _files(root)
        if _rel(p) not in ("assistant/cli.py", "assistant/__main__.py")
        for n in imports(p)
        if _within(n, "assistant.cli")
    }
    _check(found, set())
