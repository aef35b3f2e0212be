"""A flow's inputs: the flow's ``schema`` defaults filled in, then checked (pure).

Windmill's flow ``schema`` is a JSON Schema of the args object. Its formats
(``resource-postgresql``, ``email``...) are annotations here, as in the
2020-12 draft: only structure and types are checked.
"""

from __future__ import annotations

from typing import Any

import jsonschema_rs

from common.errors import SpecError


class FlowInputError(SpecError):
    """The args do not fit the flow's schema; ``problems`` lists every one, by path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("flow inputs refused: " + "; ".join(problems))
        self.problems = problems


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a usable JSON Schema, or None."""
    try:
        jsonschema_rs.validator_for(schema)
    except jsonschema_rs.ValidationError as exc:
        return str(exc).splitlines()[0]
    return None


def bind_inputs(schema: dict[str, Any] | None, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the schema's defaults for missing properties; FlowInputError if they do not fit."""
    bound = dict(args)
    if not schema:
        return bound
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            if name not in bound and isinstance(prop, dict) and "default" in prop:
                bound[name] = prop["default"]
    validator = jsonschema_rs.validator_for(schema)
    problems = [
        f"{'/'.join(str(p) for p in error.instance_path) or '(args)'}: {error.message}"
        for error in validator.iter_errors(bound)
    ]
    if problems:
        raise FlowInputError(problems[:20])
    return bound
