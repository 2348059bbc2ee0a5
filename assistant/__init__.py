"""Workplace document Q&A assistant: ingest, search, answer with citations, summarize."""

__version__ = "0.1.0"
