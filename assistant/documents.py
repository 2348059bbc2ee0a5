"""The data model shared by connectors and the core: small frozen dataclasses, a leaf module.

Access control lives here because it must be identical everywhere: an ``Access`` is turned into
principal tokens (``user:alice@x.com``, ``group:eng@x.com``, ``domain:x.com``, ``public``) that the
store indexes, and a ``Principals`` (who is asking) is turned into the same tokens. A document is
visible exactly when the two token sets intersect. An empty Access matches nothing: fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PUBLIC = "public"


def _norm(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in values if v and v.strip())


@dataclass(frozen=True)
class Access:
    """Who may read a document. Empty (the default) means nobody: unknown permissions fail closed."""

    users: frozenset[str] = frozenset()  # emails
    groups: frozenset[str] = frozenset()  # group ids or group emails; also "slack:T123" workspaces
    domains: frozenset[str] = frozenset()  # e.g. "example.com"
    public: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "users", _norm(self.users))
        object.__setattr__(self, "groups", _norm(self.groups))
        object.__setattr__(self, "domains", _norm(self.domains))

    @classmethod
    def everyone(cls) -> Access:
        return cls(public=True)

    @classmethod
    def nobody(cls) -> Access:
        return cls()

    def tokens(self) -> frozenset[str]:
        out = {f"user:{u}" for u in self.users}
        out |= {f"group:{g}" for g in self.groups}
        out |= {f"domain:{d}" for d in self.domains}
        if self.public:
            out.add(PUBLIC)
        return frozenset(out)

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> Access:
        users, groups, domains, public = set(), set(), set(), False
        for t in tokens:
            kind, _, value = t.partition(":")
            if t == PUBLIC:
                public = True
            elif kind == "user":
                users.add(value)
            elif kind == "group":
                groups.add(value)
            elif kind == "domain":
                domains.add(value)
        return cls(frozenset(users), frozenset(groups), frozenset(domains), public)

    def allows(self, who: Principals) -> bool:
        return bool(self.tokens() & who.tokens())


@dataclass(frozen=True)
class Principals:
    """Who is asking: an email (or none for an unknown user), the groups they belong to.

    An unknown asker (``email=None``) still sees public documents and nothing else.
    ``everything=True`` is the administrator's view (CLI without ``--as``).
    """

    email: str | None = None
    groups: frozenset[str] = frozenset()
    everything: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "email", self.email.strip().lower() if self.email else None)
        object.__setattr__(self, "groups", _norm(self.groups))

    @property
    def domain(self) -> str | None:
        if self.email and "@" in self.email:
            return self.email.rsplit("@", 1)[1]
        return None

    def tokens(self) -> frozenset[str]:
        out = {PUBLIC}
        if self.email:
            out.add(f"user:{self.email}")
        if self.domain:
            out.add(f"domain:{self.domain}")
        out |= {f"group:{g}" for g in self.groups}
        return frozenset(out)


@dataclass(frozen=True)
class Document:
    """One item from a source, with its raw content and who may read it.

    ``content`` is raw bytes interpreted through ``mime`` by ``assistant.parsing``; a connector
    that already has text (a Slack thread) encodes it as UTF-8 with ``text/markdown``.
    ``id`` is unique within ``source``; ``path`` is what people recognise (folder/file.md,
    #channel/thread); ``version`` changes whenever the content or its access changes.
    """

    id: str
    source: str
    path: str
    title: str
    mime: str
    content: bytes
    access: Access
    version: str
    modified: float | None = None  # POSIX seconds, UTC
    url: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """A span of a document's parsed text; ``text[start:end]`` of the parsed text is ``text``."""

    doc_id: str
    ordinal: int
    text: str
    heading_path: tuple[str, ...] = ()
    start: int = 0
    end: int = 0

    def embedding_text(self, title: str) -> str:
        """Title and heading path prefixed, so a chunk is findable by the section it sits in."""
        head = " > ".join(h for h in (title, *self.heading_path) if h)
        return f"{head}\n{self.text}" if head else self.text


@dataclass(frozen=True)
class ItemRef:
    """A pointer to an item at the source, as listed in a change page.

    ``version`` (when the listing knows it) lets sync skip unchanged items without fetching.
    ``meta`` carries whatever the connector already learned while listing (so ``fetch`` can avoid
    a second metadata call); sync passes it back untouched.
    """

    id: str
    version: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ChangePage:
    """One page of changes. Sync saves ``next_cursor`` only after the page is durably indexed.

    ``prune``: set on the last page of a *full* enumeration. After indexing it, sync deletes
    every stored document of this source whose id is not in ``connector.list_ids()``.
    ``next_cursor=None`` means "next run starts a full enumeration again".
    """

    upserts: tuple[ItemRef, ...] = ()
    deletions: tuple[str, ...] = ()
    next_cursor: str | None = None
    prune: bool = False


@dataclass(frozen=True)
class Failure:
    """A per-item failure: recorded, shown by ``status``, retried next run. Never aborts a run."""

    source: str
    item_id: str
    stage: str  # fetch | parse | index
    reason: str
