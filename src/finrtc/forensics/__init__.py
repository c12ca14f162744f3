"""Forensic tooling: the invisible watermark (embedding, extraction, error control)."""
