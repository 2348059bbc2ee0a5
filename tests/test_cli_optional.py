"""The CLI without an optional third-party dependency: its commands hide, the others still run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def _cli(code: str, tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "ASSISTANT_DATA_DIR": str(tmp_path)},
    )


def test_without_slack_bolt_the_other_commands_still_run(tmp_path):
    got = _cli(
        "import sys; sys.modules['slack_bolt'] = None\n"
        "from assistant.cli import main\n"
        "sys.argv = ['assistant', 'status', '--json']; main()",
        tmp_path,
    )
    assert got.returncode == 0, got.stderr
    assert '"documents": 0' in got.stdout


def test_a_feature_whose_dependency_is_missing_hides_only_itself(tmp_path):
    (tmp_path / "feature_x.py").write_text("import not_installed_anywhere_xyz\n")
    (tmp_path / "feature_y.py").write_text("import assistant.no_such_module\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from assistant import cli

        cli._mount_optional(("feature_x",))  # a third-party module is missing: hidden, no error
        with pytest.raises(ModuleNotFoundError):
            cli._mount_optional(("feature_y",))  # one of ours is missing: a bug, raised
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("feature_x", None)
        sys.modules.pop("feature_y", None)
