"""The ``assistant`` command with bad or surprising input: clear errors, no echoed secrets, no noise.

Subprocesses, as a user runs the command. Every case here fails before an embedding model or LLM is
loaded, except the one end-to-end ACL re-run, which uses the real bundled embedder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_DOCS

REPO = Path(__file__).resolve().parents[1]


def run(args, *, data_dir: Path | None, cwd: Path | None = None, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    e.update({"ASSISTANT_LOG_LEVEL": "INFO", "PYTHONPATH": str(REPO), **env})
    if data_dir is not None:
        e["ASSISTANT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=600,
        cwd=cwd or REPO,
        check=False,
    )


def _ingested(tmp_path) -> Path:
    """A data dir holding the sample docs (in-process, hash embedder: fast)."""
    from assistant.engine import Engine
    from assistant.local_ingest import plan_local_ingest
    from tests.conftest import make_settings
    from tests.fakes.hash_embedder import HashEmbedder

    data = tmp_path / "data"
    eng = Engine.open(make_settings(data), embedder=HashEmbedder())
    plan_local_ingest(eng.store, SAMPLE_DOCS, source="sample", acl_file=SAMPLE_DOCS / "acl.toml").run(eng)
    eng.close()
    return data


@pytest.mark.parametrize(
    "args, words",
    [
        (["search", "parental leave", "--mode", "semantic"], ["'semantic'", "hybrid, dense, keyword"]),
        (["search", "parental leave", "--as", "not-an-email"], ["'not-an-email'", "not an email"]),
        (["ask", "How long is parental leave?", "--as", "bob"], ["not an email"]),
        (["ask", "   "], ["question is empty"]),
        (["ask", "why " * 700], ["2,799 characters", "limit is 2,000"]),
        (["search", ""], ["search text is empty"]),
        (["ingest", "--source", "gdrive", "--acl-file", "acl.toml"], ["--acl-file apply to a folder"]),
    ],
)
def test_bad_arguments_are_refused_with_what_to_do(tmp_path, args, words):
    p = run(args, data_dir=tmp_path / "data")
    assert p.returncode == 2, p.stdout + p.stderr
    for w in words:
        assert w in p.stderr
    assert "Traceback" not in p.stderr and "Loading" not in p.stderr and "converting" not in p.stderr


def test_an_empty_index_says_which_data_dir_and_how_to_ingest(tmp_path):
    here = tmp_path / "elsewhere"
    here.mkdir()
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    p = run(["status", "--json"], data_dir=None, cwd=here, **env)
    assert json.loads(p.stdout)["data_dir"] == str(tmp_path / "xdg" / "workplace-assistant")
    assert not (here / "data").exists()  # not the working directory any more
    for cmd in (["search", "parental leave"], ["ask", "How long is parental leave?"]):
        p = run(cmd, data_dir=None, cwd=here, **env)
        assert p.returncode == 2
        assert str(tmp_path / "xdg" / "workplace-assistant") in p.stderr and "assistant ingest" in p.stderr


def test_status_shows_rule_coverage_and_no_library_noise(tmp_path):
    data = _ingested(tmp_path)
    p = run(["status"], data_dir=data)
    assert p.returncode == 0, p.stderr
    assert f"folder {SAMPLE_DOCS}" in p.stdout
    assert "rule 'restricted/*' -> alice@northwind.example: 1 file" in p.stdout
    assert "faiss" not in p.stderr and p.stderr.strip() == ""


def test_same_name_folder_and_changed_rules_are_refused_by_the_command(tmp_path):
    data = _ingested(tmp_path)
    other = tmp_path / "x" / "sample"
    other.mkdir(parents=True)
    (other / "a.md").write_text("# A\n\ntext\n")
    p = run(["ingest", str(other)], data_dir=data)
    assert p.returncode == 2 and str(SAMPLE_DOCS) in p.stderr and "--replace-source" in p.stderr
    p = run(
        [
            "ingest",
            str(SAMPLE_DOCS),
            "--source",
            "sample",
            "--drop-acl",
            "--acl-file",
            str(SAMPLE_DOCS / "acl.toml"),
        ],
        data_dir=data,
    )
    assert p.returncode == 2 and "contradict" in p.stderr
    bad = tmp_path / "bad-acl.toml"
    bad.write_text('[[rule]]\nglob = "restricted/*"\npublic = "false"\n')
    p = run(["ingest", str(SAMPLE_DOCS), "--source", "sample", "--acl-file", str(bad)], data_dir=data)
    assert p.returncode == 2 and "public must be true or false" in p.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    p = run(["ingest", str(empty)], data_dir=data)
    assert p.returncode == 2 and f"No supported files found in {empty}" in p.stderr


def test_help_has_no_type_placeholders():
    for cmd in ([], ["ingest"], ["search"], ["ask"], ["summarize"], ["status"], ["slack"], ["schedule"]):
        p = run([*cmd, "--help"], data_dir=None, COLUMNS="200")
        assert p.returncode == 0, p.stderr
        assert "<bool>" not in p.stdout and "<str>" not in p.stdout and "<int" not in p.stdout, (
            cmd,
            p.stdout,
        )
    p = run(["ingest", "--help"], data_dir=None, COLUMNS="200")
    assert "--replace-acl" in p.stdout and "--drop-acl" in p.stdout and "--replace-source" in p.stdout


def test_library_verbosity_is_set_before_they_load():
    code = (
        "import logging, warnings; from assistant.cli import _quiet_libraries; _quiet_libraries('INFO');"
        "import transformers; from transformers.utils import logging as hl;"
        "print(hl.get_verbosity(), hl.is_progress_bar_enabled(), logging.getLogger('faiss').level)"
    )
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")
    }
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**e, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )
    assert p.stdout.split() == ["40", "False", "40"], p.stderr


def test_rerun_without_acl_file_does_not_publish_the_restricted_file(tmp_path):
    """End to end with the real embedder: the issue's report (`0 added, 1 updated`, then the canary for anyone)."""
    data = tmp_path / "data"
    docs = tmp_path / "secdocs"
    (docs / "restricted").mkdir(parents=True)
    (docs / "restricted" / "canary.md").write_text(
        "# Board minutes\n\nThe acquisition codename is bluefin-9931.\n"
    )
    (docs / "open.md").write_text("# Cafeteria\n\nLunch is served from noon.\n")
    acl = tmp_path / "acl.toml"
    acl.write_text('[[rule]]\nglob = "restricted/**"\nusers = ["ceo@example.com"]\n')
    assert run(["ingest", str(docs), "--acl-file", str(acl)], data_dir=data).returncode == 0
    (docs / "restricted" / "canary.md").write_text(
        "# Board minutes\n\nThe acquisition codename is bluefin-9931!\n"
    )
    p = run(["ingest", str(docs)], data_dir=data)
    assert p.returncode == 0 and "1 updated" in p.stdout and "access:" not in p.stdout
    p = run(["search", "--json", "acquisition codename", "--as", "eve@example.com"], data_dir=data)
    assert "bluefin-9931" not in p.stdout
    p = run(["ingest", str(docs), "--drop-acl"], data_dir=data)
    assert p.returncode == 0 and "access: 1 file becomes public (was: ceo@example.com)" in p.stdout
