"""Bad input through the real Engine: ingest, search and ask must give clear errors or truncate, never crash.

Files (a local folder ingested by ``Engine.sync``): corrupt PDF/DOCX/XLSX/PPTX, a zip bomb dressed
as a DOCX, a 100 MB file (sparse, recorded as a failure without parsing), non-UTF-8 text, empty and
whitespace-only files, NUL bytes, RTL/emoji text and file names. Questions: 10,000 characters,
empty, NUL, lone surrogates, RTL, emoji, control characters — through ``search`` and ``ask``.
Parser fuzzing lives in ``tests/test_parsing_fuzz.py``; this file is about the whole path.
Vectors come from ``tests/fakes/hash_embedder`` (the path is what is tested, not meaning).
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from assistant.documents import Principals
from assistant.engine import Engine
from assistant.service import Assistant
from connectors.local_files import LocalFilesConnector
from tests.conftest import make_settings
from tests.fakes.hash_embedder import HashEmbedder

BOB = Principals(email="bob@example.com")
GOOD = "# Parking\n\nVisitor parking is on level B2; register the plate at reception.\n"


def zip_bomb_docx(uncompressed_mb: int) -> bytes:
    """A DOCX-shaped zip whose document.xml inflates to ``uncompressed_mb`` MB (about 0.1% of it on disk)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
            'package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/></Types>',
        )
        with z.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(
                b'<?xml version="1.0"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
            )
            block = b"A" * (1 << 20)
            for _ in range(uncompressed_mb):
                f.write(block)
            f.write(b"</w:t></w:r></w:p></w:body></w:document>")
    return buf.getvalue()


