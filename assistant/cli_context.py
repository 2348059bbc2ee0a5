"""What the CLI's commands share: the ``--config`` files given on the command line and the
asker built from ``--as``/``--group``.

Its own module so that feature command modules (``commands``, ``evaluation_cli``) need not import
``assistant.cli`` back: the CLI (the composition root) imports them, never the other way round.
"""

from __future__ import annotations

import re
from pathlib import Path

from assistant.documents import Principals
from assistant.errors import InputError

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# the ``--config`` files of this invocation and the settings read from them (set by assistant.cli)
state: dict = {"config": [], "settings": None}


def config_files() -> list[Path]:
    """The ``--config`` files given to this invocation, in order."""
    return list(state["config"])


def who(as_email: str | None, groups: list[str]) -> Principals:
    """The asker: everything (the administrator's view) without ``--as``/``--group``."""
    if as_email is None and not groups:
        return Principals(everything=True)
    if as_email is not None and not _EMAIL.match(as_email.strip()):
        raise InputError(
            f"--as {as_email!r} is not an email address; give the person's email, e.g. "
            "--as bob@example.com (their permissions are looked up by email)."
        )
    if any(not g.strip() for g in groups):
        raise InputError("--group needs a group id or group email, not an empty string.")
    return Principals(email=as_email.strip() if as_email else None, groups=frozenset(groups))


def require_documents(engine) -> None:
    """An empty index cannot answer: say which data directory is in use and how to fill it."""
    if engine.store.document_count() == 0:
        raise InputError(
            f"The index in {Path(engine.data_dir).resolve()} is empty. Ingest something first "
            "(assistant ingest ./docs, or assistant demo for the sample documents), or point at the "
            "index you meant with --config / data_dir or ASSISTANT_DATA_DIR=/path/to/data."
        )
