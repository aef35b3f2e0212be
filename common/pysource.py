"""Parsing Python source (user code) to its syntax tree, safely from any thread."""

from __future__ import annotations

import ast
import threading

# CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide
# state: two threads building trees at once can raise a spurious
# ``SystemError: AST constructor recursion depth mismatch`` (python/cpython#106905,
# fixed in 3.12). Parses are short, so one lock per process costs nothing measurable.
_PARSE = threading.Lock()


def parse(code: str) -> ast.Module:
    """``ast.parse(code)``, one thread at a time; raises what ``ast.parse`` raises."""
    with _PARSE:
        return ast.parse(code)
