"""Gristmill: a Redis-backed distributed job runner."""

from gristmill.client import Gristmill

__version__ = "0.1.0"
__all__ = ["Gristmill", "__version__"]
