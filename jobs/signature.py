"""The parameters of a python3 script's ``main``, read from its source without running it.

The web UI builds a run form from them: one field per parameter, its
annotation as a hint, its default (when it is a literal) pre-filled. Pure: the
code is parsed with ``ast``, never imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from common import pysource

NO_DEFAULT: Any = object()


@dataclass(frozen=True)
class Param:
    name: str
    annotation: str = ""
    default: Any = NO_DEFAULT  # a literal value, NO_DEFAULT when required or not a literal
    required: bool = True

    @property
    def input_type(self) -> str:
        """The HTML input that suits the annotation."""
        if self.annotation == "bool":
            return "checkbox"
        if self.annotation in ("int", "float"):
            return "number"
        return "text"

    @property
    def is_json(self) -> bool:
        """Values typed as JSON (lists, dicts, models) rather than plain text."""
        return self.input_type == "text" and self.annotation not in ("", "str", "datetime", "date",
                                                                    "bytes")


def python_params(code: str) -> list[Param] | None:
    """Parameters of ``main`` (keyword-able ones); None when the code has no parsable ``main``."""
    try:
        tree = pysource.parse(code)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "main":
            return _params(node.args)
    return None


def _params(args: ast.arguments) -> list[Param]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(args.kwonlyargs, args.kw_defaults,
                                                            strict=True)]
    out = []
    for arg, default in pairs:
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        if default is None:
            out.append(Param(arg.arg, annotation))
            continue
        try:
            value = ast.literal_eval(default)
        except ValueError:
            value = NO_DEFAULT
        out.append(Param(arg.arg, annotation, value, required=False))
    return out
