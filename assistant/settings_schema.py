"""What ``assistant.settings`` learns from its own model: readable validation errors that never echo
a secret, and which settings take JSON from an environment variable.

Pure functions over a pydantic settings class (``Settings``) and its nested sections; nothing here
reads files or the environment (that stays in ``settings``).
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from assistant.errors import ConfigError

_SECRET_FIELDS = {"bot_token", "app_token", "client_secret", "signing_secret", "api_key", "credentials_json"}


def _known_names(settings_cls: type[BaseModel], loc: tuple) -> list[str]:
    """The setting names allowed next to the last element of ``loc`` (for "did you mean")."""
    model: Any = settings_cls
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _may_show(settings_cls: type[BaseModel], loc: tuple, value: Any) -> bool:
    """Only a scalar value of a known, non-secret leaf setting is echoed in an error: a section given a
    string (``slack = "xoxb-..."``) or a value inside a list could be a secret put in the wrong place."""
    if not isinstance(value, (str, int, float, bool)) or str(loc[-1]) in _SECRET_FIELDS:
        return False
    model: Any = settings_cls
    for i, part in enumerate(loc):
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return False
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if i == len(loc) - 1:
                return False  # a whole section given as one value
            model = ann
            continue
        return i == len(loc) - 1 and "SecretStr" not in str(ann)
    return False


def explain(settings_cls: type[BaseModel], e: ValidationError, where: str) -> ConfigError:
    """A readable error. Values are shown only where they cannot be secrets: never for an unknown key
    (a misspelled ``bot_tokn`` still holds a token), a secret field, or a whole section."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        bad = err.get("input")
        if err.get("type") == "extra_forbidden":
            known = _known_names(settings_cls, err["loc"])
            near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), near[0]])}?" if near else ""
            lines.append(f"  {loc}: unknown setting (its value is not shown){hint}")
            continue
        shown = repr(bad) if _may_show(settings_cls, err["loc"], bad) else "<not shown>"
        lines.append(f"  {loc} = {shown}: {err['msg']}")
    return ConfigError(
        f"Invalid settings ({where}):\n"
        + "\n".join(lines)
        + "\nSee config/default.toml for every setting, its meaning and allowed values; environment "
        "variables are ASSISTANT_<SECTION>__<FIELD>."
    )


def wants_json(settings_cls: type[BaseModel], parts: list[str]) -> bool:
    """Whether the setting at ``parts`` takes a list, dict or section, so a JSON-looking environment value
    should be decoded. A string field (``credentials_json``) keeps the text as it is."""
    model: Any = settings_cls
    for i, part in enumerate(parts):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        ann = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return False
            model = ann
            continue
        union = typing.get_origin(ann) in (typing.Union, types.UnionType)
        kinds = [k for k in typing.get_args(ann) if k is not type(None)] if union else [ann]
        if any(k is SecretStr or k is str or k is Path for k in kinds):
            return False
        return any(
            typing.get_origin(k) in (list, dict)
            or k in (list, dict)
            or (isinstance(k, type) and issubclass(k, BaseModel))
            for k in kinds
        )
    return False
