"""Office (OOXML) formats for ``assistant.parsing``: docx, pptx and xlsx to Markdown-ish text, the
zip-bomb check that runs before any of them opens a file, and the cell/table helpers shared with CSV.

Split out of ``formats`` to keep each module readable in one sitting; ``assistant.parsing.parse`` is still the
only entry point. Exceptions raised here are wrapped into ``ParseError`` by ``parse``.
"""

from __future__ import annotations

import datetime as _dt
import io
import re
import zipfile
from collections.abc import Iterable

from assistant.errors import ParseError

MB = 1024 * 1024
_H1 = re.compile(r"^# \S", re.MULTILINE)
MAX_ZIP_RATIO = 200  # OOXML: uncompressed/compressed, checked once the archive unpacks past 8 MB
_RATIO_FLOOR = 8 * MB
MAX_ZIP_ENTRIES = 10_000
MAX_COLUMNS = 64


def cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    elif isinstance(value, _dt.datetime) and value.time() == _dt.time():
        value = value.date()
    if isinstance(value, (_dt.date, _dt.time)):
        value = value.isoformat()
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(rows: Iterable[list[str]]) -> str:
    """Markdown table; the first row is the header. Ragged rows are padded."""
    rows = [r[:MAX_COLUMNS] for r in rows if any(c for c in r)]
    if not rows:
        return ""
    width = max(len(r) for r in rows)
    lines = []
    for i, r in enumerate(rows):
        lines.append("| " + " | ".join(r + [""] * (width - len(r))) + " |")
        if i == 0:
            lines.append("|" + " --- |" * width)
    return "\n".join(lines)


def check_zip(content: bytes, label: str, max_unpacked: int) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            infos = zf.infolist()
    except Exception as e:
        raise ParseError(
            f"{label}: not a valid Office file (the zip container is corrupt: {e}). "
            "Re-save it from Word/PowerPoint/Excel and sync again."
        ) from e
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ParseError(
            f"{label}: {len(infos)} parts inside the Office file (limit {MAX_ZIP_ENTRIES}); "
            "refusing it as a possible zip bomb. Re-save it or exclude it."
        )
    unpacked = sum(i.file_size for i in infos)
    packed = sum(i.compress_size for i in infos) or 1
    if unpacked > max_unpacked:
        raise ParseError(
            f"{label}: unpacks to {unpacked / MB:.0f} MB (limit {max_unpacked / MB:.0f} MB); "
            "refusing it as a possible zip bomb. Split the file or exclude it."
        )
    if unpacked > _RATIO_FLOOR and unpacked / packed > MAX_ZIP_RATIO:
        raise ParseError(
            f"{label}: compression ratio {unpacked / packed:.0f}:1 (limit {MAX_ZIP_RATIO}:1); "
            "refusing it as a possible zip bomb. Re-save it or exclude it."
        )


def parse_docx(content: bytes, kind: str, max_rows: int) -> str:
    import docx
    from docx.table import Table

    doc = docx.Document(io.BytesIO(content))
    blocks: list[str] = []
    for item in doc.iter_inner_content():
        if isinstance(item, Table):
            table = markdown_table([[cell_text(c.text) for c in row.cells] for row in item.rows])
            if table:
                blocks.append(table)
            continue
        text = " ".join(item.text.split())
        if not text:
            continue
        style = (item.style.name if item.style is not None else "") or ""
        level = _heading_level(style)
        if level:
            blocks.append("#" * level + " " + text)
        elif style.startswith("List") or item._p.pPr is not None and item._p.pPr.numPr is not None:
            if blocks and blocks[-1].startswith("- "):
                blocks[-1] += "\n- " + text  # consecutive items form one list block
            else:
                blocks.append("- " + text)
        else:
            blocks.append(text)
    text = "\n\n".join(blocks)
    title = " ".join((doc.core_properties.title or "").split())
    if title and not _H1.search(text):
        text = f"# {title}\n\n{text}"
    return text


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    m = re.fullmatch(r"Heading ([1-9])", style)
    return min(int(m.group(1)), 6) if m else 0


def parse_pptx(content: bytes, kind: str, max_rows: int) -> str:
    from pptx import Presentation

    prs = Presentation(io.BytesIO(content))
    blocks: list[str] = []
    title = " ".join((prs.core_properties.title or "").split())
    if title:
        blocks.append(f"# {title}")
    for n, slide in enumerate(prs.slides, 1):
        title_shape = slide.shapes.title
        has_title = title_shape is not None and title_shape.has_text_frame
        slide_title = " ".join(title_shape.text_frame.text.split()) if has_title else ""
        blocks.append(f"## Slide {n}: {slide_title}" if slide_title else f"## Slide {n}")
        for shape in _shapes(slide.shapes):
            if title_shape is not None and shape.shape_id == title_shape.shape_id:
                continue
            blocks.extend(_shape_blocks(shape))
        if slide.has_notes_slide:
            notes = slide.notes_slide.notes_text_frame
            text = " ".join(notes.text.split()) if notes is not None else ""
            if text:
                blocks.append(f"Notes: {text}")
    return "\n\n".join(blocks)


def _shapes(shapes) -> Iterable:
    for shape in shapes:
        if getattr(shape, "shape_type", None) == 6:  # MSO_SHAPE_TYPE.GROUP
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _shape_blocks(shape) -> list[str]:
    if getattr(shape, "has_table", False) and shape.has_table:
        table = markdown_table([[cell_text(c.text) for c in row.cells] for row in shape.table.rows])
        return [table] if table else []
    if not shape.has_text_frame:
        return []
    bullets = False
    if shape.is_placeholder:
        try:
            bullets = shape.placeholder_format.type in (2, 7)  # BODY, OBJECT
        except ValueError:
            bullets = False
    lines = []
    for p in shape.text_frame.paragraphs:
        text = " ".join("".join(r.text for r in p.runs).split()) or " ".join(p.text.split())
        if text:
            lines.append("  " * p.level + "- " + text if bullets else text)
    if not lines:
        return []
    return ["\n".join(lines)] if bullets else lines


def parse_xlsx(content: bytes, kind: str, max_rows: int) -> str:
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    blocks: list[str] = []
    try:
        for ws in wb.worksheets:
            rows: list[list[str]] = []
            more = False
            for values in ws.iter_rows(values_only=True, max_col=MAX_COLUMNS):
                row = [cell_text(v) for v in values[:MAX_COLUMNS]]
                while row and not row[-1]:
                    row.pop()
                if not row:
                    continue
                if len(rows) > max_rows:
                    more = True
                    break
                rows.append(row)
            table = markdown_table(rows)
            if not table:
                continue
            blocks.append(f"## Sheet: {ws.title}\n\n{table}")
            if more:
                blocks.append(
                    f"(Truncated: only the first {max_rows} rows of sheet {ws.title!r} are indexed.)"
                )
    finally:
        wb.close()
    return "\n\n".join(blocks)
