"""A local fake of the Google Drive v3 API and Google's OAuth token endpoint, for tests and benchmarks.

The real ``googleapiclient`` talks to it through ``client_options={"api_endpoint": fake.url}`` and
the discovery document shipped in the wheel, which the fake also reads: parameters it does not
declare are rejected, types/ranges/required parameters are checked, and ``fields`` masks are
validated against the schemas and applied to every response.

What it serves (read-only methods): files.list (corpora user/drive/allDrives, a small ``q``
grammar, pageSize, page tokens), files.get (metadata and ``alt=media``), files.export (Docs, Sheets,
Slides to text formats, 10 MB limit), permissions.list, changes.getStartPageToken, changes.list,
drives.list/get; plus ``POST /token`` for the JWT-bearer (service account, optional ``sub``) and
refresh-token grants. A ``DriveWorld`` holds users, My Drives, shared drives, folders, files,
permissions and a change log; tests mutate it (``edit``, ``rename``, ``move``, ``trash``, ``share``
...) and read ``requests`` to assert on traffic. Fault modes: ``inject("rate_limit" | "429" |
"500" | "drop", ...)``, ``latency_s``, ``invalidate_page_tokens()``.

What it does not do: writes through the API, ``q`` beyond ``trashed``/``mimeType``/``name`` comparisons
and ``'id' in parents`` joined by ``and``, revisions, shortcuts, labels, or eventual consistency.
The HTTP layer is ``gdrive_api.py``; masks, JWT checks and the ``q`` grammar are ``gdrive_support.py``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import os
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path

from tests.fakes.gdrive_api import FakeDriveHandler
from tests.fakes.gdrive_support import (  # noqa: F401  (re-exported for tests)
    EXPORT_LIMIT,
    EXPORTS,
    FOLDER,
    GDOC,
    GSHEET,
    GSLIDES,
    SCOPE_META,
    SCOPE_RO,
    ApiError,
    Recorded,
    make_jwt_key,
    rfc3339,
    verify_jwt,
)


@dataclass
class Perm:
    id: str
    type: str  # user | group | domain | anyone
    role: str = "reader"
    email: str | None = None
    domain: str | None = None
    discoverable: bool | None = None  # allowFileDiscovery, for domain/anyone

    def resource(self, *, inherited_from: str | None = None, in_drive: bool = False) -> dict:
        r = {"kind": "drive#permission", "id": self.id, "type": self.type, "role": self.role}
        if self.email:
            r["emailAddress"] = self.email
            r["displayName"] = self.email.split("@")[0].title()
        if self.domain:
            r["domain"] = self.domain
        if self.type in ("domain", "anyone"):
            r["allowFileDiscovery"] = bool(self.discoverable)
        if in_drive:
            r["permissionDetails"] = [
                {
                    "permissionType": "file" if inherited_from is None else "member",
                    "role": self.role,
                    "inherited": inherited_from is not None,
                    **({"inheritedFrom": inherited_from} if inherited_from else {}),
                }
            ]
        return r


@dataclass
class FileRec:
    id: str
    name: str
    mime: str
    parent: str | None
    drive_id: str | None
    owner: str | None
    content: bytes = b""
    perms: list[Perm] = field(default_factory=list)
    version: int = 1
    created: float = field(default_factory=time.time)
    modified: float = field(default_factory=time.time)
    trashed: bool = False

    @property
    def binary(self) -> bool:
        return not self.mime.startswith("application/vnd.google-apps.")


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # google-auth always uses it as the JWT audience


class DriveWorld:
    """The state behind the fake: users, drives, files, permissions, change log, tokens, faults."""

    def __init__(
        self,
        *,
        domain: str = "example.com",
        admin: str = "admin@example.com",
        users: tuple[str, ...] = (),
        groups: dict[str, set[str]] | None = None,
        export_limit: int = EXPORT_LIMIT,
    ):
        self.lock = threading.RLock()
        self.domain, self.admin, self.export_limit = domain, admin, export_limit
        self.users = {admin, *users}
        self.groups = {g: set(m) for g, m in (groups or {}).items()}
        self.files: dict[str, FileRec] = {}
        self.drives: dict[str, dict] = {}
        self.roots: dict[str, str] = {}
        self.log: list[tuple[str, float]] = []  # (fileId, time); seq = index + 1
        self.log_floor = 1  # change tokens below this are "expired"
        self.token_epoch = 0
        self.permission_denied: set[str] = set()  # file ids whose permissions.list answers 403
        self.requests: list[Recorded] = []
        self.latency_s = 0.0
        self.faults: list[dict] = []
        self.access_tokens: dict[str, tuple[str, set[str]]] = {}
        self.refresh_tokens: dict[str, tuple[str, str, str]] = {}
        self.service_accounts: dict[str, tuple[object, bool]] = {}  # email -> (public key, delegation)
        self.url = ""
        self._ids = itertools.count(1)
        for u in self.users:
            self.root(u)

    # -- building and mutating the world ------------------------------------------------------
    # Like Drive, a change to a folder (move, rename, trash, sharing) is logged for the folder only;
    # its descendants change state (path, trashed, inherited permissions) without a change entry.
    # Permanent deletion logs every deleted item.
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):05d}" + hashlib.sha1(os.urandom(8)).hexdigest()[:6]

    def root(self, user: str) -> str:
        with self.lock:
            if user not in self.roots:
                rid = self._new_id("root")
                self.users.add(user)
                self.roots[user] = rid
                self.files[rid] = FileRec(rid, "My Drive", FOLDER, None, None, user)
            return self.roots[user]

    def add_drive(self, name: str, *, members: dict[str, str] | None = None) -> str:
        """A shared drive; ``members`` maps user or group email -> role (organizer, reader, ...)."""
        with self.lock:
            did = self._new_id("0A")
            perms = [
                Perm(self._new_id("p"), "group" if m in self.groups else "user", role, email=m)
                for m, role in (members or {self.admin: "organizer"}).items()
            ]
            self.drives[did] = {"name": name, "members": perms}
            self.files[did] = FileRec(did, name, FOLDER, None, did, None)
            return did

    def add_folder(self, name: str, parent: str, **kw) -> str:
        return self.add_file(name, FOLDER, b"", parent, **kw)

    def add_file(
        self,
        name: str,
        mime: str,
        content: bytes | str,
        parent: str,
        *,
        owner: str | None = None,
        perms: tuple[Perm, ...] = (),
    ) -> str:
        with self.lock:
            par = self.files[parent]
            drive_id = par.drive_id
            fid = self._new_id("1")
            owner = None if drive_id else (owner or par.owner or self.admin)
            data = content.encode() if isinstance(content, str) else content
            self.files[fid] = FileRec(fid, name, mime, parent, drive_id, owner, data, list(perms))
            self._logged(fid)
            return fid

    def _logged(self, fid: str, *, bump: bool = False) -> None:
        rec = self.files.get(fid)
        if rec and bump:
            rec.version += 1
            rec.modified = time.time()
        self.log.append((fid, time.time()))

    def _descendants(self, fid: str) -> list[str]:
        kids = [f.id for f in self.files.values() if f.parent == fid]
        return kids + [d for k in kids for d in self._descendants(k)]

    def edit(self, fid: str, content: bytes | str) -> None:
        with self.lock:
            self.files[fid].content = content.encode() if isinstance(content, str) else content
            self._logged(fid, bump=True)

    def rename(self, fid: str, name: str) -> None:
        with self.lock:
            self.files[fid].name = name
            self._logged(fid, bump=True)

    def move(self, fid: str, parent: str) -> None:
        with self.lock:
            rec = self.files[fid]
            rec.parent, rec.drive_id = parent, self.files[parent].drive_id
            for d in self._descendants(fid):
                self.files[d].drive_id = rec.drive_id
            self._logged(fid, bump=True)

    def trash(self, fid: str, trashed: bool = True) -> None:
        with self.lock:
            for d in [fid, *self._descendants(fid)]:
                self.files[d].trashed = trashed
            self._logged(fid, bump=True)

    def delete(self, fid: str) -> None:
        """Permanent deletion (the change log then reports ``removed: true``)."""
        with self.lock:
            for d in [fid, *self._descendants(fid)]:
                self.files.pop(d, None)
                self._logged(d)

    def share(
        self,
        fid: str,
        type: str,
        *,
        email: str | None = None,
        domain: str | None = None,
        discoverable: bool | None = None,
        role: str = "reader",
    ) -> str:
        with self.lock:
            p = Perm(self._new_id("p"), type, role, email=email, domain=domain, discoverable=discoverable)
            self.files[fid].perms.append(p)
            self._logged(fid, bump=True)
            return p.id

    def unshare(self, fid: str, perm_id: str) -> None:
        with self.lock:
            self.files[fid].perms = [p for p in self.files[fid].perms if p.id != perm_id]
            self._logged(fid, bump=True)

    # -- queries -------------------------------------------------------------------------------
    def ancestors(self, rec: FileRec) -> list[FileRec]:
        out, cur = [], rec
        while cur.parent and cur.parent in self.files:
            cur = self.files[cur.parent]
            out.append(cur)
        return out

    def effective_perms(self, rec: FileRec) -> list[tuple[Perm, str | None]]:
        """(permission, inheritedFrom) pairs: own, then every ancestor's, then the drive's members."""
        out: list[tuple[Perm, str | None]] = []
        if rec.owner:
            out.append(
                (
                    Perm(
                        "own-" + hashlib.sha1(rec.owner.encode()).hexdigest()[:8],
                        "user",
                        "owner",
                        email=rec.owner,
                    ),
                    None,
                )
            )
        out += [(p, None) for p in rec.perms]
        for a in self.ancestors(rec):
            if a.drive_id and a.id == a.drive_id:
                out += [(p, a.id) for p in self.drives[a.id]["members"]]
            else:
                out += [(p, a.id) for p in a.perms]
        return out

    def member_of(self, user: str, email: str | None) -> bool:
        return email == user or user in self.groups.get(email or "", set())

    def can_list(self, user: str, rec: FileRec) -> bool:
        """Explicit access only: domain/anyone sharing does not put a file in someone's corpus."""
        return any(
            p.type in ("user", "group") and self.member_of(user, p.email)
            for p, _ in self.effective_perms(rec)
        )

    def is_member(self, user: str, drive_id: str) -> bool:
        return any(self.member_of(user, p.email) for p in self.drives[drive_id]["members"])

    def file_resource(self, rec: FileRec) -> dict:
        r = {
            "kind": "drive#file",
            "id": rec.id,
            "name": rec.name,
            "mimeType": rec.mime,
            "trashed": rec.trashed,
            "version": str(rec.version),
            "createdTime": rfc3339(rec.created),
            "modifiedTime": rfc3339(rec.modified),
            "webViewLink": f"https://docs.example.test/{rec.id}/view",
            "permissionIds": [p.id for p, _ in self.effective_perms(rec)],
        }
        if rec.parent:
            r["parents"] = [rec.parent]
        if rec.drive_id:
            r["driveId"] = rec.drive_id
        else:
            r["owners"] = [
                {
                    "kind": "drive#user",
                    "emailAddress": rec.owner,
                    "displayName": (rec.owner or "").split("@")[0],
                }
            ]
            r["permissions"] = [p.resource() for p, _ in self.effective_perms(rec)]
        if rec.mime != FOLDER:
            r["size"] = str(len(rec.content))
        if rec.binary:
            r["md5Checksum"] = hashlib.md5(rec.content).hexdigest()
        return r

    # -- tokens and OAuth ---------------------------------------------------------------------
    def service_account_info(
        self, email: str = "indexer@proj.iam.gserviceaccount.com", *, delegation: bool = True
    ) -> dict:
        """A service-account JSON key the fake's /token endpoint accepts (``delegation``: may use ``sub``)."""
        pem, public = make_jwt_key()
        with self.lock:
            self.service_accounts[email] = (public, delegation)
        return {
            "type": "service_account",
            "project_id": "proj",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": email,
            "client_id": "1",
            "token_uri": self.url + "/token",
        }

    def authorized_user_info(self, email: str) -> dict:
        """An authorized-user JSON (refresh token) for ``email``."""
        rt = "1//" + hashlib.sha1(os.urandom(8)).hexdigest()
        with self.lock:
            self.refresh_tokens[rt] = (email, "client-1.apps.googleusercontent.com", "secret-1")
        return {
            "type": "authorized_user",
            "client_id": "client-1.apps.googleusercontent.com",
            "client_secret": "secret-1",
            "refresh_token": rt,
            "token_uri": self.url + "/token",
        }

    def issue_token(self, email: str, scopes: set[str]) -> dict:
        tok = "ya29." + hashlib.sha1(os.urandom(16)).hexdigest()
        with self.lock:
            self.access_tokens[tok] = (email, scopes)
        return {
            "access_token": tok,
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": " ".join(sorted(scopes)),
        }

    def grant(self, form: dict[str, str]) -> dict:
        gt = form.get("grant_type")
        if gt == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            claims = verify_jwt(
                form.get("assertion", ""), {e: k for e, (k, _) in self.service_accounts.items()}
            )
            if (
                claims.get("aud") not in (GOOGLE_TOKEN_URI, self.url + "/token")
                or claims.get("exp", 0) < time.time()
            ):
                raise ApiError(400, "invalid_grant", f"Invalid JWT: audience {claims.get('aud')} or expiry")
            email, sub = claims["iss"], claims.get("sub")
            if sub:
                if not self.service_accounts[email][1]:
                    raise ApiError(
                        401,
                        "unauthorized_client",
                        "Client is unauthorized to retrieve access tokens using this method",
                    )
                if sub not in self.users:
                    raise ApiError(400, "invalid_grant", "Invalid email or User ID")
            return self.issue_token(sub or email, set(claims.get("scope", "").split()))
        if gt == "refresh_token":
            entry = self.refresh_tokens.get(form.get("refresh_token", ""))
            if not entry or (form.get("client_id"), form.get("client_secret")) != entry[1:]:
                raise ApiError(400, "invalid_grant", "Token has been expired or revoked.")
            return self.issue_token(entry[0], {SCOPE_RO, SCOPE_META})
        raise ApiError(400, "unsupported_grant_type", f"Invalid grant_type: {gt}")

    # -- faults ---------------------------------------------------------------------------------
    def inject(
        self, kind: str, *, times: int = 1, after: int = 0, path: str = "", retry_after: float | None = None
    ) -> None:
        """Fail the next ``times`` API calls whose path contains ``path`` (after skipping ``after``).

        ``kind``: rate_limit (403 userRateLimitExceeded), 429, 500, drop (close the connection).
        """
        with self.lock:
            self.faults.append(
                {"kind": kind, "times": times, "after": after, "path": path, "retry_after": retry_after}
            )

    def invalidate_page_tokens(self) -> None:
        """Every files.list page token and every change token issued so far becomes invalid."""
        with self.lock:
            self.token_epoch += 1
            self.log.append(("", time.time()))  # a no-op entry, so the current start token is also stale
            self.log_floor = len(self.log) + 1

    def take_fault(self, path: str) -> dict | None:
        with self.lock:
            for f in self.faults:
                if f["times"] > 0 and f["path"] in path:
                    if f["after"] > 0:
                        f["after"] -= 1
                        return None
                    f["times"] -= 1
                    return f
            return None

    def downloads(self) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.is_download and r.status == 200]

    def count(self, suffix: str = "", *, method: str = "GET") -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.path.endswith(suffix) and r.method == method)


