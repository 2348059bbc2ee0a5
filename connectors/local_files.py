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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from assistant.documents import Access, ChangePage, Document, ItemRef
from assistant.errors import ConfigError, NotFound
from assistant.parsing import guess_mime


@dataclass(frozen=True)
class AclRule:
    glob: str
    access: Access

    def as_json(self) -> dict:
        a = self.access
        return {
            "glob": self.glob,
            "users": sorted(a.users),
            "groups": sorted(a.groups),
            "domains": sorted(a.domains),
            "public": a.public,
        }


_RULE_KEYS = ("glob", "users", "groups", "domains", "public")


def _rule(raw: object, i: int, where: str) -> AclRule:
    """One validated rule. Wrong types are errors, never coerced: ``public = "false"`` would otherwise
    be truthy and ``users = "a@b"`` a set of letters."""
    at = f"{where}: rule #{i + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f'{at} is not a table; write it as [[rule]] with glob = "...".')
    unknown = set(raw) - set(_RULE_KEYS)
    if unknown:
        raise ConfigError(f"{at} has unknown keys {sorted(unknown)}; allowed: {', '.join(_RULE_KEYS)}")
    glob = raw.get("glob")
    if not isinstance(glob, str) or not glob.strip():
        raise ConfigError(f'{at} needs a glob, e.g. glob = "restricted/**"')
    at = f"{at} (glob {glob!r})"
    lists = {}
    for key in ("users", "groups", "domains"):
        v = raw.get(key, [])
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise ConfigError(
                f'{at}: {key} must be a list of non-empty strings, e.g. {key} = ["{_EXAMPLE[key]}"]'
                f" (got {type(v).__name__})."
            )
        lists[key] = v
    bad_users = [u for u in lists["users"] if "@" not in u]
    if bad_users:
        raise ConfigError(f"{at}: users must be email addresses; not one: {bad_users[0]!r}")
    public = raw.get("public", False)
    if not isinstance(public, bool):
        raise ConfigError(f"{at}: public must be true or false without quotes (got {type(public).__name__}).")
    return AclRule(
        glob,
        Access(frozenset(lists["users"]), frozenset(lists["groups"]), frozenset(lists["domains"]), public),
    )


_EXAMPLE = {"users": "alice@example.com", "groups": "finance@example.com", "domains": "example.com"}


def load_acl(path: Path | None) -> list[AclRule]:
    """Read and validate an ACL file (see the module docstring). Every error names the file and rule."""
    if path is None:
        return []
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"ACL file {path} does not exist. Pass an existing TOML file with --acl-file."
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"ACL file {path} is not valid TOML ({e}). See connectors/local_files.py for the format."
        ) from None
    unknown = set(data) - {"rule"}
    if unknown:
        raise ConfigError(
            f"ACL file {path} has unknown top-level keys {sorted(unknown)}; "
            "write each rule as a [[rule]] table."
        )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        raise ConfigError(f"ACL file {path}: 'rule' must be an array of tables ([[rule]]).")
    return [_rule(r, i, f"ACL file {path}") for i, r in enumerate(raw_rules)]


def rules_as_json(rules: list[AclRule]) -> list[dict]:
    return [r.as_json() for r in rules]


def rules_from_json(data: list[dict]) -> list[AclRule]:
    """Rules saved with a source (``rules_as_json``), validated again."""
    return [_rule(r, i, "saved access rules") for i, r in enumerate(data)]


def describe_access(acc: Access | None) -> str:
    """``public``, ``nobody`` or the readers, short enough for one line."""
    if acc is None:
        return "not indexed"
    if acc.public:
        return "public"
    parts = (
        sorted(acc.users)
        + [f"group {g}" for g in sorted(acc.groups)]
        + [f"domain {d}" for d in sorted(acc.domains)]
    )
    if not parts:
        return "nobody"
    return ", ".join(parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else "")


