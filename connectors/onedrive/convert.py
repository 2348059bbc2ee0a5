"""Graph JSON → our data: item paths, MIME types, timestamps, and permissions → ``Access``.

Permissions (``GET /drives/{d}/items/{i}/permissions``, inherited entries included) become an
``Access`` like this:

- ``grantedToV2`` / ``grantedToIdentitiesV2`` (and the older ``grantedTo`` / ``grantedToIdentities``):
  a ``user`` or ``siteUser`` grants its email; a ``group`` grants its id and its email (either may
  be what the asker's directory lookup yields); a SharePoint ``siteGroup`` grants
  ``sp-group:<id>`` — a token no asker carries unless the identity layer maps it, so it fails closed.
- sharing links by ``link.scope``: ``anonymous`` → public, ``organization`` → the tenant domain
  (when it is configured; otherwise nobody, fail closed), ``users`` → the listed identities,
  ``existingAccess`` → nothing new.
- a pending ``invitation`` grants the invited email.

Identities without an email (apps, devices, some guests) grant nothing. What this module does not
do: call Graph (the connector does) or decide what to index.
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable, Mapping
from datetime import datetime

from assistant.documents import Access

_GENERIC = {"", "application/octet-stream", "binary/octet-stream"}
_OCTET = "application/octet-stream"


def item_mime(item: Mapping) -> str:
    """The file's MIME type; Graph often says octet-stream for text, so the extension decides then."""
    mime = str((item.get("file") or {}).get("mimeType") or "").lower()
    if mime in _GENERIC:
        guessed, _ = mimetypes.guess_type(str(item.get("name", "")), strict=False)
        return guessed or _OCTET
    return mime


# What the core parsers read (assistant.parsing); anything else is not downloaded at all, so a drive
# full of images or archives costs listing only, not a failed download on every run.
INDEXABLE_EXTENSIONS = frozenset(
    {
        ".md",
        ".markdown",
        ".txt",
        ".text",
        ".log",
        ".html",
        ".htm",
        ".pdf",
        ".docx",
        ".pptx",
        ".xlsx",
        ".csv",
        ".tsv",
        ".json",
        ".yaml",
        ".yml",
        ".rst",
    }
)
_INDEXABLE_MIMES = frozenset(
    {
        "application/pdf",
        "application/json",
        "application/yaml",
        "application/x-yaml",
        "application/xhtml+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    }
)


def indexable(item: Mapping) -> bool:
    """True for files the core parsers can turn into text (by extension, else by MIME type)."""
    name = str(item.get("name", "")).lower()
    ext = name[name.rfind(".") :] if "." in name else ""
    if ext in INDEXABLE_EXTENSIONS:
        return True
    mime = item_mime(item)
    return mime.startswith("text/") or mime in _INDEXABLE_MIMES


def parse_time(value: str | None) -> float | None:
    """Graph's ISO-8601 timestamps (``2024-01-02T03:04:05Z``) → POSIX seconds."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()  # 3.11+ reads the "Z" suffix
    except ValueError:
        return None


def reference_path(parent_reference: Mapping) -> str | None:
    """``/drive/root:/A/B`` or ``/drives/{id}/root:/A/B`` → ``/A/B`` (root → ``""``); None if absent."""
    path = parent_reference.get("path")
    if not path or "root:" not in path:
        return None
    return path.split("root:", 1)[1].rstrip("/")


def _email_from_login(login: str | None) -> str | None:
    # SharePoint claims: "i:0#.f|membership|alice@contoso.com"
    if login and "|" in login and "@" in login:
        return login.rsplit("|", 1)[1]
    return None


def _identities(perm: Mapping) -> Iterable[Mapping]:
    for key in ("grantedToV2", "grantedTo"):
        if isinstance(perm.get(key), Mapping):
            yield perm[key]
    for key in ("grantedToIdentitiesV2", "grantedToIdentities"):
        for ident in perm.get(key) or ():
            if isinstance(ident, Mapping):
                yield ident


def access_from_permissions(
    permissions: Iterable[Mapping], *, tenant_domain: str | None
) -> tuple[Access, list[str]]:
    """Permissions → Access, plus notes about grants that could not be represented (fail closed)."""
    users: set[str] = set()
    groups: set[str] = set()
    domains: set[str] = set()
    public = False
    notes: list[str] = []
    for perm in permissions:
        link = perm.get("link") or {}
        scope = link.get("scope")
        if scope == "anonymous":
            public = True
        elif scope == "organization":
            if tenant_domain:
                domains.add(tenant_domain)
            else:
                notes.append("organization-wide link ignored: set connectors.onedrive.tenant_domain")
        for ident in _identities(perm):
            user = ident.get("user") or ident.get("siteUser")
            if isinstance(user, Mapping):
                email = (
                    user.get("email")
                    or user.get("userPrincipalName")
                    or _email_from_login(user.get("loginName"))
                )
                if email and "@" in email:
                    users.add(email)
            group = ident.get("group")
            if isinstance(group, Mapping):
                if group.get("id"):
                    groups.add(str(group["id"]))
                if group.get("email"):
                    groups.add(str(group["email"]))
            site_group = ident.get("siteGroup")
            if isinstance(site_group, Mapping) and site_group.get("id") is not None:
                groups.add(f"sp-group:{site_group['id']}")
        invited = (perm.get("invitation") or {}).get("email")
        if invited:
            users.add(invited)
    return Access(frozenset(users), frozenset(groups), frozenset(domains), public), notes


def access_digest(access: Access) -> str:
    """Short stable digest of who may read; part of the document version so ACL edits re-index."""
    return hashlib.sha1("\n".join(sorted(access.tokens())).encode()).hexdigest()[:12]
