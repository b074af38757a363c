"""Presentation: one column spec (``columns``) shared by the table, text, CSV and TUI views;
JSON in ``jsonfmt``. rich is imported only by ``table``."""
