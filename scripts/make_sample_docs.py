"""Generate the binary files of the bundled sample corpus (assistant/sample_docs/).

The text formats (.md, .html, .txt, .csv) are written by hand and live in the folder as they are;
this script writes the four binary ones from the content below: a .docx (python-docx), a .pptx
(python-pptx), an .xlsx (openpyxl) and a .pdf (written by hand: a minimal valid PDF 1.4 with the
standard Helvetica font, which pypdf extracts).

The output is byte-for-byte deterministic: the zip containers of the Office files are rewritten
with fixed timestamps and fixed document-property dates, so re-running the script leaves git clean.

    .venv/bin/python scripts/make_sample_docs.py [--out assistant/sample_docs]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import re
import zipfile
from pathlib import Path

FIXED = dt.datetime(2026, 9, 1, 9, 0, 0)
FIXED_ISO = "2026-09-01T09:00:00Z"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assistant" / "sample_docs"


# --- PDF --------------------------------------------------------------------------------------


def _pdf_escape(s: str) -> str:
    s = s.encode("latin-1", "replace").decode("latin-1")
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _wrap(line: str, width: int = 88) -> list[str]:
    if len(line) <= width:
        return [line]
    out, cur = [], ""
    for word in line.split(" "):
        if cur and len(cur) + 1 + len(word) > width:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return out + [cur]


def minimal_pdf(pages: list[list[str]], *, title: str = "") -> bytes:
    """A valid PDF with one text page per list of lines (Helvetica 11 pt, wrapped, latin-1).

    Objects: 1 catalog, 2 page tree, 3 font, 4 info, then a (page, content stream) pair per page.
    """
    n = len(pages)
    page_ids = [5 + 2 * i for i in range(n)]
    objs: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] /Count {n} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: f"<< /Title ({_pdf_escape(title)}) /Producer (northwind make_sample_docs) >>".encode("latin-1"),
    }
    for i, lines in enumerate(pages):
        wrapped = [w for line in lines for w in _wrap(line)]
        ops = ["BT", "/F1 11 Tf", "14 TL", "56 760 Td"]
        ops += [f"({_pdf_escape(w)}) Tj T*" for w in wrapped]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objs[page_ids[i]] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_ids[i] + 1} 0 R >>"
        ).encode()
        objs[page_ids[i] + 1] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    buf = io.BytesIO()
    buf.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = buf.tell()
        buf.write(b"%d 0 obj\n" % num + objs[num] + b"\nendobj\n")
    xref = buf.tell()
    size = max(objs) + 1
    buf.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    for num in range(1, size):
        buf.write(b"%010d 00000 n \n" % offsets[num])
    buf.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (size, xref))
    return buf.getvalue()


def normalize_zip(data: bytes) -> bytes:
    """Rewrite an OOXML zip with fixed entry timestamps and fixed core-property dates."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            blob = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                blob = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*(<)",
                    rb"\g<1>" + FIXED_ISO.encode() + rb"\2",
                    blob,
                )
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, blob)
    return out.getvalue()


# --- content ----------------------------------------------------------------------------------

POSTMORTEM = [
    [
        "Postmortem: API outage on 2026-08-12",
        "",
        "Severity: SEV1. Author: Priya Natarajan (on-call primary). Status: action items in progress.",
        "",
        "Summary",
        (
            "On August 12, 2026 the Northwind Flow public API was unavailable for 47 minutes, from 14:05 "
            "to 14:52 UTC. During the outage 62% of API requests failed with HTTP 503. No data was lost."
        ),
        "",
        "Impact",
        (
            "About 140 customers saw failed syncs. Webhooks were delayed by up to 55 minutes and then "
            "delivered. Two enterprise customers opened support tickets."
        ),
        "",
        "Root cause",
        (
            "A configuration change lowered the database connection pool of the api service from 200 to 20 "
            "connections. The change was meant for the staging environment only but was applied to "
            "production. Under normal afternoon load the pool was exhausted within minutes and requests "
            "queued until they timed out."
        ),
    ],
    [
        "Timeline (UTC)",
        "14:01 Configuration change merged and applied by the config pipeline.",
        "14:05 Error rate rises above 20%.",
        "14:09 PagerDuty pages the on-call primary (detection took 4 minutes).",
        "14:21 Pool exhaustion identified from the connection-pool dashboard.",
        "14:38 Configuration reverted; api pods restarted region by region.",
        "14:52 Error rate back to normal; incident resolved.",
        "",
        "What went well",
        (
            "The incident channel was opened within 3 minutes of the page and status page updates went out "
            "every 15 minutes."
        ),
        "",
        "Action items",
        "1. Validate configuration changes per environment before they apply (owner: Priya Natarajan, due 2026-09-15).",
        "2. Canary configuration changes the same way as code deploys: 5% of traffic for 30 minutes (owner: Tomas Alvarez).",
        "3. Alert when the connection pool is more than 80% used for 2 minutes (owner: Wei Chen).",
    ],
]


