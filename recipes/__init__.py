"""Recipes shipped with dalle-kit (data only; this file makes the folder installable as package data)."""
