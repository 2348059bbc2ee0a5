"""The HTTP layer of the Drive fake: routing by the discovery document, parameter checks, methods.

Each request is matched against the paths of the discovery document's methods; the parameters it
carries are checked against that method's declared parameters (plus the API's global ones), then
the method runs against the ``DriveWorld`` held by the server. Responses honour ``fields``. Every
request is recorded on the world, with its status, before the response is written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from tests.fakes.gdrive_support import (
    DISCOVERY,
    EXPORTS,
    META_SCOPES,
    READ_SCOPES,
    ApiError,
    Recorded,
    apply_fields,
    parse_fields,
    parse_q,
    rfc3339,
    validate_fields,
)

PREFIX = "/drive/v3/"
_GLOBAL = DISCOVERY["parameters"]
_DEFAULT_FIELDS = {
    "FileList": "kind,nextPageToken,incompleteSearch,files(kind,id,name,mimeType)",
    "File": "kind,id,name,mimeType",
    "ChangeList": "kind,nextPageToken,newStartPageToken,changes(kind,type,changeType,time,removed,fileId,driveId,"
    "file(kind,id,name,mimeType))",
    "PermissionList": "kind,nextPageToken,permissions(kind,id,type,role,emailAddress,domain,allowFileDiscovery)",
    "StartPageToken": "kind,startPageToken",
    "DriveList": "kind,nextPageToken,drives(kind,id,name)",
    "Drive": "kind,id,name",
}


def _routes() -> list[tuple[str, re.Pattern, str, dict]]:
    out = []
    for res in ("files", "changes", "permissions", "drives"):
        for m in DISCOVERY["resources"][res]["methods"].values():
            rx = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(m["path"]))
            out.append((m["httpMethod"], re.compile(rx + "$"), m["id"], m))
    # literal paths (files/trash, changes/startPageToken) before templates that would swallow them
    return sorted(out, key=lambda r: "{" in r[3]["path"])


ROUTES = _routes()


def check_params(method: dict, query: dict[str, list[str]]) -> dict[str, object]:
    """Declared parameters only, typed; 400 in Google's format for anything else."""
    declared = {k: v for k, v in method.get("parameters", {}).items() if v.get("location") == "query"}
    out: dict[str, object] = {}
    for name, values in query.items():
        spec = declared.get(name) or _GLOBAL.get(name)
        if spec is None:
            raise ApiError(400, "invalidParameter", f'Invalid parameter "{name}"', location=name)
        v = values[-1]
        if spec.get("type") == "boolean":
            if v not in ("true", "false"):
                raise ApiError(
                    400, "invalidParameter", f'Invalid boolean value "{v}" for {name}', location=name
                )
            out[name] = v == "true"
        elif spec.get("type") == "integer":
            if not re.fullmatch(r"-?\d+", v):
                raise ApiError(
                    400, "invalid", f"Invalid value at '{name}' (TYPE_INT32), \"{v}\"", location=name
                )
            n = int(v)
            lo, hi = int(spec.get("minimum", -(2**31))), int(spec.get("maximum", 2**31))
            coerces = "will be coerced" in spec.get("description", "")
            if n < lo or (n > hi and not coerces):
                raise ApiError(
                    400,
                    "invalid",
                    f"Invalid value '{n}'. Values must be within the range: [{lo}, {hi}]",
                    location=name,
                )
            out[name] = min(n, hi)
        else:
            if "enum" in spec and v not in spec["enum"]:
                raise ApiError(400, "invalidParameter", f'Invalid value "{v}" for {name}', location=name)
            out[name] = v
    for name, spec in declared.items():
        if spec.get("required") and name not in out:
            raise ApiError(400, "required", f"Required parameter: {name}", location=name)
    return out


