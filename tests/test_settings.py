"""Settings: files, environment, validation messages, and the shipped default.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import ConfigError
from assistant.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]


def test_default_toml_is_complete_and_current(tmp_path):
    out = tmp_path / "default.toml"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_default_config.py"), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # this checkout's settings
    assert out.read_text() == (REPO / "config" / "default.toml").read_text(), (
        "config/default.toml is stale: run python scripts/gen_default_config.py"
    )
    assert load_settings([REPO / "config" / "default.toml"], environ={}) == Settings()


def test_environment_overrides_files_with_nested_names(tmp_path):
    f = tmp_path / "a.toml"
    f.write_text('[llm]\nendpoint = "http://file/v1"\nmax_new_tokens = 99\n')
    s = load_settings(
        [f],
        environ={
            "ASSISTANT_LLM__ENDPOINT": "http://env/v1",
            "ASSISTANT_CONNECTORS__SLACK__CHANNELS": '["eng", "general"]',
        },
    )
    assert s.llm.endpoint == "http://env/v1" and s.llm.max_new_tokens == 99
    assert s.connectors.slack.channels == ["eng", "general"]


@pytest.mark.parametrize(
    "env, names",
    [
        ({"ASSISTANT_CHUNKING__MAX_TOKENS": "5"}, ["chunking.max_tokens", "'5'"]),
        ({"ASSISTANT_RETRIEVAL__MODE": "magic"}, ["retrieval.mode", "'magic'"]),
        ({"ASSISTANT_LLM__NOPE": "1"}, ["llm.nope"]),
        ({"ASSISTANT_LOG_LEVEL": "LOUD"}, ["log_level", "'LOUD'", "DEBUG, INFO"]),
    ],
)
def test_bad_values_name_the_field_and_the_value(env, names):
    with pytest.raises(ConfigError) as e:
        load_settings(environ=env)
    msg = str(e.value)
    for n in names:
        assert n in msg
    assert "config/default.toml" in msg


def test_secrets_are_never_echoed(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_settings(
            environ={"ASSISTANT_SLACK__BOT_TOKEN": "xoxb-very-secret", "ASSISTANT_SLACK__NOPE": "x"}
        )
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


@pytest.mark.parametrize(
    "env, key",
    [
        ({"ASSISTANT_SLACK__BOT_TOKN": "xoxb-1234-secret-canary"}, "slack.bot_tokn"),  # misspelled key
        ({"ASSISTANT_SLAK__BOT_TOKEN": "xoxb-1234-secret-canary"}, "slak"),  # misspelled section
        ({"ASSISTANT_LLM__API_KY": "sk-secret-canary"}, "llm.api_ky"),
        ({"ASSISTANT_LLM__NOTES": "plain-but-unknown-canary"}, "llm.notes"),  # any unknown key
        (
            {"ASSISTANT_CONNECTORS__ONEDRIVE__CLIENT_SECRT": "secret-canary"},
            "connectors.onedrive.client_secrt",
        ),
    ],
)
def test_unknown_keys_are_named_but_their_values_never_echoed(env, key):
    with pytest.raises(ConfigError) as e:
        load_settings(environ=env)
    msg = str(e.value)
    assert key in msg and "unknown setting" in msg
    assert "canary" not in msg


def test_misspelled_section_in_a_toml_file_is_not_echoed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[slakc]\nbot_token = "xoxb-toml-canary"\n\n[slack]\nsigning_secrit = "sig-canary"\n')
    with pytest.raises(ConfigError) as e:
        load_settings([f], environ={})
    msg = str(e.value)
    assert "slakc" in msg and "slack.signing_secrit" in msg and "did you mean slack.signing_secret" in msg
    assert "canary" not in msg


def test_json_looking_value_of_a_string_setting_is_kept_as_text():
    cred = '{"type": "service_account", "client_email": "x@y.iam.gserviceaccount.com"}'
    s = load_settings(
        environ={
            "ASSISTANT_CONNECTORS__GOOGLE_DRIVE__CREDENTIALS_JSON": cred,
            "ASSISTANT_CONNECTORS__SLACK__CHANNELS": '["eng"]',
            "ASSISTANT_LLM__API_KEY": "[not-json",
        }
    )
    assert s.connectors.google_drive.credentials_json.get_secret_value() == cred
    assert s.connectors.slack.channels == ["eng"] and s.llm.api_key.get_secret_value() == "[not-json"


def test_default_data_dir_is_per_user_not_the_working_directory(tmp_path):
    from assistant.settings import default_data_dir

    s = load_settings(environ={})
    assert s.data_dir == tmp_path / "xdg-data" / "workplace-assistant"  # conftest points XDG_DATA_HOME here
    assert default_data_dir({}, platform="linux") == Path.home() / ".local" / "share" / "workplace-assistant"
    assert default_data_dir({"XDG_DATA_HOME": "/x"}, platform="linux") == Path("/x/workplace-assistant")
    assert default_data_dir({}, platform="darwin").parts[-3:] == (
        "Library",
        "Application Support",
        "workplace-assistant",
    )
    assert (
        default_data_dir({"LOCALAPPDATA": "C:/U/AppData/Local"}, platform="win32").name
        == "workplace-assistant"
    )
    assert load_settings(environ={"ASSISTANT_DATA_DIR": str(tmp_path / "d")}).data_dir == tmp_path / "d"


def test_a_secret_put_where_a_section_belongs_is_not_echoed(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        'slack = "xoxb-section-canary"\n[connectors]\nslack = "xoxb-nested-canary"\n[llm]\nmax_new_tokens = "lots"\n'
    )
    with pytest.raises(ConfigError) as e:
        load_settings([f], environ={})
    msg = str(e.value)
    assert "canary" not in msg and "connectors.slack = <not shown>" in msg
    assert "llm.max_new_tokens = 'lots'" in msg  # an ordinary bad value is still shown