class FakeDrive:
    """Runs a ``DriveWorld`` behind a threaded HTTP server on 127.0.0.1:<free port>.

    ``url`` is the API root to pass as ``api_endpoint`` (``url + "/drive/v3/"``) and token endpoint
    base (``url + "/token"``). Use as a context manager or call ``close()``.
    """

    def __init__(self, world: DriveWorld | None = None, **world_kw):
        self.world = world or DriveWorld(**world_kw)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDriveHandler)
        self.server.daemon_threads = True
        self.server.world = self.world  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.world.url = self.url
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-gdrive", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- a world made of handbook pages -----------------------------------------------------------------
HANDBOOK = (
    Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "sourcegraph-handbook" / "content"
)


def handbook_pages(root: Path = HANDBOOK) -> list[tuple[str, str]]:
    """(name, markdown) for every page with some text, in a stable order; empty if the corpus is absent."""
    if not root.is_dir():
        return []
    pages = [
        (p.relative_to(root).with_suffix("").as_posix().replace("/", "-"), p.read_text(errors="replace"))
        for p in sorted(root.rglob("*.md"))
    ]
    return [(name, text) for name, text in pages if len(re.sub(r"\W", "", text)) >= 40]


def to_csv(md: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["line", "text"])
    for i, line in enumerate(l for l in md.splitlines() if l.strip()):
        w.writerow([i + 1, line.strip()])
    return buf.getvalue()


