"""The Google Drive connector: Drive v3 listings and change feeds as ``ChangePage``s, files as ``Document``s.

Full sync (cursor ``None``): capture a changes start page token first, then list every in-scope
file with ``files.list`` (My Drive, listed or all shared drives, or folder subtrees), one page per
API page; the last page carries ``prune=True`` and, as its cursor, that start token, so anything
that changed while listing is seen again by the next incremental run. Incremental sync: one
``changes.list`` feed for the user (shared drives included); removed, trashed and out-of-scope
items become deletions. An invalid page token raises ``CursorExpired`` (sync restarts a full listing).

The cursor is JSON: ``{"mode": "full", "start", "segs", "seg", "page"}`` while listing,
``{"mode": "changes", "token"}`` afterwards. Listings ask for every field ``fetch`` needs, so a
fetch is one download, plus one ``permissions.list`` for shared-drive items (Drive does not return
their permissions in listings). ``fetch`` is thread-safe: sync calls it from a pool.

A changed folder (renamed, moved, trashed, re-shared) is walked with ``'id' in parents`` queries,
because Drive reports no change for its descendants; their version keys include the path and the
permission set, so only descendants whose path or access really changed are fetched again.
Not handled: shared-drive membership changes reach items only when they change or a full sync runs.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping

from assistant.documents import Access, ChangePage, Document, ItemRef
from assistant.errors import (
    AuthError,
    ConnectorError,
    CursorExpired,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from connectors.google_drive.client import DriveClient, RetryPolicy, load_credentials
from connectors.google_drive.config import DriveConfig
from connectors.google_drive.convert import (
    FILE_FIELDS,
    PERMISSION_FIELDS,
    access_from_permissions,
    export_choices,
    is_folder,
    skip_reason,
    to_document,
    version_key,
)

log = logging.getLogger(__name__)
_FOLDER_FIELDS = "id,name,parents,driveId,mimeType"


def _parse_cursor(cursor: str) -> dict:
    try:
        state = json.loads(cursor)
        if (
            state.get("mode") == "changes"
            and state.get("token")
            or state.get("mode") == "full"
            and "segs" in state
        ):
            return state
    except (ValueError, AttributeError):
        pass
    raise CursorExpired(f"Unreadable Google Drive cursor {cursor[:40]!r}; a full listing will run.")


class GoogleDriveConnector:
    """Implements ``connectors.base.Connector`` for Google Drive."""

    def __init__(self, config: DriveConfig, *, client: DriveClient | None = None) -> None:
        self.config = config
        self.name = config.source_name
        self.client = client or DriveClient(
            load_credentials(config.credentials_info, subject=config.subject, token_uri=config.token_uri),
            api_endpoint=config.api_endpoint,
            timeout_s=config.timeout_s,
            max_concurrency=config.workers,
            retry=RetryPolicy(
                max_retries=config.max_retries, base_s=config.backoff_base_s, cap_s=config.backoff_cap_s
            ),
        )
        self._folders: dict[str, dict | None] = {}  # id -> {name, parents, driveId}; None = unreadable
        self._lock = threading.Lock()
        self._complete_ids: set[str] | None = None  # ids of the last uninterrupted full listing
        self._max_bytes = int(config.max_file_mb * 1024 * 1024)

    # -- listing ---------------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> Iterator[ChangePage]:
        self._complete_ids = None
        state = _parse_cursor(cursor) if cursor else None
        if state is None:
            state = {
                "mode": "full",
                "start": self.client.start_page_token(),
                "segs": self._segments(),
                "seg": 0,
                "page": None,
            }
            yield from self._full(state, fresh=True)
        elif state.get("mode") == "full":
            yield from self._full(state, fresh=False)
        else:
            yield from self._incremental(state["token"])

    def _segments(self) -> list[dict]:
        c = self.config
        if c.folder_ids:  # folders may live anywhere; scope is decided by ancestry
            return [{"corpora": "allDrives"}]
        segs: list[dict] = [{"corpora": "user"}] if c.my_drive else []
        drive_ids = list(c.shared_drive_ids)
        if c.all_shared_drives:
            drive_ids += [d["id"] for d in self.client.drives() if d["id"] not in drive_ids]
        return segs + [{"corpora": "drive", "driveId": d} for d in drive_ids]

    def _list_params(self, seg: dict, page: str | None) -> dict:
        p = {
            **seg,
            "q": "trashed = false",
            "pageSize": self.config.page_size,
            "supportsAllDrives": True,
            "fields": f"nextPageToken,files({FILE_FIELDS})",
        }
        if seg["corpora"] != "user":
            p["includeItemsFromAllDrives"] = True
        if page:
            p["pageToken"] = page
        return p

    def _listing(self, state: dict) -> Iterator[tuple[list[dict], dict]]:
        """(files of one API page, the cursor state after it), across segments."""
        seg, page = state["seg"], state["page"]
        while seg < len(state["segs"]):
            resp = self.client.list_files(**self._list_params(state["segs"][seg], page))
            page = resp.get("nextPageToken")
            if not page:
                seg, page = seg + 1, None
            yield resp.get("files", []), {**state, "seg": seg, "page": page}

    def _full(self, state: dict, *, fresh: bool) -> Iterator[ChangePage]:
        ids: set[str] = set()
        pending: ChangePage | None = None
        for files, after in self._listing(state):
            refs = self._refs(files)
            ids.update(r.id for r in refs)
            if pending is not None:
                yield pending  # one page of look-ahead, so the real last page carries prune
            pending = ChangePage(upserts=tuple(refs), next_cursor=json.dumps(after))
        self._complete_ids = ids if fresh else None
        final = json.dumps({"mode": "changes", "token": state["start"]})
        yield ChangePage(upserts=pending.upserts if pending else (), next_cursor=final, prune=True)

    def _incremental(self, token: str) -> Iterator[ChangePage]:
        fields = f"nextPageToken,newStartPageToken,changes(changeType,fileId,removed,file({FILE_FIELDS}))"
        while True:
            resp = self.client.list_changes(
                token,
                pageSize=self.config.page_size,
                includeItemsFromAllDrives=True,
                supportsAllDrives=True,
                includeRemoved=True,
                spaces="drive",
                fields=fields,
            )
            upserts, deletions = self._sort_changes(
                [c for c in resp.get("changes", []) if c.get("changeType", "file") == "file"]
            )
            nxt = resp.get("nextPageToken")
            token = nxt or resp["newStartPageToken"]
            yield ChangePage(
                upserts=tuple(upserts),
                deletions=tuple(deletions),
                next_cursor=json.dumps({"mode": "changes", "token": token}),
            )
            if not nxt:
                return

    def _sort_changes(self, changes: list[dict]) -> tuple[list[ItemRef], list[str]]:
        """One page of changes -> (upserts, deletions)."""
        folders = [
            c["file"] for c in changes if c.get("file") and not c.get("removed") and is_folder(c["file"])
        ]
        for f in folders:  # first: the files of this page may sit in them
            self._remember_folder(f)
        files: dict[str, dict | None] = {}
        for c in changes:
            f = None if c.get("removed") else c.get("file")
            if f is None:
                self._forget_folder(c["fileId"])
                files[c["fileId"]] = None
            elif not is_folder(f):
                files[c["fileId"]] = f
        # A renamed, moved, trashed or re-shared folder changes its descendants' paths, scope or
        # inherited access, and Drive reports no change for them: walk the subtree.
        for folder in folders:
            for child in self._subtree(str(folder["id"])):
                files.setdefault(str(child["id"]), child)
        upserts, deletions = [], []
        for fid, f in files.items():
            ref = None if f is None else self._ref(f)
            if ref is not None:
                upserts.append(ref)
            else:  # removed, trashed, no longer shared with us, or moved out of scope
                deletions.append(fid)
        return upserts, deletions

    def _subtree(self, folder_id: str) -> Iterator[dict]:
        """Every file below a folder, trashed ones included (so they become deletions)."""
        todo, seen = [folder_id], set()
        while todo:
            fid = todo.pop()
            if fid in seen:
                continue
            seen.add(fid)
            page = None
            while True:
                resp = self.client.list_files(
                    corpora="allDrives",
                    includeItemsFromAllDrives=True,
                    supportsAllDrives=True,
                    q=f"'{fid}' in parents",
                    pageSize=self.config.page_size,
                    fields=f"nextPageToken,files({FILE_FIELDS})",
                    **({"pageToken": page} if page else {}),
                )
                for f in resp.get("files", []):
                    if is_folder(f):
                        self._remember_folder(f)
                        todo.append(str(f["id"]))
                    else:
                        yield f
                page = resp.get("nextPageToken")
                if not page:
                    break

    def list_ids(self) -> Iterator[str]:
        if self._complete_ids is not None:
            yield from sorted(self._complete_ids)
            return
        state = {"mode": "full", "segs": self._segments(), "seg": 0, "page": None}
        for files, _ in self._listing(state):
            yield from (r.id for r in self._refs(files))

    # -- scope and paths -------------------------------------------------------------------------
    def _refs(self, files: list[dict]) -> list[ItemRef]:
        for f in files:
            if is_folder(f):
                self._remember_folder(f)
        return [r for r in (self._ref(f) for f in files if not is_folder(f)) if r is not None]

    def _ref(self, f: dict) -> ItemRef | None:
        c = self.config
        why = skip_reason(
            f, include=c.include_mime_types, exclude=c.exclude_mime_types, max_bytes=self._max_bytes
        )
        if why:
            log.debug("skip %s (%s): %s", f.get("id"), f.get("name"), why)
            return None
        chain = self._chain(f)
        if c.folder_ids:
            if not any(fid in c.folder_ids for fid, _ in chain):
                return None
        elif f.get("driveId"):
            if not (c.all_shared_drives or f["driveId"] in c.shared_drive_ids):
                return None
        elif not c.my_drive:
            return None
        path = "/".join([name for _, name in reversed(chain)] + [str(f.get("name", ""))])
        return ItemRef(id=str(f["id"]), version=version_key(f, path), meta={"file": f, "path": path})

    def _remember_folder(self, f: Mapping) -> None:
        with self._lock:
            self._folders[str(f["id"])] = {
                "name": f.get("name", ""),
                "parents": f.get("parents") or [],
                "driveId": f.get("driveId"),
            }

    def _forget_folder(self, fid: str) -> None:
        with self._lock:
            self._folders.pop(fid, None)

    def _folder(self, fid: str) -> dict | None:
        with self._lock:
            if fid in self._folders:
                return self._folders[fid]
        try:
            f = self.client.get_file(fid, fields=_FOLDER_FIELDS)
            info = {"name": f.get("name", ""), "parents": f.get("parents") or [], "driveId": f.get("driveId")}
        except (NotFound, PermissionDenied):
            info = None  # a parent we may not see: the path starts below it
        with self._lock:
            self._folders[fid] = info
        return info

    def _chain(self, f: Mapping) -> list[tuple[str, str]]:
        """(folder id, name) from the file's parent up to the root it can see."""
        out: list[tuple[str, str]] = []
        cur = (f.get("parents") or [None])[0]
        while cur and len(out) < 64 and all(cur != fid for fid, _ in out):
            info = self._folder(cur)
            if info is None:
                break
            out.append((cur, info["name"]))
            cur = (info["parents"] or [None])[0]
        return out

    # -- fetching --------------------------------------------------------------------------------
    def fetch(self, ref: ItemRef) -> Document:
        meta = ref.meta.get("file") if ref.meta else None
        path = ref.meta.get("path") if ref.meta else None
        if meta is None:  # a retried failure: only the id is known
            meta = self.client.get_file(ref.id, fields=FILE_FIELDS)
            listed = self._ref(meta)
            if listed is None:
                raise NotFound(
                    f"Drive file {ref.id} is trashed or outside the configured scope; it is removed from the index."
                )
            path = str(listed.meta["path"])
        content, mime = self._content(meta)
        access, acl_error = self._access(meta)
        return to_document(
            meta,
            content,
            mime,
            access,
            source=self.name,
            path=str(path or meta.get("name", "")),
            acl_error=acl_error,
        )

    def _content(self, meta: Mapping) -> tuple[bytes, str]:
        fid, choices = str(meta["id"]), export_choices(str(meta.get("mimeType", "")))
        if not choices:
            return self.client.download(fid), str(meta.get("mimeType") or "application/octet-stream")
        for i, target in enumerate(choices):
            try:
                return self.client.export(fid, target), target
            except (NotFound, PermissionDenied, RateLimited, AuthError):
                raise
            except ConnectorError:
                if i == len(choices) - 1:
                    raise
                log.info("export of %s as %s refused; trying %s", fid, target, choices[i + 1])
        raise AssertionError("unreachable")

    def _access(self, meta: Mapping) -> tuple[Access, str | None]:
        """From the listing when Drive gave permissions there, else permissions.list; fail closed."""
        if meta.get("permissions") is not None:
            return access_from_permissions(meta["permissions"]), None
        try:
            return access_from_permissions(
                self.client.permissions(str(meta["id"]), fields=PERMISSION_FIELDS)
            ), None
        except NotFound:
            raise
        except ConnectorError as e:
            log.warning("permissions of %s unreadable, indexed as visible to nobody: %s", meta.get("id"), e)
            return Access.nobody(), f"{type(e).__name__}: {e}"
