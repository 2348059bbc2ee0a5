"""A folder on disk as a source: the embedded default connector.

Every run lists the whole folder (a stat per file is cheap) in pages of ``page_size`` paths, with
``version = mtime_ns-size-aclhash``, so sync skips unchanged files without reading them. Deleted
files disappear through pruning on the last page. Hidden files and folders are skipped.

Access: public unless an ACL file (TOML) says otherwise. Format::

    [[rule]]
    glob = "restricted/**"          # fnmatch-style, matched against the path relative to the folder
    users = ["alice@example.com"]
    groups = ["finance@example.com"]
    domains = []
    public = false

The LAST matching rule wins; a file that matches no rule is public. A rule with no principals and
``public = false`` makes its files readable by nobody (fail closed).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from assistant.documents import Access, ChangePage, Document, ItemRef
from assistant.errors import ConfigError, NotFound
from assistant.parsing import guess_mime


@dataclass(frozen=True)
class AclRule:
    glob: str
    access: Access


def load_acl(path: Path | None) -> list[AclRule]:
    if path is None:
        return []
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"ACL file {path} does not exist. Pass an existing TOML file with --acl-file.") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"ACL file {path} is not valid TOML ({e}). See connectors/local_files.py for the format.") from None
    rules = []
    for i, r in enumerate(data.get("rule", [])):
        if not isinstance(r, dict) or not isinstance(r.get("glob"), str):
            raise ConfigError(f'ACL file {path}: rule #{i + 1} needs a glob, e.g. glob = "restricted/**"')
        unknown = set(r) - {"glob", "users", "groups", "domains", "public"}
        if unknown:
            raise ConfigError(f"ACL file {path}: rule #{i + 1} has unknown keys {sorted(unknown)}; "
                              "allowed: glob, users, groups, domains, public")
        rules.append(AclRule(r["glob"], Access(frozenset(r.get("users", [])), frozenset(r.get("groups", [])),
                                               frozenset(r.get("domains", [])), bool(r.get("public", False)))))
    return rules


def _matches(glob: str, rel: str) -> bool:
    if fnmatch.fnmatchcase(rel, glob):
        return True
    # "dir/**" also matches files directly in dir; "**/x" also matches x at the top
    return (glob.endswith("/**") and rel.startswith(glob[:-2])) or (
        glob.startswith("**/") and fnmatch.fnmatchcase(rel, glob[3:]))


def access_for(rel: str, rules: list[AclRule]) -> Access:
    acc = Access.everyone()
    for rule in rules:
        if _matches(rule.glob, rel):
            acc = rule.access
    return acc


_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.M)
_FM_TITLE = re.compile(r"\A---\s*\n(?:.*\n)*?title:\s*[\"']?(.+?)[\"']?\s*\n(?:.*\n)*?---", re.M)


def title_of(rel: str, content: bytes, mime: str) -> str:
    if mime in ("text/markdown", "text/plain"):
        head = content[:4096].decode("utf-8", "ignore")
        m = _FM_TITLE.match(head) or _H1.search(head)
        if m:
            return m.group(1).strip()
    stem = Path(rel).stem.replace("-", " ").replace("_", " ").strip()
    return stem[:1].upper() + stem[1:] if stem else rel


def _looks_like_text(content: bytes) -> bool:
    head = content[:4096]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a multi-byte character cut at the 4 KB boundary
    return True


class LocalFilesConnector:
    def __init__(self, root: Path, *, name: str | None = None, acl_file: Path | None = None,
                 page_size: int = 200) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ConfigError(f"{root} is not a folder. Give `assistant ingest` an existing folder.")
        self.name = name or self.root.name
        self.acl_file = Path(acl_file).resolve() if acl_file else None
        self.rules = load_acl(self.acl_file)
        self._acl_hash = hashlib.sha256(json.dumps([(r.glob, sorted(r.access.tokens())) for r in self.rules])
                                        .encode()).hexdigest()[:12]
        self.page_size = page_size

    def _files(self) -> Iterator[tuple[str, os.stat_result]]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fn in sorted(filenames):
                if fn.startswith("."):
                    continue
                full = Path(dirpath) / fn
                if self.acl_file is not None and full == self.acl_file:
                    continue
                try:
                    st = full.stat()
                except OSError:
                    continue
                yield full.relative_to(self.root).as_posix(), st

    def _version(self, rel: str, st: os.stat_result) -> str:
        acc = access_for(rel, self.rules)
        return f"{st.st_mtime_ns}-{st.st_size}-{hashlib.sha256(','.join(sorted(acc.tokens())).encode()).hexdigest()[:8]}"

    def changes(self, cursor: str | None) -> Iterator[ChangePage]:
        # Cursor: index of the next page within the (sorted) listing. Files added while we run shift
        # it a little; upserts are idempotent and the final prune fixes the rest.
        start = int(cursor.split(":", 1)[1]) if cursor and cursor.startswith("offset:") else 0
        files = list(self._files())
        if not files:
            yield ChangePage(prune=True)
            return
        for i in range(start, len(files), self.page_size):
            page = files[i:i + self.page_size]
            last = i + self.page_size >= len(files)
            refs = tuple(ItemRef(rel, version=self._version(rel, st)) for rel, st in page)
            yield ChangePage(upserts=refs, next_cursor=None if last else f"offset:{i + self.page_size}", prune=last)
        if start >= len(files):
            yield ChangePage(prune=True)

    def fetch(self, ref: ItemRef) -> Document:
        full = self.root / ref.id
        try:
            st = full.stat()
            content = full.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{ref.id} no longer exists") from None
        mime = guess_mime(ref.id)
        if mime == "application/octet-stream" and _looks_like_text(content):
            mime = "text/plain"  # README, LICENSE, Makefile…: extensionless text files
        title = title_of(ref.id, content, mime)
        meta = {} if mime in ("text/markdown", "text/plain") else {"title_from": "filename"}
        return Document(id=ref.id, source=self.name, path=ref.id, title=title, mime=mime, content=content,
                        access=access_for(ref.id, self.rules), version=self._version(ref.id, st),
                        modified=st.st_mtime, url=full.as_uri(), metadata=meta)

    def list_ids(self) -> Iterator[str]:
        for rel, _ in self._files():
            yield rel
