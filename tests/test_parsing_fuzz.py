"""Property tests: ``parse`` on hostile bytes returns text or raises ParseError, nothing else.

Two kinds of input per format: arbitrary bytes, and a valid document of that format with random
bytes overwritten or cut off (which reaches far deeper into the libraries than random noise).
Bounded: 50 examples per property, no deadline (the machine is shared).
"""

from __future__ import annotations

import functools
import importlib.util
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.errors import ParseError
from assistant.parsing import DOCX, PPTX, XLSX, parse

ROOT = Path(__file__).resolve().parent.parent
MIMES = ["text/markdown", "text/plain", "text/html", "application/pdf", "text/csv", DOCX, PPTX, XLSX]
FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _check(data: bytes, mime: str) -> None:
    try:
        out = parse(data, mime, name="fuzz")
    except ParseError as e:
        assert str(e).startswith("fuzz: ")
        return
    assert isinstance(out, str) and out.strip()
    assert "\x00" not in out
    out.encode("utf-8")  # no lone surrogates: the store must be able to save it


@functools.cache
def seed_document(mime: str) -> bytes:
    """A small valid document of each format, built once."""
    if mime == "application/pdf":
        spec = importlib.util.spec_from_file_location(
            "make_sample_docs", ROOT / "scripts" / "make_sample_docs.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.minimal_pdf([["Hello (world)"], ["Second page"]], title="T")
    buf = io.BytesIO()
    if mime == DOCX:
        import docx

        d = docx.Document()
        d.add_heading("Title", 1)
        d.add_paragraph("Body", style="List Bullet")
        d.add_table(rows=1, cols=2).cell(0, 0).text = "cell"
        d.save(buf)
    elif mime == PPTX:
        from pptx import Presentation

        prs = Presentation()
        s = prs.slides.add_slide(prs.slide_layouts[1])
        s.shapes.title.text = "Slide"
        s.placeholders[1].text = "Point"
        prs.save(buf)
    elif mime == XLSX:
        from openpyxl import Workbook

        wb = Workbook()
        wb.active.append(["a", 1, 2.5])
        wb.save(buf)
    elif mime == "text/html":
        return (
            b"<html><head><title>t</title></head><body><h1>H</h1><ul><li>a<ol><li>b</li></ol></li></ul>"
            b"<table><tr><td>1</td></tr></table><pre>x</pre></body></html>"
        )
    elif mime == "text/csv":
        return b'a,b,c\n1,"2,3",4\n'
    else:
        return "---\ntitle: T\n---\n# H\n\ncafé\n".encode()
    return buf.getvalue()


@pytest.mark.parametrize("mime", MIMES)
@FUZZ
@given(data=st.binary(max_size=2048))
def test_arbitrary_bytes(mime, data):
    _check(data, mime)


@pytest.mark.parametrize("mime", MIMES)
@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)), max_size=6
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_documents(mime, edits, cut):
    data = bytearray(seed_document(mime))
    for where, blob in edits:
        i = int(where * len(data))
        data[i : i + len(blob)] = blob
    if cut is not None:
        data = data[: int(cut * len(data))]
    _check(bytes(data), mime)


_MAIN_PART = {DOCX: "word/document.xml", PPTX: "ppt/slides/slide1.xml", XLSX: "xl/worksheets/sheet1.xml"}


@pytest.mark.parametrize("mime", list(_MAIN_PART))
@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_office_xml(mime, edits):
    """Valid zip container, damaged XML inside: reaches the Office libraries' own parsing."""
    src = zipfile.ZipFile(io.BytesIO(seed_document(mime)))
    xml = bytearray(src.read(_MAIN_PART[mime]))
    for where, blob in edits:
        i = int(where * len(xml))
        xml[i : i + len(blob)] = blob
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(name, bytes(xml) if name == _MAIN_PART[mime] else src.read(name))
    _check(out.getvalue(), mime)
