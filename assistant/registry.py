"""The connector registry: the only place in the core that knows connector modules by name.

It maps settings sections to connector objects (composition root), importing a connector package
only when it is used, so a missing optional client library never breaks the rest of the CLI.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from assistant.errors import ConfigError
from assistant.settings import Settings

# source kind -> (settings attribute under [connectors], package exposing from_settings(section))
CONNECTORS = {
    "gdrive": ("google_drive", "connectors.google_drive"),
    "google_drive": ("google_drive", "connectors.google_drive"),
    "onedrive": ("onedrive", "connectors.onedrive"),
    "sharepoint": ("onedrive", "connectors.onedrive"),
    "slack": ("slack", "connectors.slack"),
}


def build_connector(
    settings: Settings, *, path: Path | None = None, source: str | None = None, acl_file: Path | None = None
):
    """A folder (``path``) or a configured external source (``source`` = gdrive | onedrive | slack)."""
    if path is not None:
        from connectors.local_files import LocalFilesConnector

        return LocalFilesConnector(path, name=source, acl_file=acl_file)
    if source is None:
        raise ConfigError(
            "Nothing to ingest: give a folder (assistant ingest ./docs) or a configured source "
            "(assistant ingest --source gdrive|onedrive|slack)."
        )
    kind = source.lower()
    if kind not in CONNECTORS:
        raise ConfigError(
            f"Unknown source {source!r}. Use a folder path, or one of: gdrive, onedrive, slack."
        )
    attr, module = CONNECTORS[kind]
    section = getattr(settings.connectors, attr)
    if not section.enabled:
        raise ConfigError(
            f"The {kind} connector is not enabled. Set [connectors.{attr}] enabled = true and its "
            f"credentials in your config file (see config/default.toml)."
        )
    return importlib.import_module(module).from_settings(section)
