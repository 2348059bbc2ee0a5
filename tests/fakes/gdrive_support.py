"""Pieces of the Drive fake that are not Drive state: errors, ``fields`` masks, JWT checks, the query grammar.

``fields`` masks follow Google's partial-response syntax (``a,b/c,files(id,owners(emailAddress))``):
``parse_fields`` turns one into a tree, ``validate_fields`` checks every name against the discovery
schemas (Google answers 400 for an unknown field), ``apply_fields`` keeps only what was asked for.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import googleapiclient

DISCOVERY = json.loads(
    (Path(googleapiclient.__file__).parent / "discovery_cache/documents/drive.v3.json").read_text()
)
FOLDER = "application/vnd.google-apps.folder"
GDOC = "application/vnd.google-apps.document"
GSHEET = "application/vnd.google-apps.spreadsheet"
GSLIDES = "application/vnd.google-apps.presentation"
SCOPE_RO = "https://www.googleapis.com/auth/drive.readonly"
SCOPE_META = "https://www.googleapis.com/auth/drive.metadata.readonly"
READ_SCOPES = {SCOPE_RO, "https://www.googleapis.com/auth/drive"}
META_SCOPES = READ_SCOPES | {SCOPE_META}
EXPORT_LIMIT = 10 * 1024 * 1024


def _plain(md: str) -> str:
    return re.sub(r"[#*_`>\[\]]", "", md)


def sheets_of(stored: str) -> dict[str, str]:
    """A spreadsheet's stored text → {sheet name: CSV}. Plain CSV is one sheet, "Sheet1"; a JSON object
    ``{"Budget": "a,b\n1,2", "Q2": ...}`` is a workbook of several sheets, in that order."""
    if stored.lstrip().startswith("{"):
        return dict(json.loads(stored))
    return {"Sheet1": stored}


def _xlsx(stored: str) -> bytes:
    """Drive's XLSX export of a spreadsheet: every sheet (the CSV/TSV exports hold only the first)."""
    import csv
    import io

    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, text in sheets_of(stored).items():
        ws = wb.create_sheet(title=name[:31])
        for row in csv.reader(io.StringIO(text)):
            ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _first_sheet(stored: str) -> str:
    return next(iter(sheets_of(stored).values()), "")


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Export formats the fake can produce, per Google type: target MIME -> converter of the stored text
# (to str or bytes). Sheets follow Drive: CSV and TSV hold the first sheet only, XLSX all of them.
EXPORTS = {
    GDOC: {
        "text/markdown": lambda t: t,
        "text/plain": _plain,
        "text/html": lambda t: f"<html><body><pre>{t}</pre></body></html>",
    },
    GSHEET: {
        "text/csv": _first_sheet,
        "text/tab-separated-values": lambda t: _first_sheet(t).replace(",", "\t"),
        XLSX: _xlsx,
    },
    GSLIDES: {"text/plain": lambda t: t},
}


