"""Drive file metadata → what the core needs: which files to take, how to export them, version keys, Access.

Pure functions over the JSON the Drive API returns; no I/O. The connector decides when to call them.

- Google Docs export as Markdown (plain text as a fallback), Sheets as XLSX — every sheet, parsed
  by ``assistant.parsing`` into one table per sheet; Drive's CSV export holds the first sheet only,
  so CSV is only the fallback when the XLSX export is refused — Slides as plain text. Other Google types (forms, drawings, sites,
  shortcuts, folders) are not content and are skipped. Binary files are downloaded as they are
  and parsed by ``assistant.parsing``; images, audio and video are skipped unless included.
- Permissions → Access: every role can read. ``user`` → its email, ``group`` → the group email,
  ``domain`` → the domain only when ``allowFileDiscovery`` is not false, ``anyone`` → public only
  when ``allowFileDiscovery`` is true. Link-only sharing grants nothing: a link is not a list of
  people, and indexing would let anyone in the company find the file by asking.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime

from assistant.documents import Access, Document

FOLDER = "application/vnd.google-apps.folder"
GOOGLE_PREFIX = "application/vnd.google-apps."
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
EXPORTS: dict[str, tuple[str, ...]] = {
    "application/vnd.google-apps.document": ("text/markdown", "text/plain"),
    "application/vnd.google-apps.spreadsheet": (XLSX, "text/csv"),
    "application/vnd.google-apps.presentation": ("text/plain",),
}
SKIPPED_PREFIXES = ("image/", "video/", "audio/")

# What the listing asks for: everything fetch needs, so fetch makes no metadata call.
FILE_FIELDS = (
    "id,name,mimeType,parents,driveId,version,md5Checksum,modifiedTime,size,trashed,webViewLink,"
    "owners(emailAddress),permissionIds,"
    "permissions(id,type,role,emailAddress,domain,allowFileDiscovery,deleted)"
)
PERMISSION_FIELDS = "id,type,role,emailAddress,domain,allowFileDiscovery,deleted"


def export_choices(mime: str) -> tuple[str, ...]:
    """Export formats to try, best first; empty for binary files."""
    return EXPORTS.get(mime, ())


def is_folder(meta: Mapping) -> bool:
    return meta.get("mimeType") == FOLDER


def skip_reason(
    meta: Mapping, *, include: Iterable[str] = (), exclude: Iterable[str] = (), max_bytes: int | None = None
) -> str | None:
    """Why a listed item is not indexed (None = index it). Patterns may use globs: ``image/*``."""
    mime = str(meta.get("mimeType", ""))
    include, exclude = tuple(include), tuple(exclude)
    if meta.get("trashed"):
        return "trashed"
    if mime.startswith(GOOGLE_PREFIX) and mime not in EXPORTS:
        return f"{mime} has no text export"
    if any(fnmatch.fnmatch(mime, p) for p in exclude):
        return f"{mime} is excluded"
    if include and not any(fnmatch.fnmatch(mime, p) for p in include):
        return f"{mime} is not included"
    if not include and mime.startswith(SKIPPED_PREFIXES):
        return f"{mime} is media"
    size = int(meta.get("size") or 0)
    if max_bytes is not None and size > max_bytes:
        return f"{size} bytes is over the size limit of {max_bytes}"
    return None


def _acl_basis(meta: Mapping) -> str:
    perms = meta.get("permissions")
    if perms is not None:
        basis = sorted(
            f"{p.get('type')}|{p.get('emailAddress', '')}|{p.get('domain', '')}|{p.get('allowFileDiscovery')}"
            f"|{p.get('deleted', False)}"
            for p in perms
        )
    else:
        basis = sorted(meta.get("permissionIds") or [])
    return hashlib.sha1("\n".join(basis).encode()).hexdigest()[:10]


def version_key(meta: Mapping, path: str) -> str:
    """Changes when content, name, location or sharing changes; known from the listing alone.

    ``version`` covers every change to the file itself; the ACL hash covers inherited sharing (a
    folder shared with a new group) and the path hash a renamed or moved ancestor folder, neither
    of which bumps the file's own ``version``.
    """
    base = meta.get("version") or meta.get("md5Checksum") or meta.get("modifiedTime") or ""
    return f"{base}:{_acl_basis(meta)}:{hashlib.sha1(path.encode()).hexdigest()[:8]}"


def access_from_permissions(perms: Iterable[Mapping]) -> Access:
    users, groups, domains, public = set(), set(), set(), False
    for p in perms:
        if p.get("deleted"):
            continue
        kind, email = p.get("type"), p.get("emailAddress")
        if kind == "user" and email:
            users.add(email)
        elif kind == "group" and email:
            groups.add(email)
        elif kind == "domain" and p.get("domain") and p.get("allowFileDiscovery") is not False:
            domains.add(p["domain"])
        elif kind == "anyone" and p.get("allowFileDiscovery") is True:
            public = True
    return Access(frozenset(users), frozenset(groups), frozenset(domains), public)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()  # 3.11 reads the trailing Z
    except ValueError:
        return None


def to_document(
    meta: Mapping,
    content: bytes,
    mime: str,
    access: Access,
    *,
    source: str,
    path: str,
    acl_error: str | None = None,
) -> Document:
    """The Document for one file. A failed permissions read keeps ``access`` empty (fail closed) and
    a version that cannot match the listing's, so the next sync fetches the file again."""
    owners = meta.get("owners") or []
    metadata = {"mime_type": str(meta.get("mimeType", "")), "drive_id": str(meta.get("driveId") or "")}
    if owners and owners[0].get("emailAddress"):
        metadata["owner"] = owners[0]["emailAddress"]
    version = version_key(meta, path)
    if acl_error:
        metadata["acl_error"] = acl_error
        version += ":acl-error"
    return Document(
        id=str(meta["id"]),
        source=source,
        path=path,
        title=str(meta.get("name", "")),
        mime=mime,
        content=content,
        access=access,
        version=version,
        modified=parse_time(meta.get("modifiedTime")),
        url=meta.get("webViewLink"),
        metadata=metadata,
    )
