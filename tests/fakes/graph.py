"""A local fake of Microsoft Graph v1.0 (drives part) and of its download host, for tests and benches.

``GraphWorld`` holds users, sites, drives, folders, files, groups and permissions plus a change
log per drive; tests mutate it (``add_file``, ``edit``, ``rename``, ``move``, ``delete``, ``grant``,
``revoke``, ``share_link``, ``expire_delta_tokens``) and read ``requests`` / ``downloads`` to
assert on traffic. ``FakeGraph`` runs three servers: the identity platform over HTTPS
(``tests.fakes.graph_identity``), Graph over plain HTTP on 127.0.0.1, and the download host on
``localhost`` (another host name), which records whether an Authorization header reached it.

Graph behaviour mirrored: bearer tokens are checked; ``/users/{upn}/drive``, ``/sites/{id}``,
``/sites/{host}:/{path}``, ``/sites/{id}/drives``, ``/drives/{id}``, ``/drives/{id}/items/{id}``
(with ``parentReference.path``), ``/drives/{id}/root/delta`` (absolute next/delta links with opaque
tokens, no ``path`` in items, deleted items with the ``deleted`` facet, every logged change listed
so an item edited twice appears twice, sharing changes only with ``Prefer: deltashowsharingchanges``,
``410 resyncRequired`` for expired tokens), ``/permissions`` (direct + inherited with
``inheritedFrom``; owners; site groups; sharing links) and ``/content`` (302 to the download host).
Fault modes: ``inject(match, status=429|503|..., retry_after=, times=, delay_s=)``, ``latency_s``.

What it does not do: writes through the API, ``$select``/``$expand`` semantics, search, versions.
"""

from __future__ import annotations

import base64
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Self

from tests.fakes.graph_api import DownloadHandler, GraphHandler, Recorded
from tests.fakes.graph_identity import FakeIdentity, make_tls_cert

REPO = Path(__file__).resolve().parents[2]
HANDBOOK = REPO.parent / "shared" / "corpora" / "sourcegraph-handbook" / "content"
RESYNC = (
    "Resync required. Replace any local items with the server's version (including deletes) if you're sure "
    "that the service was up to date with your local changes when you last sync'd. Upload any local changes "
    "that the server doesn't know about."
)


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _tok(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _untok(tok: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))


@dataclass
class Item:
    id: str
    drive_id: str
    name: str
    parent_id: str | None
    folder: bool
    content: bytes = b""
    mime: str = "application/octet-stream"
    version: int = 1  # eTag counter: any change
    content_version: int = 1  # cTag counter: content changes
    perms: list[dict] = field(default_factory=list)  # direct grants, Graph permission shape
    deleted: bool = False
    modified: float = field(default_factory=time.time)


@dataclass
class Drive:
    id: str
    name: str
    kind: str  # business | documentLibrary
    owner: dict
    root_id: str
    web_url: str
    log: list[tuple[int, str, bool, dict]] = field(
        default_factory=list
    )  # (seq, item id, sharing only, snapshot)
    min_token_seq: int = 0  # tokens older than this answer 410


@dataclass
class Fault:
    match: str
    status: int | None = None
    retry_after: float | None = None
    times: int = 1
    delay_s: float = 0.0
    host: str = "graph"  # graph | download


