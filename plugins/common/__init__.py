"""Helpers shared by several built-in families (no entry points)."""
