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
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from assistant.documents import ChangePage, Document, ItemRef


@runtime_checkable
class Connector(Protocol):
    name: str  # the source name; document ids are unique within it

    def changes(self, cursor: str | None) -> Iterator[ChangePage]: ...

    def fetch(self, ref: ItemRef) -> Document: ...

    def list_ids(self) -> Iterator[str]: ...
