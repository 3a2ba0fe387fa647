"""Stave's engine: everything that is not the window. Never imports Qt."""

__version__ = "0.1.0"
