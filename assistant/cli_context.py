"""What the CLI's commands share: the ``--config`` files given on the command line and the
asker built from ``--as``/``--group``.

Its own module so that feature command modules (``commands``, ``evaluation_cli``) need not import
``assistant.cli`` back: the CLI (the composition root) imports them, never the other way round.
"""

from __future__ import annotations

from pathlib import Path

from assistant.documents import Principals

# the ``--config`` files of this invocation and the settings read from them (set by assistant.cli)
state: dict = {"config": [], "settings": None}


def config_files() -> list[Path]:
    """The ``--config`` files given to this invocation, in order."""
    return list(state["config"])


def who(as_email: str | None, groups: list[str]) -> Principals:
    """The asker: everything (the administrator's view) without ``--as``/``--group``."""
    if as_email is None and not groups:
        return Principals(everything=True)
    return Principals(email=as_email, groups=frozenset(groups))