class ApiError(Exception):
    """An error response in Google's JSON error format."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.code, self.reason, self.message, self.domain, self.location = (
            code,
            reason,
            message,
            domain,
            location,
        )
        self.headers = headers or {}

    def body(self) -> dict:
        err = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location:
            err.update(location=self.location, locationType="parameter")
        return {"error": {"errors": [err], "code": self.code, "message": self.message}}


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass
class Recorded:
    method: str
    path: str
    params: dict
    status: int
    principal: str | None

    @property
    def is_download(self) -> bool:
        return self.path.endswith("/export") or self.params.get("alt") == "media"


# -- fields masks ------------------------------------------------------------------------------
def parse_fields(mask: str) -> dict:
    """``"a,b/c,d(e,f)"`` -> ``{"a": None, "b": {"c": None}, "d": {"e": None, "f": None}}`` (None = all)."""
    tree: dict = {}
    pos = 0

    def parse_list(end: str | None) -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(mask):
            m = re.compile(r"\s*([A-Za-z0-9_*$.]+(?:/[A-Za-z0-9_*$.]+)*)\s*").match(mask, pos)
            if not m:
                raise ApiError(400, "invalidParameter", f"Invalid field selection {mask}", location="fields")
            path, pos = m.group(1).split("/"), m.end()
            sub = None
            if pos < len(mask) and mask[pos] == "(":
                pos += 1
                sub = parse_list(")")
            node = out
            for p in path[:-1]:
                node = node.setdefault(p, {}) or {}
            last = path[-1]
            if sub is None or node.get(last, {}) is None:
                node[last] = None if sub is None else sub
            else:
                node[last] = {**(node.get(last) or {}), **sub}
            if pos < len(mask) and mask[pos] == ",":
                pos += 1
                continue
            if end and pos < len(mask) and mask[pos] == end:
                pos += 1
                return out
            if pos < len(mask):
                raise ApiError(400, "invalidParameter", f"Invalid field selection {mask}", location="fields")
        if end:
            raise ApiError(
                400, "invalidParameter", f"Invalid field selection {mask}: missing '{end}'", location="fields"
            )
        return out

    tree = parse_list(None)
    return tree


def _schema_props(schema: dict) -> dict | None:
    if "$ref" in schema:
        schema = DISCOVERY["schemas"][schema["$ref"]]
    if schema.get("type") == "array":
        return _schema_props(schema["items"])
    if "properties" in schema:
        return schema["properties"]
    return None  # free-form (additionalProperties) or scalar: nothing to check below


def validate_fields(tree: dict, schema_name: str) -> None:
    def walk(node: dict, props: dict | None, where: str) -> None:
        for name, sub in node.items():
            if name == "*" or props is None:
                continue
            if name not in props:
                raise ApiError(
                    400, "invalidParameter", f"Invalid field selection {where}{name}", location="fields"
                )
            if sub:
                walk(sub, _schema_props(props[name]), f"{where}{name}/")

    walk(tree, DISCOVERY["schemas"][schema_name]["properties"], "")


def apply_fields(obj, tree: dict | None):
    if tree is None:
        return obj
    if isinstance(obj, list):
        return [apply_fields(x, tree) for x in obj]
    if not isinstance(obj, dict):
        return obj
    if "*" in tree:
        return {k: apply_fields(v, tree.get(k)) for k, v in obj.items()}
    return {k: apply_fields(obj[k], sub) for k, sub in tree.items() if k in obj}


# -- the q grammar -------------------------------------------------------------------------------
_CLAUSE = re.compile(
    r"""\s*(?:(?P<neg>not\s+)?'(?P<inval>[^']*)'\s+in\s+parents"""
    r"""|(?P<field>trashed|mimeType|name)\s*(?P<op>=|!=)\s*(?P<val>true|false|'(?:[^'\\]|\\.)*'))\s*$"""
)


def parse_q(q: str) -> list[tuple[str, str, object]]:
    """``trashed = false and 'ID' in parents and mimeType != '...'`` -> [(field, op, value)]."""
    out: list[tuple[str, str, object]] = []
    for part in re.split(r"\s+and\s+", q.strip()) if q.strip() else []:
        m = _CLAUSE.match(part)
        if not m:
            raise ApiError(400, "invalid", "Invalid Value", location="q")
        if m.group("inval") is not None:
            out.append(("parents", "!in" if m.group("neg") else "in", m.group("inval")))
        else:
            v = m.group("val")
            value: object = (v == "true") if v in ("true", "false") else v[1:-1].replace("\\'", "'")
            out.append((m.group("field"), m.group("op"), value))
    return out


# -- JWT bearer grant ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def make_jwt_key() -> tuple[str, object]:
    """(PKCS#8 PEM private key, public key), generated once per process: RSA keygen is slow."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def verify_jwt(assertion: str, keys: dict[str, object]) -> dict:
    """Check an RS256 JWT signed by one of the service accounts in ``keys``; return its claims."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        head, body, sig = assertion.split(".")
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    except ValueError:
        raise ApiError(400, "invalid_grant", "Invalid JWT") from None
    key = keys.get(claims.get("iss", ""))
    if header.get("alg") != "RS256" or key is None:
        raise ApiError(400, "invalid_grant", "Invalid JWT: unknown issuer or algorithm")
    try:
        key.verify(_b64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
    except InvalidSignature:
        raise ApiError(400, "invalid_grant", "Invalid JWT Signature.") from None
    return claims
