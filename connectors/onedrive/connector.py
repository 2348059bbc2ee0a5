"""OneDrive / SharePoint connector: Graph delta queries → change pages; items → Documents.

What gets indexed: the drives named in the config (users' OneDrives by UPN, every document library
of a SharePoint site by id or URL, drives by id), optionally narrowed to folders. Files the core
parsers read (``convert.indexable``) and no larger than ``max_file_mb``; folders, the root, OneNote
packages, images and archives are not documents and are never downloaded. Document ids are ``{drive id}/{item id}``.

Incremental sync uses ``/drives/{id}/root/delta`` per drive. The cursor is JSON with, per drive,
the link to continue from (an ``@odata.nextLink`` mid-way, the ``@odata.deltaLink`` once the drive
is caught up) and whether a full enumeration is in progress; sync saves it only after the page is
indexed, so a crash resumes at the first unindexed page. Within a page the last entry for an item
wins. ``410 Gone`` (resync required), a changed drive set or a changed Graph URL raise
``CursorExpired``; sync then enumerates everything again (idempotent upserts + prune on the last
page). Delta asks for sharing changes too (``Prefer: deltashowsharingchanges``), so permission
edits arrive as changes — completely only when the app holds Sites.FullControl.All; with
Files.Read.All Graph may scope them out, so run a periodic full sync, which re-reads every ACL.

Delta items carry no path (Graph omits ``parentReference.path`` in delta), so folder paths are
tracked by id while paging and looked up once per unknown folder.

Renaming or moving a *folder* does not list its descendants in delta, so the cursor keeps each
drive's folder paths (``folders``: id → path, learnt while listing); a folder that comes back from
delta with a different path is re-listed (``/children``, recursively) and its files are sent again
as upserts with their new paths — or as deletions when the move took them out of the configured
folders. Cursors saved before this learn folder paths as they go (a full sync learns them all).
Known limits: the folder map makes the cursor grow with the number of folders (about 60 bytes
each); folder filters are matched on the path at listing time. ``ItemRef.version`` is left empty: every listed item is fetched, because the
eTag does not move on permission changes; ``Document.version`` is eTag + a digest of the ACL.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from assistant.documents import Access, ChangePage, Document, ItemRef
from assistant.errors import ConfigError, ConnectorError, CursorExpired, NotFound

from .auth import GraphTokens
from .config import OneDriveConfig
from .convert import access_digest, access_from_permissions, indexable, item_mime, parse_time, reference_path
from .graph import GraphClient

DELTA_PREFER = "deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges"
_CURSOR_VERSION = 1


@dataclass(frozen=True)
class DriveTarget:
    id: str
    label: str  # shown before the item path, e.g. "alice@contoso.com" or "Engineering/Documents"
    keys: frozenset[str]  # config names that select it in folder_paths (drive id, UPN, site id/url)


def _split_folder(entry: str) -> tuple[str | None, str]:
    key, sep, path = entry.rpartition(":/")  # rpartition: the key may be a URL (https://...)
    if sep and not entry.startswith("/"):
        return key.strip().lower().rstrip("/"), "/" + path.strip("/")
    return None, "/" + entry.strip().strip("/")


class OneDriveConnector:
    """Implements ``connectors.base.Connector`` over Microsoft Graph."""

    def __init__(
        self, config: OneDriveConfig, *, graph: GraphClient | None = None, tokens: GraphTokens | None = None
    ) -> None:
        self.config = config
        self.name = config.source_name
        self.tokens = tokens
        if graph is None:
            self.tokens = tokens or GraphTokens(
                config.tenant_id,
                config.client_id,
                client_secret=config.client_secret,
                certificate_file=config.certificate_file,
                certificate_thumbprint=config.certificate_thumbprint,
                authority_host=config.authority_host,
                scope=config.scope,
                verify=config.verify,
                timeout=config.timeout_s,
                token_cache_file=config.token_cache_file,
                instance_discovery=config.instance_discovery,
            )
            graph = GraphClient(
                config.graph_url,
                self.tokens,
                verify=config.verify,
                timeout=config.timeout_s,
                max_retries=config.max_retries,
                pool_size=max(4, config.workers * 2),
            )
        self.graph = graph
        parts = urlsplit(config.graph_url)
        self._origin = f"{parts.scheme}://{parts.netloc}".lower()
        self._max_bytes = int(config.max_file_mb * 1024 * 1024)
        self._filters = [_split_folder(p) for p in config.folder_paths]
        self._targets: list[DriveTarget] | None = None
        self._lock = threading.Lock()
        self._folders: dict[str, dict[str, str]] = {}  # drive id → folder item id → path in drive
        self._live: set[str] | None = None  # ids seen by a full enumeration run in this process
        self._live_complete = False

    # -- drives ------------------------------------------------------------------------------
    def drives(self) -> list[DriveTarget]:
        """Resolve the configured UPNs, sites and drive ids to drives (once per connector)."""
        with self._lock:  # fetch workers may ask at the same time (retries of earlier failures)
            if self._targets is None:
                self._targets = self._resolve_drives()
            return self._targets

    def _resolve_drives(self) -> list[DriveTarget]:
        found: dict[str, DriveTarget] = {}

        def add(drive: dict, label: str, *keys: str) -> None:
            old = found.get(drive["id"])
            ks = frozenset(k.lower().rstrip("/") for k in (drive["id"], *keys) if k) | (
                old.keys if old else frozenset()
            )
            found[drive["id"]] = DriveTarget(drive["id"], old.label if old else label, ks)

        for upn in self.config.user_drives:
            drive = self._resolve(f"users/{quote(upn)}/drive", f"user_drives entry {upn!r}")
            add(drive, upn, upn)
        sites = [(sid, sid) for sid in self.config.site_ids]
        for url in self.config.site_urls:
            u = urlsplit(url)
            site = self._resolve(
                f"sites/{u.hostname}:{quote(u.path.rstrip('/') or '/')}", f"site_urls entry {url!r}"
            )
            sites.append((site["id"], url))
        for sid, key in sites:
            site = self._resolve(f"sites/{sid}", f"site {key!r}")
            for drive in self.graph.values(f"sites/{site['id']}/drives"):
                add(
                    drive,
                    f"{site.get('displayName') or site.get('name') or sid}/{drive.get('name', '')}",
                    sid,
                    key,
                )
        for did in self.config.drive_ids:
            drive = self._resolve(f"drives/{did}", f"drive_ids entry {did!r}")
            add(drive, drive.get("name") or did, did)
        return list(found.values())

    def _resolve(self, path: str, what: str) -> dict:
        try:
            return self.graph.get(path)
        except NotFound:
            raise ConfigError(
                f"connectors.onedrive {what} was not found in Graph (or has no drive); fix or remove it."
            ) from None

    # -- listing -----------------------------------------------------------------------------
    def _folder_path(self, drive: DriveTarget, folder_id: str | None, depth: int = 0) -> str:
        folders = self._folders.setdefault(drive.id, {})
        if not folder_id:
            return ""
        if folder_id in folders:
            return folders[folder_id]
        if depth > 64:
            return ""
        try:
            item = self.graph.get(
                f"drives/{drive.id}/items/{folder_id}", params={"$select": "id,name,root,parentReference"}
            )
        except NotFound:  # deleted meanwhile; its own deletion comes in a later delta entry
            return ""
        if "root" in item:
            path = ""
        else:
            parent = item.get("parentReference") or {}
            base = reference_path(parent)
            if base is None:
                base = self._folder_path(drive, parent.get("id"), depth + 1)
            path = f"{base}/{item.get('name', '')}"
        folders[folder_id] = path
        return path

    def _item_path(self, drive: DriveTarget, item: dict) -> str:
        parent = item.get("parentReference") or {}
        base = reference_path(parent)  # present on GET item, absent in delta
        if base is None:
            base = self._folder_path(drive, parent.get("id"))
        return f"{base}/{item.get('name', '')}"

    def _excluded(self, drive: DriveTarget, path: str, item: dict) -> bool:
        if int(item.get("size") or 0) > self._max_bytes or not indexable(item):
            return True
        wanted = [p for k, p in self._filters if k is None or k in drive.keys]
        if not wanted:  # no folder filter names this drive: all of it
            return False
        low = path.lower()
        return not any(low == p.lower() or low.startswith(p.lower().rstrip("/") + "/") for p in wanted)

    def _convert_page(
        self, drive: DriveTarget, items: list[dict], *, incremental: bool
    ) -> tuple[list[ItemRef], list[str]]:
        latest: dict[str, dict] = {}
        for item in items:  # the same item may appear more than once: the last one wins
            latest[item["id"]] = item
        folders = self._folders.setdefault(drive.id, {})
        moved: list[str] = []
        for item in latest.values():  # folders first, so files of this page find their parents
            if "deleted" in item:
                folders.pop(item["id"], None)
            elif "root" in item:
                folders[item["id"]] = ""
            elif "folder" in item or "package" in item:
                old, folders[item["id"]] = folders.get(item["id"]), self._item_path(drive, item)
                if incremental and "folder" in item and old is not None and old != folders[item["id"]]:
                    moved.append(item["id"])  # renamed or moved: its files' paths changed, delta won't say
        upserts: list[ItemRef] = []
        deletions: list[str] = []
        for folder_id in moved:
            for child in self._descendant_files(drive, folder_id):
                if child["id"] not in latest:
                    latest[child["id"]] = child
        for item_id, item in latest.items():
            doc_id = f"{drive.id}/{item_id}"
            if "deleted" in item:
                if "folder" not in item:
                    deletions.append(doc_id)
                continue
            if "file" not in item:
                continue
            path = self._item_path(drive, item)
            if self._excluded(drive, path, item):
                if incremental:  # it may have been indexed before it moved out or grew too large
                    deletions.append(doc_id)
                continue
            upserts.append(
                ItemRef(
                    id=doc_id,
                    version=None,
                    meta={
                        "name": item.get("name", ""),
                        "path": f"{drive.label}{path}",
                        "etag": item.get("eTag") or item.get("cTag") or "",
                        "mime": item_mime(item),
                        "modified": item.get("lastModifiedDateTime"),
                        "url": item.get("webUrl"),
                        "size": int(item.get("size") or 0),
                    },
                )
            )
        return upserts, deletions

    def _descendant_files(self, drive: DriveTarget, folder_id: str, depth: int = 0) -> Iterator[dict]:
        """Files under a renamed or moved folder, its subfolders' paths refreshed on the way."""
        if depth > 64:
            return
        folders = self._folders.setdefault(drive.id, {})
        for child in self.graph.values(
            f"drives/{drive.id}/items/{folder_id}/children", params={"$top": "200"}
        ):
            if "folder" in child or "package" in child:
                folders[child["id"]] = self._item_path(drive, child)
                if "folder" in child:
                    yield from self._descendant_files(drive, child["id"], depth + 1)
            elif "file" in child:
                yield child

    def _check_link(self, link: str) -> str:
        if link.startswith(("http://", "https://")) and not link.lower().startswith(self._origin):
            raise CursorExpired(
                f"The saved OneDrive cursor points at {urlsplit(link).netloc}, not at "
                f"connectors.onedrive.graph_url; a full sync follows."
            )
        return link

    def _decode(self, cursor: str, drives: list[DriveTarget]) -> dict:
        try:
            state = json.loads(cursor)
            ok = state.get("v") == _CURSOR_VERSION and isinstance(state.get("drives"), dict)
        except (ValueError, AttributeError):
            ok = False
        if not ok:
            raise CursorExpired("The saved OneDrive cursor is unreadable; a full sync follows.")
        if set(state["drives"]) != {d.id for d in drives}:
            raise CursorExpired(
                "The configured OneDrive drives changed since the last sync; a full sync follows."
            )
        return state

    def changes(self, cursor: str | None) -> Iterator[ChangePage]:
        drives = self.drives()
        if cursor is None:
            state = {
                "v": _CURSOR_VERSION,
                "full": True,
                "drives": {d.id: {"link": None, "done": False, "incremental": False} for d in drives},
            }
            self._live, self._live_complete = set(), False
        else:
            state = self._decode(cursor, drives)
            self._live, self._live_complete = None, False
        full = bool(state["full"])
        if not drives:
            state["full"] = False
            yield ChangePage(next_cursor=json.dumps(state), prune=full)
            return
        for n, drive in enumerate(drives):
            entry = state["drives"][drive.id]
            if not full:  # the folder paths learnt so far: a renamed folder is recognised by them
                self._folders.setdefault(drive.id, {}).update(entry.get("folders") or {})
            if entry["done"]:  # caught up before: ask what changed since
                entry.update(done=False, incremental=True)
            link = self._check_link(entry["link"]) if entry["link"] else f"drives/{drive.id}/root/delta"
            while True:
                page = self.graph.get(link, headers={"Prefer": DELTA_PREFER})
                upserts, deletions = self._convert_page(
                    drive, page.get("value", []), incremental=entry["incremental"]
                )
                if self._live is not None:
                    self._live.difference_update(deletions)
                    self._live.update(r.id for r in upserts)
                next_link, delta_link = page.get("@odata.nextLink"), page.get("@odata.deltaLink")
                if not next_link and not delta_link:
                    raise ConnectorError(
                        f"Graph delta for drive {drive.id} returned neither a nextLink nor a "
                        "deltaLink; check connectors.onedrive.graph_url."
                    )
                entry.update(
                    link=next_link or delta_link,
                    done=not next_link,
                    folders=dict(self._folders.get(drive.id, {})),
                )
                last = entry["done"] and n == len(drives) - 1
                if last:
                    state["full"] = False
                    self._live_complete = self._live is not None
                yield ChangePage(
                    upserts=tuple(upserts),
                    deletions=tuple(deletions),
                    next_cursor=json.dumps(state),
                    prune=last and full,
                )
                if entry["done"]:
                    break
                link = self._check_link(next_link)

    def list_ids(self) -> Iterator[str]:
        """Every indexable file id now; reuses this run's full enumeration when there was one."""
        if self._live_complete and self._live is not None:
            yield from sorted(self._live)
            return
        for drive in self.drives():
            live: set[str] = set()
            for page in self.graph.pages(f"drives/{drive.id}/root/delta", headers={"Prefer": DELTA_PREFER}):
                upserts, deletions = self._convert_page(drive, page.get("value", []), incremental=False)
                live.difference_update(deletions)
                live.update(r.id for r in upserts)
            yield from sorted(live)

    # -- fetching ----------------------------------------------------------------------------
    def _meta(self, drive_id: str, item_id: str) -> dict:
        item = self.graph.get(f"drives/{drive_id}/items/{item_id}")
        if "file" not in item:
            raise NotFound(f"OneDrive item {drive_id}/{item_id} is no longer a file.")
        label = next((d.label for d in self.drives() if d.id == drive_id), drive_id)
        return {
            "name": item.get("name", ""),
            "path": f"{label}{reference_path(item.get('parentReference') or {}) or ''}/{item.get('name', '')}",
            "etag": item.get("eTag") or item.get("cTag") or "",
            "mime": item_mime(item),
            "modified": item.get("lastModifiedDateTime"),
            "url": item.get("webUrl"),
        }

    def access(self, drive_id: str, item_id: str) -> tuple[Access, str | None]:
        """Who may read the item, inherited grants included; (nobody, reason) if Graph will not say."""
        try:
            perms = list(self.graph.values(f"drives/{drive_id}/items/{item_id}/permissions"))
        except NotFound:
            raise
        except ConnectorError as e:
            return Access.nobody(), str(e)
        access, notes = access_from_permissions(perms, tenant_domain=self.config.tenant_domain)
        return access, ("; ".join(notes) or None)

    def fetch(self, ref: ItemRef) -> Document:
        drive_id, _, item_id = ref.id.partition("/")
        if not item_id:
            raise NotFound(f"{ref.id!r} is not a OneDrive document id (drive/item); it is dropped.")
        meta = dict(ref.meta) if ref.meta else self._meta(drive_id, item_id)
        content = self.graph.download(f"drives/{drive_id}/items/{item_id}/content", max_bytes=self._max_bytes)
        access, acl_error = self.access(drive_id, item_id)
        metadata = {
            "drive_id": drive_id,
            "item_id": item_id,
            "etag": str(meta.get("etag", "")),
            "title_from": "filename",
        }  # sync lets the document's own heading replace it
        if acl_error:
            metadata["acl_error"] = acl_error
        return Document(
            id=ref.id,
            source=self.name,
            path=str(meta.get("path") or meta.get("name") or ref.id),
            title=str(meta.get("name") or ref.id),
            mime=str(meta.get("mime") or "application/octet-stream"),
            content=content,
            access=access,
            version=f"{meta.get('etag', '')}|acl:{access_digest(access)}",
            modified=parse_time(meta.get("modified")),
            url=meta.get("url"),
            metadata=metadata,
        )  # type: ignore[arg-type]

    def close(self) -> None:
        self.graph.close()
