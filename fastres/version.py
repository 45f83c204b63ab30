"""The fastres version (one place; the package and run files read it)."""

__version__ = "0.1.0"
