"""The requirements of a python3 script, from its code alone (pure).

Windmill's conventions, so that a script locks the same way there and here:

* the third-party modules it imports (``import x``, ``from x import y``,
  anywhere in the file; relative imports and the standard library excluded)
  become distribution names through :mod:`deps.mapping`;
* a ``# requirements:`` comment block lists the requirements itself and
  *replaces* what was inferred;
* an ``# extra_requirements:`` block *adds* to it; a line naming an inferred
  distribution replaces that one (a pin: ``pandas==2.2.3``).

A block is the marker line followed by the comment lines right under it, one
requirement each; it ends at the first line that is not a comment, or a
comment with nothing in it. Every requirement is checked (PEP 508): a line
such as ``-r /etc/passwd`` or ``--index-url ...`` is refused with the line it
came from, since the resolver must receive requirements, never options.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from common import pysource
from deps.mapping import IMPORT_TO_DISTRIBUTION, PROVIDED

_MARKER = re.compile(r"^#\s*(requirements|extra_requirements)\s*:\s*$")
_STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}


class RequirementsError(ValueError):
    """The script's requirement comments cannot be used; the message names the line."""


@dataclass(frozen=True)
class Requirements:
    """What a script needs: sorted, unique by distribution, and where that came from."""

    lines: tuple[str, ...]
    source: str  # "inferred", "requirements" (the comment block replaced it) or "none"

    @property
    def empty(self) -> bool:
        return not self.lines

    def text(self) -> str:
        """The ``requirements.in`` handed to the resolver."""
        return "".join(line + "\n" for line in self.lines)


def normalize(name: str) -> str:
    """A distribution name as indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(code: str) -> set[str]:
    """Every absolute module path the code imports (``a.b.c`` for ``from a.b import c``...).

    Code that does not parse imports nothing here: its job fails with its own
    SyntaxError when it runs, which says more than a failed lock would.
    """
    try:
        tree = pysource.parse(code)
    except (SyntaxError, ValueError):
        return set()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def distribution_for(module: str) -> str | None:
    """The distribution that provides ``module``; None for the standard library and ours."""
    root = module.split(".")[0]
    if root in _STDLIB or root in PROVIDED or not root:
        return None
    parts = module.split(".")
    for length in range(len(parts), 0, -1):  # the longest listed prefix wins (google.cloud.x)
        mapped = IMPORT_TO_DISTRIBUTION.get(".".join(parts[:length]))
        if mapped is not None:
            return mapped
    return None if "." in module and _is_listed_namespace(root) else root


def _is_listed_namespace(root: str) -> bool:
    """A namespace package (``google``) whose sub-modules the mapping names one by one."""
    return any(key.startswith(root + ".") for key in IMPORT_TO_DISTRIBUTION)


def inferred(code: str) -> list[str]:
    """Distribution names of the third-party modules ``code`` imports, sorted."""
    names: dict[str, str] = {}
    for module in imported_modules(code):
        name = distribution_for(module)
        if name is not None:
            names.setdefault(normalize(name), name)
    return sorted(names.values(), key=normalize)


def comment_blocks(code: str) -> dict[str, list[tuple[int, str]]]:
    """The ``requirements`` and ``extra_requirements`` blocks: (line number, text) each."""
    blocks: dict[str, list[tuple[int, str]]] = {}
    current: list[tuple[int, str]] | None = None
    for number, raw in enumerate(code.splitlines(), start=1):
        line = raw.strip()
        marker = _MARKER.match(line)
        if marker:
            current = blocks.setdefault(marker.group(1), [])
            continue
        if current is None:
            continue
        body = line[1:].strip() if line.startswith("#") else None
        if not body:
            current = None
            continue
        current.append((number, body))
    return blocks


def _checked(number: int, text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise RequirementsError(
            f"line {number}: {text!r} is not a requirement ({exc}); write one distribution per "
            "comment line, e.g. '# requests>=2.31'"
        ) from None


def requirements(code: str) -> Requirements:
    """What ``code`` needs installed. RequirementsError names a bad comment line."""
    blocks = comment_blocks(code)
    if "requirements" in blocks:
        chosen = {normalize(req.name): str(req)
                  for req in (_checked(n, t) for n, t in blocks["requirements"])}
        source = "requirements"
    else:
        chosen = {normalize(name): name for name in inferred(code)}
        source = "inferred"
    for number, text in blocks.get("extra_requirements", []):
        req = _checked(number, text)
        chosen[normalize(req.name)] = str(req)
    lines = tuple(chosen[key] for key in sorted(chosen))
    return Requirements(lines, source if lines else "none")
