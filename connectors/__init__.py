"""Connectors: one package per external system. Each depends only on assistant.documents/errors."""