def make_pdf(out: Path) -> None:
    (out / "engineering").mkdir(parents=True, exist_ok=True)
    (out / "engineering" / "postmortem-2026-08-12-api-outage.pdf").write_bytes(
        minimal_pdf(POSTMORTEM, title="Postmortem: API outage on 2026-08-12")
    )


def make_docx(out: Path) -> None:
    import docx

    d = docx.Document()
    cp = d.core_properties
    cp.title, cp.author, cp.last_modified_by, cp.revision = (
        "Acceptable Use Policy",
        "Security Team",
        "Security Team",
        1,
    )
    cp.created = cp.modified = FIXED
    d.add_heading("Acceptable Use Policy", level=1)
    d.add_paragraph(
        "This policy says how Northwind Labs laptops, accounts and data may be used. It applies to "
        "every employee and contractor. The Security Team owns it and reviews it every year."
    )
    d.add_heading("Accounts and passwords", level=2)
    for item in (
        "Multi-factor authentication (MFA) is required on every company account.",
        "Store all passwords in 1Password; never reuse a company password anywhere else.",
        "Never share your account or your MFA codes, not even with IT.",
    ):
        d.add_paragraph(item, style="List Bullet")
    d.add_heading("Devices", level=2)
    for item in (
        "Full-disk encryption must stay on; IT checks it every day.",
        "Your screen must lock automatically after 5 minutes of inactivity.",
        "Report a lost or stolen device to security@northwind.example within 1 hour.",
        "Install software only from the Self Service app or official vendor sites.",
    ):
        d.add_paragraph(item, style="List Bullet")
    d.add_heading("Data", level=2)
    d.add_paragraph(
        "Customer data never leaves company systems: no personal cloud storage, no personal "
        "email, no USB drives. Classify data with this table:"
    )
    rows = [
        ("Class", "Examples", "May be shared with"),
        ("Public", "Blog posts, public docs", "Anyone"),
        ("Internal", "Handbook, roadmaps", "All employees"),
        ("Confidential", "Customer data, contracts", "People who need it for their work"),
        ("Restricted", "Salary data, security keys", "Named people only"),
    ]
    table = d.add_table(rows=len(rows), cols=3)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("Phishing", level=2)
    d.add_paragraph(
        'Use the "Report phish" button in Gmail for suspicious email. If you clicked a link or '
        "entered a password, tell the Security Team in #security-help right away."
    )
    buf = io.BytesIO()
    d.save(buf)
    (out / "policies").mkdir(parents=True, exist_ok=True)
    (out / "policies" / "acceptable-use.docx").write_bytes(normalize_zip(buf.getvalue()))


SLIDES = [
    (
        "Q3 2026 Results",
        [
            "Annual recurring revenue: $14.2M, up 38% year over year",
            "212 paying customers (up from 171 in Q2)",
            "Net Promoter Score: 61",
        ],
        "Gross margin was 78%. Churn stayed under 1% per month.",
    ),
    (
        "People and Hiring",
        [
            "24 new hires joined in Q3; headcount is now 186",
            "Toronto office opens in January 2027 with 60 desks",
            "Engagement survey participation: 91%",
        ],
        "Open roles are listed on the careers page; referrals earn a $3,000 bonus.",
    ),
    (
        "Q4 Roadmap",
        [
            "Northwind Flow 2.0 launches on November 18, 2026",
            "SOC 2 Type II report expected in December",
            "EU data residency in beta for enterprise customers",
        ],
        "",
    ),
]


