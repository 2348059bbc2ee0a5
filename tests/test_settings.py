"""Settings: files, environment, validation messages, and the shipped default.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import ConfigError
from assistant.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_default_toml_is_complete_and_current(tmp_path):
    out = tmp_path / "default.toml"
    subprocess.run([sys.executable, str(REPO / "scripts" / "gen_default_config.py"), str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == (REPO / "config" / "default.toml").read_text(), \
        "config/default.toml is stale: run python scripts/gen_default_config.py"
    assert load_settings([REPO / "config" / "default.toml"], environ={}) == Settings()


def test_environment_overrides_files_with_nested_names(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text('[llm]\nendpoint = "http://file/v1"\nmax_new_tokens = 99\n')
    s = load_settings([f], environ={"ASSISTANT_LLM__ENDPOINT": "http://env/v1",
                                    "ASSISTANT_CONNECTORS__SLACK__CHANNELS": '["eng", "general"]'})
    assert s.llm.endpoint == "http://env/v1" and s.llm.max_new_tokens == 99
    assert s.connectors.slack.channels == ["eng", "general"]


@pytest.mark.parametrize("env, names", [
    ({"ASSISTANT_CHUNKING__MAX_TOKENS": "5"}, ["chunking.max_tokens", "'5'"]),
    ({"ASSISTANT_RETRIEVAL__MODE": "magic"}, ["retrieval.mode", "'magic'"]),
    ({"ASSISTANT_LLM__NOPE": "1"}, ["llm.nope"]),
])
def test_bad_values_name_the_field_and_the_value(env, names):
    with pytest.raises(ConfigError) as e:
        load_settings(environ=env)
    msg = str(e.value)
    for n in names:
        assert n in msg
    assert "config/default.toml" in msg


def test_secrets_are_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(environ={"ASSISTANT_SLACK__BOT_TOKEN": "xoxb-very-secret", "ASSISTANT_SLACK__NOPE": "x"})
    assert "xoxb-very-secret" not in str(e.value)
    s = load_settings(environ={"ASSISTANT_SLACK__BOT_TOKEN": "xoxb-very-secret"})
    assert "xoxb-very-secret" not in repr(s) and "xoxb-very-secret" not in str(s.model_dump())


def test_missing_or_broken_config_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings([tmp_path / "nope.toml"], environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[llm\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings([bad], environ={})