class GraphWorld:
    def __init__(
        self, *, tenant: str = "contoso-tenant", domain: str = "contoso.com", page_size: int = 50
    ) -> None:
        self.tenant, self.domain, self.page_size = tenant, domain, page_size
        self.lock = threading.RLock()
        self.seq = itertools.count(1)
        self.last_seq = 0
        self.ids = itertools.count(1)
        self.tokens: dict[str, float] = {}  # bearer token → expiry
        self.users: dict[str, str] = {}  # upn → drive id
        self.sites: dict[str, dict] = {}
        self.drives: dict[str, Drive] = {}
        self.items: dict[str, Item] = {}
        self.groups: dict[str, dict] = {}  # id → {"email", "members"}
        self.enumerations: dict[str, list[str]] = {}
        self.downloads_issued: dict[str, tuple[str, int]] = {}
        self.requests: list[Recorded] = []
        self.downloads: list[Recorded] = []
        self.faults: list[Fault] = []
        self.latency_s = 0.0
        self.graph_url = self.download_url = ""

    # -- building ----------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"01FAKE{next(self.ids):06d}"

    def _log(self, item: Item, *, sharing: bool = False) -> None:
        s = next(self.seq)
        self.last_seq = s
        self.drives[item.drive_id].log.append((s, item.id, sharing, self.item_json(item, with_path=False)))

    def _add_drive(self, name: str, kind: str, owner: dict, web_url: str) -> str:
        with self.lock:
            did = "b!" + secrets.token_urlsafe(12)
            root = Item(self._new_id(), did, "root", None, True)
            self.items[root.id] = root
            self.drives[did] = Drive(did, name, kind, owner, root.id, web_url)
            self._log(root)
            return did

    def add_user_drive(self, upn: str) -> str:
        did = self._add_drive(
            "OneDrive",
            "business",
            {"user": {"email": upn, "displayName": upn.split("@")[0]}},
            f"https://contoso-my.sharepoint.com/personal/{upn.replace('@', '_').replace('.', '_')}/Documents",
        )
        root = self.items[self.drives[did].root_id]
        root.perms.append(
            {
                "id": "owner",
                "roles": ["owner"],
                "grantedToV2": {"user": {"id": secrets.token_hex(8), "email": upn, "displayName": upn}},
            }
        )
        self.users[upn] = did
        return did

    def add_site(
        self,
        name: str,
        *,
        hostname: str = "contoso.sharepoint.com",
        libraries: tuple[str, ...] = ("Documents",),
        members_group: str | None = None,
    ) -> tuple[str, list[str]]:
        sid = f"{hostname},{secrets.token_hex(8)},{secrets.token_hex(8)}"
        drive_ids = [
            self._add_drive(
                lib,
                "documentLibrary",
                {"group": {"displayName": name}},
                f"https://{hostname}/sites/{name}/{lib}",
            )
            for lib in libraries
        ]
        for did in drive_ids:
            root = self.items[self.drives[did].root_id]
            root.perms.append(
                {
                    "id": "members",
                    "roles": ["write"],
                    "grantedToV2": {"siteGroup": {"id": "5", "displayName": f"{name} Members"}},
                }
            )
            if members_group:
                root.perms.append(
                    {
                        "id": "m365group",
                        "roles": ["write"],
                        "grantedToV2": {
                            "group": {
                                "id": members_group,
                                "email": self.groups.get(members_group, {}).get("email"),
                                "displayName": name,
                            }
                        },
                    }
                )
        self.sites[sid] = {
            "id": sid,
            "name": name,
            "displayName": name,
            "hostname": hostname,
            "path": f"/sites/{name}",
            "webUrl": f"https://{hostname}/sites/{name}",
            "drives": drive_ids,
        }
        return sid, drive_ids

    def add_group(self, gid: str, email: str, members: list[str]) -> None:
        self.groups[gid] = {"email": email, "members": members}

    def folder(self, drive_id: str, path: str) -> str:
        """Id of the folder at ``path`` ("/A/B"), creating missing ones."""
        with self.lock:
            cur = self.drives[drive_id].root_id
            for name in [p for p in path.split("/") if p]:
                child = next(
                    (
                        i
                        for i in self.items.values()
                        if i.parent_id == cur and i.name == name and not i.deleted
                    ),
                    None,
                )
                if child is None:
                    child = Item(self._new_id(), drive_id, name, cur, True)
                    self.items[child.id] = child
                    self._log(child)
                cur = child.id
            return cur

    def add_file(
        self,
        drive_id: str,
        path: str,
        content: bytes | str,
        *,
        mime: str = "application/octet-stream",
        perms: list[dict] | None = None,
    ) -> str:
        with self.lock:
            parent, _, name = path.rpartition("/")
            data = content.encode() if isinstance(content, str) else content
            item = Item(
                self._new_id(),
                drive_id,
                name,
                self.folder(drive_id, parent),
                False,
                data,
                mime,
                perms=list(perms or []),
            )
            self.items[item.id] = item
            self._log(item)
            return item.id

    def edit(self, item_id: str, content: bytes | str) -> None:
        with self.lock:
            item = self.items[item_id]
            item.content = content.encode() if isinstance(content, str) else content
            item.version += 1
            item.content_version += 1
            item.modified = time.time()
            self._log(item)

    def rename(self, item_id: str, name: str) -> None:
        with self.lock:
            item = self.items[item_id]
            item.name, item.version = name, item.version + 1
            self._log(item)

    def move(self, item_id: str, folder_path: str) -> None:
        with self.lock:
            item = self.items[item_id]
            item.parent_id, item.version = self.folder(item.drive_id, folder_path), item.version + 1
            self._log(item)

    def delete(self, item_id: str) -> None:
        with self.lock:
            item = self.items[item_id]
            for child in [i for i in self.items.values() if i.parent_id == item_id and not i.deleted]:
                self.delete(child.id)
            item.deleted = True
            self._log(item)

    def _sharing_changed(self, item: Item) -> None:
        self._log(item, sharing=True)
        for child in [i for i in self.items.values() if i.parent_id == item.id and not i.deleted]:
            self._sharing_changed(child)

    def grant(
        self, item_id: str, *, user: str | None = None, group: str | None = None, roles=("read",)
    ) -> str:
        with self.lock:
            pid = secrets.token_hex(6)
            if user:
                ident = {
                    "user": {"id": secrets.token_hex(8), "email": user, "displayName": user.split("@")[0]}
                }
            else:
                ident = {
                    "group": {
                        "id": group,
                        "email": self.groups.get(group or "", {}).get("email"),
                        "displayName": group,
                    }
                }
            self.items[item_id].perms.append({"id": pid, "roles": list(roles), "grantedToV2": ident})
            self._sharing_changed(self.items[item_id])
            return pid

    def share_link(self, item_id: str, scope: str, *, users: tuple[str, ...] = ()) -> str:
        with self.lock:
            pid = secrets.token_hex(6)
            perm = {
                "id": pid,
                "roles": ["read"],
                "link": {
                    "scope": scope,
                    "type": "view",
                    "webUrl": f"https://contoso.sharepoint.com/:w:/s/{pid}",
                },
            }
            if users:
                perm["grantedToIdentitiesV2"] = [
                    {"user": {"id": secrets.token_hex(8), "email": u, "displayName": u}} for u in users
                ]
            self.items[item_id].perms.append(perm)
            self._sharing_changed(self.items[item_id])
            return pid

    def revoke(self, item_id: str, perm_id: str) -> None:
        with self.lock:
            item = self.items[item_id]
            item.perms = [p for p in item.perms if p["id"] != perm_id]
            self._sharing_changed(item)

    def expire_delta_tokens(self, drive_id: str) -> None:
        with self.lock:
            self.drives[drive_id].min_token_seq = self.last_seq + 1

    def inject(
        self,
        match: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        times: int = 1,
        delay_s: float = 0.0,
        host: str = "graph",
    ) -> None:
        with self.lock:
            self.faults.append(Fault(match, status, retry_after, times, delay_s, host))

    def live_files(self, drive_id: str | None = None) -> list[Item]:
        return [
            i
            for i in self.items.values()
            if not i.folder and not i.deleted and (drive_id in (None, i.drive_id))
        ]

    # -- rendering ---------------------------------------------------------------------------
    def path_of(self, item: Item) -> str:
        names = []
        cur: Item | None = item
        while cur is not None and cur.parent_id is not None:
            names.append(cur.name)
            cur = self.items.get(cur.parent_id)
        return "/" + "/".join(reversed(names))

    def item_json(self, item: Item, *, with_path: bool) -> dict:
        drive = self.drives[item.drive_id]
        out: dict = {
            "id": item.id,
            "name": item.name,
            "eTag": f'"{{{item.id}}},{item.version}"',
            "cTag": f'"c:{{{item.id}}},{item.content_version}"',
            "size": len(item.content),
            "createdDateTime": iso(item.modified),
            "lastModifiedDateTime": iso(item.modified),
            "webUrl": f"{drive.web_url}{self.path_of(item) if item.parent_id else ''}",
            "parentReference": {"driveId": drive.id, "driveType": drive.kind},
        }
        if item.parent_id:
            out["parentReference"]["id"] = item.parent_id
            if with_path:
                parent = self.items[item.parent_id]
                ppath = self.path_of(parent) if parent.parent_id else ""
                out["parentReference"]["path"] = f"/drives/{drive.id}/root:{ppath}"
        else:
            out["root"] = {}
        if item.deleted:
            out["deleted"] = {"state": "deleted"}
        if item.folder:
            out["folder"] = {
                "childCount": sum(1 for i in self.items.values() if i.parent_id == item.id and not i.deleted)
            }
        else:
            out["file"] = {
                "mimeType": item.mime,
                "hashes": {"quickXorHash": base64.b64encode(item.content[:20]).decode()},
            }
        return out

    def permissions_json(self, item: Item) -> list[dict]:
        out = [dict(p) for p in item.perms]
        cur = self.items.get(item.parent_id or "")
        while cur is not None:
            for p in cur.perms:
                out.append(
                    {
                        **p,
                        "inheritedFrom": {
                            "driveId": cur.drive_id,
                            "id": cur.id,
                            "path": f"/drives/{cur.drive_id}/root:{self.path_of(cur) if cur.parent_id else ''}",
                        },
                    }
                )
            cur = self.items.get(cur.parent_id or "")
        return out

    def delta(self, drive_id: str, query: dict, prefer: str) -> tuple[int, dict, dict]:
        drive = self.drives[drive_id]
        base = f"{self.graph_url}/drives/{drive_id}/root/delta"
        tok = _untok(query["token"]) if query.get("token") else None
        if tok is None or tok.get("full"):
            if tok is None:  # a new full enumeration: snapshot ids in creation order (parents first, mostly)
                enum_id = secrets.token_hex(6)
                self.enumerations[enum_id] = [
                    i.id
                    for i in sorted(self.items.values(), key=lambda i: int(i.id[6:]))
                    if i.drive_id == drive_id and not i.deleted
                ]
                tok = {"full": enum_id, "o": 0, "s": self.last_seq}
            ids = self.enumerations[tok["full"]]
            o = tok["o"]
            page = [self.item_json(self.items[i], with_path=False) for i in ids[o : o + self.page_size]]
            if o + self.page_size < len(ids):
                return (
                    200,
                    {
                        "value": page,
                        "@odata.nextLink": f"{base}?token={_tok({**tok, 'o': o + self.page_size})}",
                    },
                    {},
                )
            return 200, {"value": page, "@odata.deltaLink": f"{base}?token={_tok({'s': tok['s']})}"}, {}
        if tok["s"] < drive.min_token_seq:
            return 410, {"error": {"code": "resyncRequired", "message": RESYNC}}, {"Location": base}
        end = tok.get("e", self.last_seq)
        sharing = "deltashowsharingchanges" in prefer
        entries = []
        for seq, _, shared, snap in drive.log:
            if tok["s"] < seq <= end and (sharing or not shared):
                entries.append({**snap, "@microsoft.graph.sharedChanged": "True"} if shared else snap)
        o = tok.get("o", 0)
        page = entries[o : o + self.page_size]
        if o + self.page_size < len(entries):
            return (
                200,
                {
                    "value": page,
                    "@odata.nextLink": f"{base}?token={_tok({'s': tok['s'], 'e': end, 'o': o + self.page_size})}",
                },
                {},
            )
        return 200, {"value": page, "@odata.deltaLink": f"{base}?token={_tok({'s': end})}"}, {}


