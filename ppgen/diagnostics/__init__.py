"""Diagnostics (being written)."""
