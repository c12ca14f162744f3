"""Example finrtc hooks: copy one, rename it, and load it from YAML (see README.md)."""
