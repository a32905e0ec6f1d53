"""The installed version of steerlens (one place, read by the package and by vector metadata)."""

__version__ = "0.1.0"
