"""The ``steerlens`` command line (train, sweep, generate, info, demo), all in this folder."""

from steerlens.cli.main import main

__all__ = ["main"]