class FakeGraph:
    """Identity (HTTPS) + Graph + download host around one ``GraphWorld``. Use as a context manager."""

    def __init__(
        self,
        tmp: Path,
        world: GraphWorld | None = None,
        *,
        client_id: str = "app-client-id",
        client_secret: str = "s3cret-value",
    ) -> None:
        self.world = world or GraphWorld()
        self.ca_file, key = make_tls_cert(tmp / "tls")
        self.identity = FakeIdentity(self.world, tenant=self.world.tenant, cert=self.ca_file, key=key)
        self.client_id, self.client_secret = client_id, client_secret
        self.identity.register_app(client_id, secret=client_secret)
        self._servers = []
        for kind, handler in (("graph", GraphHandler), ("download", DownloadHandler)):
            server = ThreadingHTTPServer(
                ("127.0.0.1", 0), type(f"{kind}Handler", (handler,), {"world": self.world})
            )
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        self.world.graph_url = f"http://127.0.0.1:{self._servers[0].server_address[1]}/v1.0"
        self.world.download_url = f"http://localhost:{self._servers[1].server_address[1]}"

    def settings(self, **over) -> dict:
        """Keyword arguments for ``OneDriveConfig`` pointing at this fake."""
        return {
            "tenant_id": self.world.tenant,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "authority_host": self.identity.url,
            "graph_url": self.world.graph_url,
            "verify": str(self.ca_file),
            "tenant_domain": self.world.domain,
            **over,
        }

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.identity.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def handbook_pages(root: Path = HANDBOOK, limit: int | None = None) -> list[tuple[str, str]]:
    """(relative path, markdown) pairs from the handbook corpus, sorted; [] when it is absent."""
    if not root.is_dir():
        return []
    files = sorted(root.rglob("*.md"))[:limit]
    return [(str(p.relative_to(root)), p.read_text(errors="replace")) for p in files]


def populate(
    world: GraphWorld, drive_id: str, pages: list[tuple[str, str]], n: int, *, prefix: str = ""
) -> list[str]:
    """Add ``n`` handbook pages (cycled) as Markdown files under their handbook folders."""
    ids = []
    for k in range(n):
        rel, text = pages[k % len(pages)]
        name = rel if k < len(pages) else rel.replace(".md", f"-{k // len(pages)}.md")
        ids.append(world.add_file(drive_id, f"{prefix}/{name}", text, mime="text/markdown"))
    return ids
