"""``[connectors.onedrive]``: the settings section and the step from settings to a connector.

``OneDriveSettings`` is the pydantic section ``assistant.settings`` composes (defaults, help text and
range checks live here, once); ``OneDriveConfig`` is what the connector runs with (plain values, the
same defaults). ``from_settings(section, **overrides)`` builds a ``OneDriveConnector``
from it (or from any object with those attributes: this package never imports ``assistant.settings``);
``SecretStr`` values are unwrapped. Checks that need the whole picture ("names nothing to index") run
when the connector is built (``OneDriveConfig``), so an unused connector's empty defaults are not an error.
Importing this module imports only pydantic (msal and the HTTP client load in ``from_settings``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr

from assistant.errors import ConfigError
from connectors.base import SettingsSection, section_values

if TYPE_CHECKING:
    from connectors.onedrive.connector import OneDriveConnector


class OneDriveSettings(SettingsSection):
    enabled: bool = False
    source_name: str = "onedrive"
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    certificate_file: Path | None = Field(
        None, description="PEM with private key, instead of a client secret"
    )
    certificate_thumbprint: str | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    scope: str = Field(
        "https://graph.microsoft.com/.default",
        description="app-only token scope; national clouds use their Graph host (e.g. https://graph.microsoft.us/.default)",
    )
    verify: bool | str = Field(True, description="TLS verification: true, false, or a CA bundle path")
    tenant_domain: str | None = Field(
        None, description="domain that organization-scoped sharing links grant to (e.g. contoso.com)"
    )
    user_drives: list[str] = Field([], description="UPNs whose OneDrive to index")
    site_ids: list[str] = Field(
        [], description="SharePoint site ids (host,siteCollectionId,webId); every document library is indexed"
    )
    site_urls: list[str] = Field(
        [], description="SharePoint site URLs, e.g. https://contoso.sharepoint.com/sites/Eng"
    )
    drive_ids: list[str] = []
    folder_paths: list[str] = Field(
        [],
        description="index only these folders: '/Eng/Specs' in every drive, or '<drive id|UPN|site id or URL>:/Eng/Specs'",
    )
    max_file_mb: float = Field(25.0, gt=0)
    workers: int = Field(8, ge=1, le=64, description="HTTP connections kept open to Graph")
    max_retries: int = Field(6, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0, description="per HTTP request to Graph and the identity platform")


_D = OneDriveSettings()  # the defaults, once: OneDriveConfig takes its own from the section


@dataclass(frozen=True)
class OneDriveConfig:
    """Everything the connector needs; ``connectors.onedrive.from_settings`` builds it from settings."""

    tenant_id: str
    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    certificate_file: str | None = None  # PEM: private key + certificate
    certificate_thumbprint: str | None = _D.certificate_thumbprint
    authority_host: str = _D.authority_host
    graph_url: str = _D.graph_url
    scope: str = _D.scope
    verify: bool | str = _D.verify  # TLS: True, False, or a CA bundle path
    tenant_domain: str | None = _D.tenant_domain  # what organization-scoped sharing links grant to
    user_drives: tuple[str, ...] = tuple(_D.user_drives)  # UPNs
    site_ids: tuple[str, ...] = tuple(_D.site_ids)
    site_urls: tuple[str, ...] = tuple(_D.site_urls)  # https://contoso.sharepoint.com/sites/Eng
    drive_ids: tuple[str, ...] = tuple(_D.drive_ids)
    folder_paths: tuple[str, ...] = tuple(
        _D.folder_paths
    )  # "/Eng/Specs" (every drive) or "<drive id|UPN|site>:/Eng"
    max_file_mb: float = _D.max_file_mb
    workers: int = _D.workers
    max_retries: int = _D.max_retries
    timeout_s: float = _D.timeout_s
    token_cache_file: str | None = None
    instance_discovery: bool | str | None = (
        None  # None: msal's check for Microsoft hosts, off for others; or a URL
    )
    source_name: str = _D.source_name

    def __post_init__(self) -> None:
        if not (self.user_drives or self.site_ids or self.site_urls or self.drive_ids):
            raise ConfigError(
                "connectors.onedrive names nothing to index: set user_drives (UPNs), "
                "site_ids, site_urls or drive_ids."
            )
        if self.max_file_mb <= 0:
            raise ConfigError(f"connectors.onedrive.max_file_mb={self.max_file_mb} must be positive.")
        for p in self.folder_paths:
            if "/" not in p:
                raise ConfigError(
                    f"connectors.onedrive.folder_paths entry {p!r} must be a path like "
                    "'/Eng/Specs' or '<drive id|UPN|site id>:/Eng/Specs'."
                )
        if not self.graph_url.startswith(("http://", "https://")):
            raise ConfigError(f"connectors.onedrive.graph_url={self.graph_url!r} must be an http(s) URL.")


def config_from_settings(section: Any, **overrides: Any) -> OneDriveConfig:
    """Settings section → ``OneDriveConfig``; ``overrides`` win (e.g. ``token_cache_file``)."""
    values = section_values(section, OneDriveConfig)
    values.setdefault("tenant_id", "")
    values.setdefault("client_id", "")
    values["tenant_id"] = values["tenant_id"] or ""
    values["client_id"] = values["client_id"] or ""
    values.update(overrides)
    return OneDriveConfig(**values)


def from_settings(section: Any, **overrides: Any) -> OneDriveConnector:
    """Build the connector from the ``[connectors.onedrive]`` section (see ``config/default.toml``)."""
    from connectors.onedrive.connector import OneDriveConnector

    return OneDriveConnector(config_from_settings(section, **overrides))