def make_pptx(out: Path) -> None:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    cp = prs.core_properties
    cp.title, cp.author, cp.last_modified_by, cp.revision = (
        "Q3 2026 All-Hands",
        "Leadership Team",
        "Leadership Team",
        1,
    )
    cp.created = cp.modified = FIXED
    first = prs.slides.add_slide(prs.slide_layouts[0])
    first.shapes.title.text = "Q3 2026 All-Hands"
    first.placeholders[1].text = "Northwind Labs - October 2, 2026 - presented by CEO Ravi Menon"
    for title, bullets, notes in SLIDES:
        slide = prs.slides.add_slide(prs.slide_layouts[1])
        slide.shapes.title.text = title
        body = slide.placeholders[1].text_frame
        body.text = bullets[0]
        for b in bullets[1:]:
            body.add_paragraph().text = b
        if notes:
            slide.notes_slide.notes_text_frame.text = notes
    slide = prs.slides.add_slide(prs.slide_layouts[5])
    slide.shapes.title.text = "Customers by Region"
    data = [
        ("Region", "Customers", "ARR"),
        ("Europe", "97", "$6.1M"),
        ("North America", "88", "$6.6M"),
        ("Rest of world", "27", "$1.5M"),
    ]
    table = slide.shapes.add_table(len(data), 3, Inches(1), Inches(1.8), Inches(8), Inches(2)).table
    for r, row in enumerate(data):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    buf = io.BytesIO()
    prs.save(buf)
    (out / "company").mkdir(parents=True, exist_ok=True)
    (out / "company" / "all-hands-2026-q3.pptx").write_bytes(normalize_zip(buf.getvalue()))


BENEFITS = [
    ("Benefit", "Provider", "Employer contribution", "Notes"),
    (
        "Medical insurance",
        "Bluepeak Health",
        "100% of employee premium, 80% for dependents",
        "Enroll within 30 days of start",
    ),
    ("Dental insurance", "Bluepeak Dental", "100% of employee premium", "Two cleanings per year covered"),
    ("Vision insurance", "ClearView", "100% of employee premium", "New glasses every 2 years"),
    ("401(k) retirement plan", "Fidelity", "100% match on the first 4% of salary", "Match vests immediately"),
    ("Wellness stipend", "Ledgerly", "$100 per month", "Gym, sports, therapy apps"),
    ("Learning budget", "Ledgerly", "$1,500 per year", "Courses, books, conferences"),
    ("Life insurance", "Guardian", "2x annual base salary", "No medical exam needed"),
    ("Employee assistance program", "Lyra", "Free", "12 free counselling sessions per year"),
]
ELIGIBILITY = [
    ("Country", "Medical plan", "Retirement plan", "Notes"),
    ("United States", "Bluepeak Health", "401(k) with 4% match", ""),
    ("Portugal", "Multicare", "Pension top-up of 3% of salary", "Local public system also applies"),
    ("Germany", "Techniker Krankenkasse", "Pension top-up of 3% of salary", "Statutory insurance"),
    ("Canada", "Sun Life", "RRSP match of 4%", "From January 2027"),
]


def make_xlsx(out: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.properties.creator = "People Team"
    wb.properties.title = "Benefits 2026"
    wb.properties.created = wb.properties.modified = FIXED
    ws = wb.active
    ws.title = "Benefits 2026"
    for row in BENEFITS:
        ws.append(list(row))
    ws2 = wb.create_sheet("Eligibility by country")
    for row in ELIGIBILITY:
        ws2.append(list(row))
    buf = io.BytesIO()
    wb.save(buf)
    (out / "people").mkdir(parents=True, exist_ok=True)
    (out / "people" / "benefits-2026.xlsx").write_bytes(normalize_zip(buf.getvalue()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    for make in (make_pdf, make_docx, make_pptx, make_xlsx):
        make(args.out)
    print(f"wrote the binary sample documents into {args.out}")


if __name__ == "__main__":
    main()
