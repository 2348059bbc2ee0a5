"""The connector protocol: a few methods, typed, returning plain data.

A connector turns an opaque cursor into pages of changes and can fetch one item. It never talks to
the store or the index; ``assistant.sync`` owns durability (a page's cursor is saved only after
the page is indexed) and per-item failure handling (an exception from ``fetch`` becomes a recorded
``Failure`` for that item, then the run goes on).

Contract
- ``changes(None)`` enumerates everything (full sync). The last page of a full enumeration sets
  ``prune=True``. ``changes(cursor)`` resumes from a cursor a previous page returned: it must
  continue a half-finished enumeration or list incremental changes since that point.
- A cursor the source no longer accepts raises ``CursorExpired``; sync then restarts with
  ``changes(None)``, which converges because upserts are idempotent and pruning removes leftovers.
- ``fetch`` raises ``NotFound`` when the item is gone (sync deletes it), other ``ConnectorError``
  for failures worth retrying next run.
- ``list_ids`` lists every id that currently exists (used for pruning after a full enumeration).

Also the two things every connector's settings section shares: ``SettingsSection`` (the pydantic
base of ``connectors/<name>/config.py``'s section, which ``assistant.settings`` composes) and
``secret_value`` (a ``SecretStr`` or a plain string → the string).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from assistant.documents import ChangePage, Document, ItemRef


class SettingsSection(BaseModel):
    """A frozen settings section that rejects unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def section_values(section: Any, config_cls: type, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The fields of the dataclass ``config_cls`` that ``section`` (a settings section, or any object
    with those attributes) has, as keyword arguments: lists become tuples, paths strings, secrets
    their values. A field the section lacks is left out, so the dataclass default applies."""
    out: dict[str, Any] = {}
    for name in getattr(config_cls, "__dataclass_fields__", {}):
        if name in skip or not hasattr(section, name):
            continue
        value = getattr(section, name)
        if isinstance(value, list | tuple):
            value = tuple(value)
        elif hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        elif value is not None and type(value).__name__.endswith("Path"):
            value = str(value)
        out[name] = value
    return out


def secret_value(value: Any) -> str | None:
    """``SecretStr`` → its value; a plain string as is; None stays None."""
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


@runtime_checkable
class Connector(Protocol):
    name: str  # the source name; document ids are unique within it

    def changes(self, cursor: str | None) -> Iterator[ChangePage]: ...

    def fetch(self, ref: ItemRef) -> Document: ...

    def list_ids(self) -> Iterator[str]: ...


def lazy_exports(package: str, home: dict[str, str]) -> Callable[[str], Any]:
    """A package ``__getattr__`` that imports ``name`` from ``package.<home[name]>`` on first use, so
    importing a connector package (e.g. for its settings section) loads no client library."""

    def __getattr__(name: str) -> Any:
        if name in home:
            return getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