def visibility_changes(old: dict[str, Access], new: dict[str, Access]) -> tuple[list[str], int]:
    """Lines such as ``3 files become public (were: alice@example.com)`` for files whose readers differ
    between ``old`` (what the index holds) and ``new`` (what the rules give), and how many files gain
    readers (the dangerous direction)."""
    groups: dict[tuple[str, str], int] = {}
    widened = 0
    for rel, acc in new.items():
        before = old.get(rel)
        if before is None or before.tokens() == acc.tokens():
            continue
        if acc.tokens() - before.tokens() and not before.public:
            widened += 1
        key = (describe_access(acc), describe_access(before))
        groups[key] = groups.get(key, 0) + 1
    lines = []
    for (now, was), n in sorted(groups.items(), key=lambda kv: (-kv[1], kv[0])):
        files = "1 file becomes" if n == 1 else f"{n} files become"
        target = (
            "public"
            if now == "public"
            else ("readable by nobody" if now == "nobody" else f"readable by {now}")
        )
        lines.append(f"{files} {target} (was: {was})")
    return lines, widened


def _matches(glob: str, rel: str) -> bool:
    if fnmatch.fnmatchcase(rel, glob):
        return True
    # "dir/**" also matches files directly in dir; "**/x" also matches x at the top
    return (glob.endswith("/**") and rel.startswith(glob[:-2])) or (
        glob.startswith("**/") and fnmatch.fnmatchcase(rel, glob[3:])
    )


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
    def __init__(
        self,
        root: Path,
        *,
        name: str | None = None,
        acl_file: Path | None = None,
        rules: list[AclRule] | None = None,
        page_size: int = 200,
    ) -> None:
        """``rules`` (the rules a source was saved with) win over reading ``acl_file``; ``acl_file`` is
        never indexed either way."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ConfigError(f"{root} is not a folder. Give `assistant ingest` an existing folder.")
        self.name = name or self.root.name
        self.acl_file = Path(acl_file).resolve() if acl_file else None
        self.rules = list(rules) if rules is not None else load_acl(self.acl_file)
        self._acl_hash = hashlib.sha256(
            json.dumps([(r.glob, sorted(r.access.tokens())) for r in self.rules]).encode()
        ).hexdigest()[:12]
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
            page = files[i : i + self.page_size]
            last = i + self.page_size >= len(files)
            refs = tuple(ItemRef(rel, version=self._version(rel, st)) for rel, st in page)
            yield ChangePage(
                upserts=refs, next_cursor=None if last else f"offset:{i + self.page_size}", prune=last
            )
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
        return Document(
            id=ref.id,
            source=self.name,
            path=ref.id,
            title=title,
            mime=mime,
            content=content,
            access=access_for(ref.id, self.rules),
            version=self._version(ref.id, st),
            modified=st.st_mtime,
            url=full.as_uri(),
            metadata=meta,
        )

    def list_ids(self) -> Iterator[str]:
        for rel, _ in self._files():
            yield rel

    # -- what a run would do: used by the CLI before it ingests ------------------------------------
    def paths(self) -> list[str]:
        return [rel for rel, _ in self._files()]

    def accesses(self) -> dict[str, Access]:
        """Every listed file's access under this connector's rules."""
        return {rel: access_for(rel, self.rules) for rel in self.paths()}

    def rule_coverage(self) -> list[dict]:
        """Per rule: its glob, readers, how many files it matches and for how many it is the last match
        (the one that decides)."""
        paths = self.paths()
        out = [
            {"glob": r.glob, "readers": describe_access(r.access), "matches": 0, "decides": 0}
            for r in self.rules
        ]
        for rel in paths:
            last = None
            for i, r in enumerate(self.rules):
                if _matches(r.glob, rel):
                    out[i]["matches"] += 1
                    last = i
            if last is not None:
                out[last]["decides"] += 1
        return out

    def unmatched_globs(self) -> list[str]:
        return [c["glob"] for c in self.rule_coverage() if c["matches"] == 0]

    def unsupported(self) -> tuple[int, list[str]]:
        """(files that look readable, extensions of the others): a file counts when its extension is a
        supported type or, without one, when its first bytes look like text."""
        ok, other = 0, set()
        for rel in self.paths():
            if guess_mime(rel) != "application/octet-stream":
                ok += 1
                continue
            try:
                with open(self.root / rel, "rb") as f:
                    head = f.read(4096)
            except OSError:
                continue
            if head and _looks_like_text(head):
                ok += 1
            else:
                other.add(Path(rel).suffix.lower() or Path(rel).name)
        return ok, sorted(other)
