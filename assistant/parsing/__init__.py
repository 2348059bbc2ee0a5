"""Parsing: bytes + MIME type → Markdown-ish text that keeps the document's structure.

``parse`` is the one entry point (``formats``: dispatch, size/zip guards, text, Markdown, HTML,
CSV, PDF; ``office``: docx, pptx, xlsx and the zip-bomb check). ``guess_mime`` names a file's type
from its extension, ``decode_text`` decodes bytes of unknown charset. The names below are the
package's public surface: import them from ``assistant.parsing``, not from the modules.
"""

from assistant.parsing.formats import (
    CSV,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_UNPACKED_BYTES,
    DOCX,
    HTML,
    MAX_PDF_PAGES,
    MD,
    OCTET,
    PDF,
    PPTX,
    SUPPORTED,
    TSV,
    TXT,
    XLSX,
    decode_text,
    guess_mime,
    parse,
)
from assistant.parsing.office import MAX_COLUMNS, MAX_ZIP_ENTRIES, MAX_ZIP_RATIO, MB

__all__ = [
    "CSV",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_MAX_UNPACKED_BYTES",
    "DOCX",
    "HTML",
    "MAX_COLUMNS",
    "MAX_PDF_PAGES",
    "MAX_ZIP_ENTRIES",
    "MAX_ZIP_RATIO",
    "MB",
    "MD",
    "OCTET",
    "PDF",
    "PPTX",
    "SUPPORTED",
    "TSV",
    "TXT",
    "XLSX",
    "decode_text",
    "guess_mime",
    "parse",
]
