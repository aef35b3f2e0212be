"""The errors of the flows package, rooted in :mod:`common.errors`.

They live here rather than in ``common/errors.py`` because the kernel imports
no domain package; each still derives from the one hierarchy.
"""

from __future__ import annotations

from common.errors import GristmillError, SpecError


class FlowDefinitionError(SpecError):
    """A flow definition was refused; ``problems`` lists every reason, each naming its module."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("flow refused: " + "; ".join(problems))
        self.problems = problems


class ExpressionError(GristmillError):
    """A JavaScript expression could not be evaluated; the message names step, expression and reason."""

    def __init__(self, step: str, expr: str, reason: str) -> None:
        super().__init__(f"step {step!r}: expression {expr!r} failed: {reason}")
        self.step = step
        self.expr = expr
        self.reason = reason
