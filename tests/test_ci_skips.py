"""In CI a test that would skip for want of ../shared fails; locally it still skips."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

_TEST = """
import pytest

def test_needs_the_corpus():
    pytest.skip("the handbook corpus (../shared/corpora/sourcegraph-handbook) is not present")

@pytest.mark.skipif(True, reason="handbook corpus not present")
def test_marked():
    pass

def test_other_skip():
    pytest.skip("an unrelated reason")
"""


def _pytest(tmp_path, ci: str | None) -> str:
    (tmp_path / "test_x.py").write_text(_TEST)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)} | ({"CI": ci} if ci is not None else {})
    got = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.ci_skips",
            "--rootdir",
            str(tmp_path),
            "-c",
            "/dev/null",
            str(tmp_path / "test_x.py"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    return got.stdout.strip().splitlines()[-1]


def test_in_ci_a_missing_corpus_fails(tmp_path):
    assert _pytest(tmp_path, "true").startswith(
        "1 failed, 1 skipped, 1 error"
    )  # a skipif fails in setup: an error


def test_locally_a_missing_corpus_skips(tmp_path):
    assert _pytest(tmp_path, None).startswith("3 skipped")
    assert _pytest(tmp_path, "false").startswith("3 skipped")