def _token(payload: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _untoken(tok: str, *, epoch: int, query_hash: str) -> dict:
    try:
        data = json.loads(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
        if data["e"] == epoch and data["h"] == query_hash:
            return data
    except (ValueError, KeyError, TypeError):
        pass
    raise ApiError(400, "invalid", "Invalid Value", location="pageToken")


def _page(items: list, p: dict, world, qhash: str, default_size: int) -> tuple[list, str | None]:
    start = (
        _untoken(p["pageToken"], epoch=world.token_epoch, query_hash=qhash)["o"] if "pageToken" in p else 0
    )
    size = int(p.get("pageSize", default_size))
    chunk = items[start : start + size]
    more = start + size < len(items)
    return chunk, (_token({"e": world.token_epoch, "h": qhash, "o": start + size}) if more else None)


def _qhash(p: dict) -> str:
    return hashlib.sha1(
        json.dumps(
            {k: v for k, v in p.items() if k not in ("pageToken", "pageSize", "fields")}, sort_keys=True
        ).encode()
    ).hexdigest()[:12]


class Api:
    """The read-only Drive methods, as functions of (world, user, params, path params)."""

    def __init__(self, world, user: str):
        self.w, self.user = world, user

    def _rec(self, fid: str, p: dict):
        w = self.w
        rec = w.files.get(w.roots.get(self.user) if fid == "root" else fid)
        visible = rec is not None and (
            (rec.drive_id and w.is_member(self.user, rec.drive_id))
            or (
                not rec.drive_id
                and (rec.owner == self.user or w.can_list(self.user, rec) or self._by_link(rec))
            )
        )
        if rec is None or not visible or (rec.drive_id and not p.get("supportsAllDrives")):
            raise ApiError(404, "notFound", f"File not found: {fid}.", location="fileId")
        return rec

    def _by_link(self, rec) -> bool:
        dom = self.user.rsplit("@", 1)[-1]
        return any(
            p.type == "anyone" or (p.type == "domain" and p.domain == dom)
            for p, _ in self.w.effective_perms(rec)
        )

    def files_list(self, p: dict, _path: dict):
        w, corpora = self.w, p.get("corpora", "user")
        if corpora not in ("user", "drive", "allDrives"):
            raise ApiError(
                400,
                "invalid",
                f"The fake supports corpora user, drive and allDrives, not {corpora}",
                location="corpora",
            )
        if (corpora == "drive") != ("driveId" in p):
            raise ApiError(
                400,
                "invalid",
                "The driveId parameter must be specified if and only if corpora is set to drive.",
                location="driveId",
            )
        if corpora != "user" and not (p.get("includeItemsFromAllDrives") and p.get("supportsAllDrives")):
            raise ApiError(
                403,
                "teamDriveItemsRequired",
                "The includeItemsFromAllDrives parameter must be set to true "
                "(with supportsAllDrives) when corpora is drive or allDrives.",
                location="includeItemsFromAllDrives",
            )
        if corpora == "drive" and (p["driveId"] not in w.drives or not w.is_member(self.user, p["driveId"])):
            raise ApiError(404, "notFound", f"Shared drive not found: {p['driveId']}", location="driveId")
        clauses = parse_q(str(p.get("q", "")))
        roots = set(w.roots.values()) | set(w.drives)
        out = []
        for rec in w.files.values():
            if rec.id in roots:
                continue
            if rec.drive_id:
                ok = (corpora == "drive" and rec.drive_id == p["driveId"]) or (
                    corpora == "allDrives" and w.is_member(self.user, rec.drive_id)
                )
            else:
                ok = corpora != "drive" and (rec.owner == self.user or w.can_list(self.user, rec))
            if ok and all(self._match(rec, c) for c in clauses):
                out.append(rec)
        out.sort(key=lambda r: (r.created, r.id))
        chunk, nxt = _page(out, p, w, _qhash(p), 100)
        body = {
            "kind": "drive#fileList",
            "incompleteSearch": False,
            "files": [w.file_resource(r) for r in chunk],
        }
        if nxt:
            body["nextPageToken"] = nxt
        return body, "FileList"

    @staticmethod
    def _match(rec, clause) -> bool:
        field_, op, val = clause
        if field_ == "parents":
            return (rec.parent == val) == (op == "in")
        have = {"trashed": rec.trashed, "mimeType": rec.mime, "name": rec.name}[field_]
        return (have == val) == (op == "=")

    def files_get(self, p: dict, path: dict):
        rec = self._rec(path["fileId"], p)
        if p.get("alt") == "media":
            if not rec.binary:
                raise ApiError(
                    403,
                    "fileNotDownloadable",
                    "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                    location="alt",
                )
            return rec.content, rec.mime
        body = self.w.file_resource(rec)
        if rec.drive_id and rec.id == rec.drive_id:
            body["name"] = self.w.drives[rec.id]["name"]
        return body, "File"

    def files_export(self, p: dict, path: dict):
        rec = self._rec(path["fileId"], {"supportsAllDrives": True})
        if rec.mime not in EXPORTS:
            raise ApiError(403, "fileNotExportable", "Export only supports Docs Editors files.")
        conv = EXPORTS[rec.mime].get(str(p["mimeType"]))
        if conv is None:
            raise ApiError(
                400, "badRequest", "The requested conversion is not supported.", location="mimeType"
            )
        data = conv(rec.content.decode())
        data = data if isinstance(data, bytes) else data.encode()
        if len(data) > self.w.export_limit:
            raise ApiError(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
        return data, str(p["mimeType"])

    def permissions_list(self, p: dict, path: dict):
        rec = self._rec(path["fileId"], p)
        if rec.id in self.w.permission_denied:
            raise ApiError(
                403,
                "insufficientFilePermissions",
                "The user does not have sufficient permissions for this file.",
            )
        perms = [
            perm.resource(inherited_from=src, in_drive=bool(rec.drive_id))
            for perm, src in self.w.effective_perms(rec)
        ]
        chunk, nxt = _page(perms, p, self.w, _qhash({**p, "fileId": rec.id}), 100)
        body = {"kind": "drive#permissionList", "permissions": chunk}
        if nxt:
            body["nextPageToken"] = nxt
        return body, "PermissionList"

    def changes_getStartPageToken(self, p: dict, _path: dict):
        return {"kind": "drive#startPageToken", "startPageToken": str(len(self.w.log) + 1)}, "StartPageToken"

    def changes_list(self, p: dict, _path: dict):
        w, tok = self.w, str(p["pageToken"])
        if not tok.isdigit() or not (w.log_floor <= int(tok) <= len(w.log) + 1):
            raise ApiError(400, "invalid", "Invalid Value", location="pageToken")
        start, size = int(tok) - 1, int(p.get("pageSize", 100))
        last = {fid: i for i, (fid, _) in enumerate(w.log) if i >= start}
        changes, i = [], start
        while i < len(w.log) and len(changes) < size:
            fid, t = w.log[i]
            i += 1
            if not fid or last[fid] != i - 1:
                continue  # a later entry for the same file reports its current state
            c = self._change(fid, t, p)
            if c:
                changes.append(c)
        body = {"kind": "drive#changeList", "changes": changes}
        if i < len(w.log):
            body["nextPageToken"] = str(i + 1)
        else:
            body["newStartPageToken"] = str(len(w.log) + 1)
        return body, "ChangeList"

    def _change(self, fid: str, t: float, p: dict) -> dict | None:
        w, rec = self.w, self.w.files.get(fid)
        base = {
            "kind": "drive#change",
            "type": "file",
            "changeType": "file",
            "time": rfc3339(t),
            "fileId": fid,
        }
        if rec is not None and rec.drive_id:
            if not p.get("includeItemsFromAllDrives") or p.get("restrictToMyDrive"):
                return None
            base["driveId"] = rec.drive_id
            visible = w.is_member(self.user, rec.drive_id)
        else:
            visible = rec is not None and (rec.owner == self.user or w.can_list(self.user, rec))
        if visible:
            return {**base, "removed": False, "file": w.file_resource(rec)}
        return {**base, "removed": True} if p.get("includeRemoved", True) else None

    def drives_list(self, p: dict, _path: dict):
        ds = [
            {"kind": "drive#drive", "id": d, "name": v["name"]}
            for d, v in self.w.drives.items()
            if self.w.is_member(self.user, d)
        ]
        chunk, nxt = _page(ds, p, self.w, _qhash(p), 10)
        return {
            "kind": "drive#driveList",
            "drives": chunk,
            **({"nextPageToken": nxt} if nxt else {}),
        }, "DriveList"

    def drives_get(self, p: dict, path: dict):
        d = self.w.drives.get(path["driveId"])
        if d is None or not self.w.is_member(self.user, path["driveId"]):
            raise ApiError(404, "notFound", f"Shared drive not found: {path['driveId']}")
        return {"kind": "drive#drive", "id": path["driveId"], "name": d["name"]}, "Drive"


def _fault_error(fault: dict) -> ApiError:
    if fault["kind"] == "rate_limit":
        return ApiError(403, "userRateLimitExceeded", "User Rate Limit Exceeded", domain="usageLimits")
    if fault["kind"] == "429":
        ra = fault["retry_after"]
        return ApiError(
            429,
            "rateLimitExceeded",
            "Too Many Requests",
            domain="usageLimits",
            headers={"Retry-After": f"{ra:g}"} if ra is not None else {},
        )
    return ApiError(500, "backendError", "Backend Error")


class FakeDriveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms per call
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, verb: str) -> None:
        world = self.server.world  # type: ignore[attr-defined]
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path == "/token" and verb == "POST":
            return self._token(world, raw)
        flat = {k: v[-1] for k, v in query.items()}
        user = None
        try:
            if world.latency_s:
                time.sleep(world.latency_s)
            fault = world.take_fault(url.path)
            if fault and fault["kind"] == "drop":
                with world.lock:
                    world.requests.append(Recorded(verb, url.path, flat, 0, None))
                self.close_connection = True
                return
            if fault:
                raise _fault_error(fault)
            user, scopes = self._auth(world)
            status, body, ctype, headers = (
                200,
                *self._dispatch(world, verb, url.path, query, user, scopes),
                {},
            )
        except ApiError as e:
            status, body, ctype, headers = (
                e.code,
                json.dumps(e.body()).encode(),
                "application/json; charset=UTF-8",
                e.headers,
            )
        with world.lock:  # recorded before the client can see the answer
            world.requests.append(Recorded(verb, url.path, flat, status, user))
        self._send(status, body, ctype, headers)

    @staticmethod
    def _dispatch(world, verb: str, path: str, query: dict, user: str, scopes: set[str]) -> tuple[bytes, str]:
        if not path.startswith(PREFIX):
            raise ApiError(404, "notFound", f"Not Found: {path}")
        rel = path[len(PREFIX) :]
        for http_method, rx, method_id, spec in ROUTES:  # noqa: B007 (used after the break)
            m = rx.match(rel)
            if m and http_method == verb:
                break
        else:
            raise ApiError(404, "notFound", f"Not Found: {verb} {path}")
        params = check_params(spec, query)
        impl = getattr(Api(world, user), "_".join(method_id.split(".")[1:]), None)
        if impl is None:
            raise ApiError(501, "notImplemented", f"The Drive fake does not implement {method_id}")
        media = params.get("alt") == "media" or method_id == "drive.files.export"
        if not scopes & (READ_SCOPES if media else META_SCOPES):
            raise ApiError(403, "insufficientPermissions", "Request had insufficient authentication scopes.")
        with world.lock:
            result, kind = impl(params, m.groupdict())
            if isinstance(result, bytes):
                return result, kind
            tree = parse_fields(str(params.get("fields") or _DEFAULT_FIELDS[kind]))
            validate_fields(tree, kind)
            return json.dumps(apply_fields(result, tree)).encode(), "application/json; charset=UTF-8"

    def _auth(self, world) -> tuple[str, set[str]]:
        auth = self.headers.get("Authorization", "")
        entry = world.access_tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if entry is None:
            raise ApiError(
                401,
                "authError",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
                location="Authorization",
            )
        return entry

    def _token(self, world, raw: bytes) -> None:
        form = {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        try:
            status, body = 200, world.grant(form)
        except ApiError as e:
            status, body = e.code, {"error": e.reason, "error_description": e.message}
        with world.lock:
            world.requests.append(
                Recorded("POST", "/token", {"grant_type": form.get("grant_type", "")}, status, None)
            )
        self._send(status, json.dumps(body).encode(), "application/json")
