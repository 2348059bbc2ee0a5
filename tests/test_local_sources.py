"""Local folders fail closed: access rules and the folder stay with the source (issue #21).

Through the same code the CLI runs (``plan_local_ingest`` + ``LocalPlan.run``) with the hash embedder;
``tests/test_cli_inputs.py`` drives the ``assistant`` command itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.documents import Principals
from assistant.engine import Engine
from assistant.errors import ConfigError
from assistant.local_ingest import plan_local_ingest
from connectors.local_files import LocalFilesConnector, load_acl
from tests.conftest import make_settings
from tests.fakes.hash_embedder import HashEmbedder

ALICE = Principals(email="alice@example.com")
EVE = Principals(email="eve@example.com")
ACL = '[[rule]]\nglob = "restricted/**"\nusers = ["alice@example.com"]\n'


def _folder(root: Path) -> Path:
    (root / "restricted").mkdir(parents=True)
    (root / "restricted" / "pay.md").write_text("# Pay bands\n\nThe L5 salary band canary is zebra-4471.\n")
    (root / "hello.md").write_text("# Hello\n\nThe cafeteria opens at eight.\n")
    return root


@pytest.fixture
def eng(tmp_path):
    e = Engine.open(make_settings(tmp_path / "data"), embedder=HashEmbedder())
    yield e
    e.close()


def ingest(eng, path, **kw):
    plan = plan_local_ingest(eng.store, path, **kw)
    return plan, plan.run(eng)


def sees_canary(eng, who) -> bool:
    return any("zebra-4471" in h.text for h in eng.search("salary band canary zebra-4471", who=who, k=5))


def test_rerun_without_acl_file_keeps_the_rules(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (tmp_path / "acl.toml").write_text(ACL)
    ingest(eng, docs, acl_file=tmp_path / "acl.toml")
    assert sees_canary(eng, ALICE) and not sees_canary(eng, EVE)
    (docs / "restricted" / "pay.md").write_text(
        "# Pay bands\n\nThe L5 salary band canary is zebra-4471, edited.\n"
    )
    plan, rep = ingest(eng, docs)  # no --acl-file: the saved rules apply
    assert rep.updated == 1 and plan.notices == []
    assert sees_canary(eng, ALICE) and not sees_canary(eng, EVE)


def test_changing_or_dropping_rules_needs_a_flag_and_says_who_gains_access(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (tmp_path / "acl.toml").write_text(ACL)
    ingest(eng, docs, acl_file=tmp_path / "acl.toml")
    (tmp_path / "acl2.toml").write_text('[[rule]]\nglob = "restricted/**"\nusers = ["bob@example.com"]\n')
    with pytest.raises(ConfigError) as e:
        ingest(eng, docs, acl_file=tmp_path / "acl2.toml")
    assert "--replace-acl" in str(e.value) and "1 file becomes readable by bob@example.com" in str(e.value)
    assert sees_canary(eng, ALICE)  # nothing changed
    with pytest.raises(ConfigError, match="--replace-acl"):
        ingest(eng, docs, drop_acl=False, acl_file=None, replace_acl=True)  # a flag without rules
    plan, _ = ingest(eng, docs, drop_acl=True)
    assert plan.notices[0] == "access: 1 file becomes public (was: alice@example.com)"
    assert sees_canary(eng, EVE)
    plan, rep = ingest(eng, docs)  # the dropped rules stay dropped: nothing changes silently
    assert plan.notices == [] and rep.updated == 0


def test_an_index_from_before_saved_rules_is_not_opened_by_a_plain_rerun(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (tmp_path / "acl.toml").write_text(ACL)
    eng.sync(LocalFilesConnector(docs, acl_file=tmp_path / "acl.toml"))  # the old way: nothing saved
    with pytest.raises(ConfigError) as e:
        ingest(eng, docs)
    assert "1 file becomes public (was: alice@example.com)" in str(e.value) and "--acl-file" in str(e.value)
    assert not sees_canary(eng, EVE)
    ingest(eng, docs, acl_file=tmp_path / "acl.toml")  # the same rules: accepted and saved from now on
    assert eng.store.get_source_settings("docs")["rules"][0]["users"] == ["alice@example.com"]


@pytest.mark.parametrize(
    "body, words",
    [
        ('[[rule]]\nglob = "restricted/**"\npublic = "false"\n', ["public must be true or false", "str"]),
        ('[[rule]]\nglob = "restricted/**"\nusers = "alice@example.com"\n', ["users must be a list", "str"]),
        ('[[rule]]\nglob = "restricted/**"\nuser = ["alice@example.com"]\n', ["unknown keys ['user']"]),
        ('[[rule]]\nglob = "restricted/**"\nusers = ["alice"]\n', ["must be email addresses", "'alice'"]),
        ('[[rule]]\nglob = "restricted/**"\ngroups = [1]\n', ["groups must be a list of non-empty strings"]),
        ('[[rules]]\nglob = "restricted/**"\n', ["unknown top-level keys ['rules']"]),
        ('[[rule]]\nusers = ["alice@example.com"]\n', ["needs a glob"]),
    ],
)
def test_acl_file_types_and_keys_are_checked(tmp_path, body, words):
    f = tmp_path / "acl.toml"
    f.write_text(body)
    with pytest.raises(ConfigError) as e:
        load_acl(f)
    for w in words:
        assert w in str(e.value)
    assert "rule #1" in str(e.value) or "top-level" in str(e.value)


def test_a_glob_that_matches_no_file_is_an_error_naming_it(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (tmp_path / "acl.toml").write_text(ACL + '\n[[rule]]\nglob = "Restricted/*.md"\npublic = false\n')
    with pytest.raises(ConfigError) as e:
        ingest(eng, docs, acl_file=tmp_path / "acl.toml")
    assert "'Restricted/*.md'" in str(e.value) and "match no file" in str(e.value)
    assert eng.store.document_count() == 0


def test_rule_coverage_is_saved_per_source(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (docs / "restricted" / "more.md").write_text("# More\n\nmore text\n")
    (tmp_path / "acl.toml").write_text(ACL + '\n[[rule]]\nglob = "restricted/more.md"\npublic = true\n')
    ingest(eng, docs, acl_file=tmp_path / "acl.toml")
    cov = eng.store.get_source_settings("docs")["coverage"]
    assert cov == [
        {"glob": "restricted/**", "readers": "alice@example.com", "matches": 2, "decides": 1},
        {"glob": "restricted/more.md", "readers": "public", "matches": 1, "decides": 1},
    ]


def test_a_second_folder_with_the_same_name_is_refused_not_merged(eng, tmp_path):
    a = _folder(tmp_path / "a" / "docs")
    b = tmp_path / "b" / "docs"
    b.mkdir(parents=True)
    (b / "other.md").write_text("# Other\n\nanother folder\n")
    ingest(eng, a)
    with pytest.raises(ConfigError) as e:
        ingest(eng, b)
    msg = str(e.value)
    assert str(a) in msg and str(b) in msg and "--source" in msg and "--replace-source" in msg
    assert eng.store.document_count("docs") == 2
    ingest(eng, b, source="docs-b")
    assert eng.store.sources() == {"docs": 2, "docs-b": 1}
    _, rep = ingest(eng, b, replace_source=True)
    assert rep.deleted == 2 and eng.store.document_ids("docs") == {"other.md"}


def test_the_same_name_check_covers_indexes_from_before_saved_settings(eng, tmp_path):
    a = _folder(tmp_path / "a" / "docs")
    b = tmp_path / "b" / "docs"
    b.mkdir(parents=True)
    (b / "other.md").write_text("# Other\n\nanother folder\n")
    eng.sync(LocalFilesConnector(a))  # nothing saved
    with pytest.raises(ConfigError, match="--replace-source"):
        ingest(eng, b)
    assert eng.store.document_count("docs") == 2


def test_an_empty_folder_is_refused_with_a_hint_and_never_empties_the_source(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    ingest(eng, docs)
    for p in sorted(docs.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    with pytest.raises(ConfigError) as e:
        ingest(eng, docs)
    assert "No supported files found in" in str(e.value) and "--allow-empty" in str(e.value)
    assert eng.store.document_count("docs") == 2
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    with pytest.raises(ConfigError, match=r"none of a supported type \(\.png\)"):
        ingest(eng, docs)
    _, rep = ingest(eng, docs, allow_empty=True)
    assert rep.deleted == 2


def test_unsupported_files_are_skipped_once_not_failed_every_run(eng, tmp_path):
    docs = _folder(tmp_path / "docs")
    (docs / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (docs / "archive.zip").write_bytes(b"PK\x03\x04\x00\x00\xff")
    _, rep = ingest(eng, docs)
    assert rep.skipped == 2 and rep.failed == 0 and rep.added == 2
    assert "2 skipped (unsupported type)" in rep.line()
    _, rep = ingest(eng, docs)
    assert rep.failed == 0 and rep.skipped == 0 and rep.unchanged == 4
    assert eng.status()["failures"] == [] and eng.store.skipped_counts() == {"docs": 2}


def test_progress_has_a_total_and_advances_per_file_within_a_page(eng, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(40):  # one 200-file page; about 6 chunks each
        (docs / f"f{i:02d}.md").write_text(
            f"# File {i}\n\n" + " ".join(f"word{i}x{j}" for j in range(900)) + "\n"
        )
    ticks: list[str] = []
    seen_at_embed: list[int] = []
    inner = eng.embedder

    class Watching:
        dim, tokenizer, name = inner.dim, inner.tokenizer, inner.name

        def __getattr__(self, a):
            return getattr(inner, a)

        def embed(self, texts):
            seen_at_embed.append(len(ticks))
            return inner.embed(texts)

    eng._embedder = Watching()
    plan = plan_local_ingest(eng.store, docs)
    assert plan.total_files == 40
    plan.run(eng, progress=lambda n, what: ticks.extend([what] * n))
    assert ticks.count("added") == 40
    assert (
        len(seen_at_embed) > 1 and seen_at_embed[-1] > 0
    )  # files were reported before the page's last batch
