"""The `assistant` command as a user runs it (subprocesses, real models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SAMPLE_DOCS


def run(args, data_dir: Path, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    e.update({"ASSISTANT_DATA_DIR": str(data_dir), "ASSISTANT_LOG_LEVEL": "WARNING", **env})
    return subprocess.run(
        [sys.executable, "-m", "assistant.cli", *args], capture_output=True, text=True, env=e, timeout=600
    )


def test_ingest_search_status_round_trip(tmp_path):
    data = tmp_path / "data"
    p = run(
        ["ingest", str(SAMPLE_DOCS), "--source", "sample", "--acl-file", str(SAMPLE_DOCS / "acl.toml")], data
    )
    assert p.returncode == 0, p.stderr
    assert "14 added" in p.stdout and "0 failed" in p.stdout
    p = run(
        ["search", "--json", "how do I get a new laptop", "-k", "3", "--as", "bob@northwind.example"], data
    )
    assert p.returncode == 0, p.stderr
    hits = json.loads(p.stdout)
    assert [set(h) for h in hits][0] == {"rank", "doc_id", "source", "path", "title", "url", "score", "text"}
    assert hits[0]["path"] == "it/laptop-request.txt" and hits[0]["rank"] == 1
    p = run(["status", "--json"], data)
    st = json.loads(p.stdout)
    assert st["documents"] == 14 and st["sources"] == {"sample": 14} and st["index"]["consistent"]
    assert st["last_sync"]["sample"]["added"] == 14


def test_bad_setting_exits_with_a_clear_message(tmp_path):
    p = run(["status"], tmp_path, ASSISTANT_RETRIEVAL__MODE="fuzzy")
    assert p.returncode == 2
    assert "retrieval.mode" in p.stderr and "'fuzzy'" in p.stderr and "Traceback" not in p.stderr


def test_missing_folder_and_unknown_source_say_what_to_do(tmp_path):
    p = run(["ingest", str(tmp_path / "nope")], tmp_path / "data")
    assert p.returncode == 2 and "is not a folder" in p.stderr
    p = run(["ingest", "--source", "dropbox"], tmp_path / "data")
    assert p.returncode == 2 and "gdrive, onedrive, slack" in p.stderr
    p = run(["ingest", "--source", "gdrive"], tmp_path / "data")
    assert p.returncode == 2 and "enabled = true" in p.stderr