# name -> (content, what must happen: "failed" | "indexed" | "empty")
FILES = {
    "broken.pdf": (b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer garbage", "failed"),
    "broken.docx": (b"PK\x03\x04 this is not a real zip archive", "failed"),
    "broken.xlsx": (b"PK\x05\x06" + b"\x00" * 18, "failed"),
    "broken.pptx": (b"\x00\x01\x02 random bytes \xff\xfe", "failed"),
    "not-really.html": (
        b"<html><body><p>Unclosed <b>tags <i>everywhere<table><tr><td>Lobby hours 8-6",
        "indexed",
    ),
    "latin1.txt": (
        "Caf\u00e9 opening hours: the caf\u00e9 opens at 8 \u00e0 l'heure.\n".encode("latin-1"),
        "indexed",
    ),
    "mixed-bytes.md": (
        b"# Lockers\n\nDay lockers \xff\xfe\xc3 are free \x80\x81 bring a padlock.\n",
        "indexed",
    ),
    "nul-bytes.txt": (b"Shuttle\x00bus runs\x00 every 20 minutes\x00\x00.\n", "indexed"),
    "empty.md": (b"", "empty"),
    "whitespace.txt": (b"  \n\n\t \r\n   ", "empty"),
    "rtl-\u05e9\u05dc\u05d5\u05dd.md": (
        "# \u05e9\u05dc\u05d5\u05dd\n\n\u0645\u0631\u062d\u0628\u0627 "
        "Welcome desk \U0001f44b hours 9-5 \u202eevil\u202c.\n".encode(),
        "indexed",
    ),
    "emoji-\U0001f389.md": (
        "# Party \U0001f389\U0001f973\n\nThe holiday party \U0001f384 is on December 12.\n".encode(),
        "indexed",
    ),
    "bom-utf16.txt": ("\ufeffPrinter toner is in the supply cabinet.".encode("utf-16"), "indexed"),
    "good.md": (GOOD.encode(), "indexed"),
}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-input")
    folder = tmp / "docs"
    folder.mkdir()
    for name, (content, _) in FILES.items():
        (folder / name).write_bytes(content)
    (folder / "bomb.docx").write_bytes(zip_bomb_docx(200))
    with open(folder / "huge.txt", "wb") as f:  # 100 MB, sparse: costs no disk
        f.truncate(100 * 1024 * 1024)
    settings = make_settings(tmp / "data", sync={"max_file_mb": 50.0})
    eng = Engine.open(settings, embedder=HashEmbedder())
    rep = eng.sync(LocalFilesConnector(folder, name="bad"))
    yield {"engine": eng, "report": rep, "settings": settings, "folder": folder}
    eng.close()


def test_every_file_is_accounted_for_and_nothing_crashed(ingested):
    eng, rep = ingested["engine"], ingested["report"]
    failed = {f.item_id for f in rep.failures}
    stored = eng.store.document_ids("bad")
    assert failed | stored == set(FILES) | {"bomb.docx", "huge.txt"}
    assert not failed & stored
    assert {n for n, (_, want) in FILES.items() if want == "failed"} <= failed
    assert {n for n, (_, want) in FILES.items() if want in ("indexed", "empty")} <= stored
    assert eng.store.integrity_ok() and np.array_equal(np.sort(eng.index.ids()), eng.store.chunk_ids())


def test_failures_say_what_is_wrong(ingested):
    reasons = {f.item_id: f.reason for f in ingested["report"].failures}
    for name in ("broken.pdf", "broken.docx", "broken.xlsx", "broken.pptx"):
        assert reasons[name] and "Traceback" not in reasons[name], name
    assert "over the parse limit" in reasons["huge.txt"] and "104.9 MB" in reasons["huge.txt"]
    assert ingested["engine"].status()["failures"]  # shown by `assistant status`


def test_a_zip_bomb_is_refused_not_inflated(ingested):
    reasons = {f.item_id: f.reason for f in ingested["report"].failures}
    assert "zip bomb" in reasons["bomb.docx"]  # 200 MB of XML in a 0.2 MB file: refused by its ratio


def test_empty_files_are_indexed_without_chunks(ingested):
    eng = ingested["engine"]
    for name in ("empty.md", "whitespace.txt"):
        row = eng.store.get_document("bad", name)
        assert row is not None and eng.store.chunks_of(row.key) == []


@pytest.mark.parametrize(
    "name, query",
    [
        ("latin1.txt", "café opening hours"),
        ("mixed-bytes.md", "day lockers padlock"),
        ("nul-bytes.txt", "shuttle bus every 20 minutes"),
        ("rtl-\u05e9\u05dc\u05d5\u05dd.md", "welcome desk hours"),
        ("emoji-\U0001f389.md", "holiday party december"),
        ("bom-utf16.txt", "printer toner supply cabinet"),
        ("not-really.html", "lobby hours"),
    ],
)
def test_odd_encodings_are_searchable(ingested, name, query):
    hits = ingested["engine"].search(query, who=BOB, k=3)
    assert name in [h.path for h in hits]
    assert all("\x00" not in h.text for h in hits)


QUESTIONS = {
    "10k characters": "Where do visitors park? " + "please " * 1430,
    "empty": "",
    "only spaces": "   \n\t  ",
    "NUL": "visitor\x00parking\x00",
    "lone surrogates": "visitor parking \ud800 \udfff",
    "RTL": "\u05d0\u05d9\u05e4\u05d4 \u05d7\u05e0\u05d9\u05d4 parking \u202e?",
    "emoji": "\U0001f697\U0001f17f\ufe0f visitor parking?",
    "control chars": "visitor\x1b[31m parking\x07\x08",
    "FTS syntax": 'parking" OR NEAR(a b) AND * ^ - : ( ) {',
    "combining marks": "pa\u0301rking" + "\u0301" * 500,
}


@pytest.mark.parametrize("kind", sorted(QUESTIONS))
def test_hostile_questions_get_results_or_a_refusal_never_a_crash(ingested, kind):
    q = QUESTIONS[kind]
    eng = ingested["engine"]
    hits = eng.search(q, who=BOB, k=5)
    assert all(h.text for h in hits)
    ans = Assistant(ingested["settings"], engine=eng, llm=None).ask(q, who=BOB)
    assert ans.answer and len(ans.question) <= 2000
    if "parking" in q.lower() and kind not in ("lone surrogates",):
        assert not ans.refused or ans.retrieved  # something relevant was at least retrieved
