"""HTTP side of the Graph fake: Graph's GET routes, fault injection, and the download host.

``route`` maps a Graph v1.0 path onto a ``GraphWorld`` (see ``tests.fakes.graph`` for what is
mirrored); ``GraphHandler`` checks bearer tokens, applies latency and injected faults, records
every request; ``DownloadHandler`` serves pre-authenticated download URLs and records whether an
Authorization header reached it. What it does not do: hold any state of its own.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from tests.fakes.graph import Drive, Fault, GraphWorld


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    time: float
    status: int = 0


def _err(status: int, code: str, message: str) -> tuple[int, dict, dict]:
    return (
        status,
        {"error": {"code": code, "message": message, "innerError": {"request-id": secrets.token_hex(8)}}},
        {},
    )


def route(world: GraphWorld, path: str, query: dict, headers) -> tuple[int, dict | bytes, dict]:
    """Graph's GET routes: (status, JSON body or bytes, extra headers)."""
    segs = [unquote(s) for s in path.split("/") if s]
    if segs[:1] == ["v1.0"]:
        segs = segs[1:]
    with world.lock:
        if segs[:1] == ["users"] and len(segs) == 3 and segs[2] == "drive":
            did = world.users.get(segs[1])
            if did is None:
                return _err(404, "itemNotFound", f"User '{segs[1]}' not found or has no OneDrive.")
            segs = ["drives", did]
        if segs[:1] == ["sites"] and len(segs) >= 2:
            if ":" in segs[1]:  # /sites/{hostname}:/sites/Name
                host, _, rest = "/".join(segs[1:]).partition(":")
                site = next(
                    (s for s in world.sites.values() if s["hostname"] == host and s["path"] == rest), None
                )
                tail: list[str] = []
            else:
                site, tail = world.sites.get(segs[1]), segs[2:]
            if site is None:
                return _err(404, "itemNotFound", "Requested site could not be found")
            if tail == ["drives"]:
                return 200, {"value": [drive_json(world, world.drives[d]) for d in site["drives"]]}, {}
            if not tail:
                return 200, {k: v for k, v in site.items() if k != "drives"}, {}
        if segs[:1] == ["drives"] and len(segs) >= 2:
            drive = world.drives.get(segs[1])
            if drive is None:
                return _err(404, "itemNotFound", "The resource could not be found.")
            rest = segs[2:]
            if not rest:
                return 200, drive_json(world, drive), {}
            if rest == ["root", "delta"]:
                return world.delta(drive.id, {k: v[0] for k, v in query.items()}, headers.get("Prefer", ""))
            if rest[:1] == ["items"] and len(rest) >= 2:
                item = world.items.get(rest[1])
                if item is None or item.deleted or item.drive_id != drive.id:
                    return _err(404, "itemNotFound", "The resource could not be found.")
                if len(rest) == 2:
                    return 200, world.item_json(item, with_path=True), {}
                if rest[2:] == ["children"] and item.folder:  # paged by $top, continued by $skiptoken
                    kids = sorted(
                        (i for i in world.items.values() if i.parent_id == item.id and not i.deleted),
                        key=lambda i: int(i.id[6:]),
                    )
                    top = int(query.get("$top", ["200"])[0])
                    start = int(query.get("$skiptoken", ["0"])[0])
                    page = {"value": [world.item_json(i, with_path=True) for i in kids[start : start + top]]}
                    if start + top < len(kids):
                        page["@odata.nextLink"] = (
                            f"{world.graph_url}/drives/{drive.id}/items/{item.id}/children"
                            f"?$top={top}&$skiptoken={start + top}"
                        )
                    return 200, page, {}
                if rest[2:] == ["permissions"]:
                    return 200, {"value": world.permissions_json(item)}, {}
                if rest[2:] == ["content"] and not item.folder:
                    key = secrets.token_urlsafe(16)
                    world.downloads_issued[key] = (item.id, item.content_version)
                    return 302, b"", {"Location": f"{world.download_url}/download/{key}?tempauth=1"}
    return _err(400, "invalidRequest", f"Unsupported request {path}")


def drive_json(world: GraphWorld, drive: Drive) -> dict:
    return {
        "id": drive.id,
        "name": drive.name,
        "driveType": drive.kind,
        "owner": drive.owner,
        "webUrl": drive.web_url,
    }


class GraphHandler(BaseHTTPRequestHandler):
    world: GraphWorld
    host_kind = "graph"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _fault(self) -> Fault | None:
        with self.world.lock:
            for f in self.world.faults:
                if f.host == self.host_kind and f.times > 0 and f.match in self.path:
                    f.times -= 1
                    return f
        return None

    def _send(self, status: int, body: dict | bytes, headers: dict) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            ctype = "application/octet-stream" if isinstance(body, bytes) else "application/json"
            self.send_header("Content-Type", ctype)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        rec = Recorded("GET", parts.path, parse_qs(parts.query), dict(self.headers.items()), time.time())
        with self.world.lock:
            (self.world.requests if self.host_kind == "graph" else self.world.downloads).append(rec)
        if self.world.latency_s:
            time.sleep(self.world.latency_s)
        fault = self._fault()
        if fault and fault.delay_s:
            time.sleep(fault.delay_s)
        if fault and fault.status:
            rec.status = fault.status
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            code = {429: "TooManyRequests", 503: "serviceNotAvailable"}.get(fault.status, "generalException")
            return self._send(fault.status, {"error": {"code": code, "message": "Injected fault"}}, extra)
        status, body, extra = self.handle_get(parts.path, parse_qs(parts.query))
        rec.status = status
        self._send(status, body, extra)

    def handle_get(self, path: str, query: dict) -> tuple[int, dict | bytes, dict]:
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token:
            return _err(401, "InvalidAuthenticationToken", "Access token is empty.")
        if self.world.tokens.get(token, 0) < time.time():
            return _err(
                401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired."
            )
        return route(self.world, path, query, self.headers)


class DownloadHandler(GraphHandler):
    host_kind = "download"

    def handle_get(self, path: str, query: dict) -> tuple[int, dict | bytes, dict]:
        key = path.rsplit("/", 1)[-1]
        with self.world.lock:
            found = self.world.downloads_issued.get(key)
            item = self.world.items.get(found[0]) if found else None
        if item is None or item.deleted:
            return 404, b"", {}
        return 200, item.content, {}