_KINDS = [(GDOC, ""), (GSHEET, ""), (GSLIDES, ""), ("text/markdown", ".md"), ("text/plain", ".txt")]


def populate(
    world: DriveWorld,
    n_files: int,
    *,
    pages: list[tuple[str, str]] | None = None,
    shared_drives: tuple[str, ...] = ("Engineering", "People Ops"),
) -> dict[str, object]:
    """Add ``n_files`` files made of handbook pages to ``world``: My Drive and shared drives, nested folders.

    Returns ``{"files": {id: name}, "folders": {name: id}, "drives": {name: id}}``. File kinds cycle
    through Google Docs, Sheets (CSV of the page's lines), Slides, Markdown and plain-text blobs.
    My Drive files are private to the admin except the "Shared" folder, shared with the whole domain.
    """
    pages = pages if pages is not None else handbook_pages()
    if not pages:
        raise FileNotFoundError(f"handbook corpus not found at {HANDBOOK}")
    folders: dict[str, str] = {}
    drives = {
        name: world.add_drive(name, members={world.admin: "organizer", **{u: "reader" for u in world.users}})
        for name in shared_drives
    }
    roots = [("My Drive", world.root(world.admin))] + list(drives.items())
    leaves: list[str] = []
    for rname, rid in roots:
        leaves.append(rid)
        for top in ("Policies", "Projects", "Shared") if rname == "My Drive" else ("Guides", "Teams"):
            t = folders[f"{rname}/{top}"] = world.add_folder(top, rid)
            sub = folders[f"{rname}/{top}/Archive"] = world.add_folder("Archive", t)
            deep = folders[f"{rname}/{top}/Archive/2024"] = world.add_folder("2024", sub)
            leaves += [t, sub, deep]
    if "My Drive/Shared" in folders:
        world.share(folders["My Drive/Shared"], "domain", domain=world.domain, discoverable=True)
    files: dict[str, str] = {}
    for i in range(n_files):
        name, text = pages[i % len(pages)]
        mime, ext = _KINDS[i % len(_KINDS)]
        body = to_csv(text) if mime == GSHEET else text
        fid = world.add_file(
            f"{name}{ext}" if i < len(pages) else f"{name} ({i // len(pages)}){ext}",
            mime,
            body,
            leaves[i % len(leaves)],
        )
        files[fid] = world.files[fid].name
    return {"files": files, "folders": folders, "drives": drives}
