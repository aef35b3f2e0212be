"""Retry policies: parsing, and the delay before each retry, from a table of cases."""

from __future__ import annotations

import pytest

from common.errors import SpecError
from common.retry import next_delay_s, parse_policy

CONSTANT = {"constant": {"attempts": 2, "seconds": 5}}
EXPONENTIAL = {"exponential": {"attempts": 5, "seconds": 1, "multiplier": 3, "max_seconds": 20}}


@pytest.mark.parametrize(
    ("policy", "done", "error", "rand", "delay"),
    [
        (CONSTANT, 0, "ValueError", 0.5, 5),
        (CONSTANT, 1, "ValueError", 0.5, 5),
        (CONSTANT, 2, "ValueError", 0.5, None),                 # out of attempts
        (EXPONENTIAL, 0, "Timeout", 0.0, 1),
        (EXPONENTIAL, 1, "Timeout", 0.0, 3),
        (EXPONENTIAL, 2, "Timeout", 0.0, 9),
        (EXPONENTIAL, 3, "Timeout", 0.0, 20),                   # capped by max_seconds
        ({"exponential": {"attempts": 3, "seconds": 10, "jitter": 0.5}}, 0, "E", 1.0, 5),
        ({"exponential": {"attempts": 3, "seconds": 10, "jitter": 0.5}}, 0, "E", 0.0, 10),
        ({**CONSTANT, "retry_on": ["Timeout"]}, 0, "Timeout", 0.5, 5),
        ({**CONSTANT, "retry_on": ["Timeout"]}, 0, "ValueError", 0.5, None),
        (CONSTANT, 0, "ArgumentError", 0.5, None),              # bad input never retried
        ({"constant": {"attempts": 0, "seconds": 1}}, 0, "E", 0.5, None),
    ],
)
def test_next_delay(policy: dict[str, object], done: int, error: str, rand: float,
                    delay: float | None) -> None:
    """The delay grows as the policy says, stops at its attempts, and honours retry_on."""
    assert next_delay_s(parse_policy(policy), done, error, rand) == (
        None if delay is None else pytest.approx(delay))


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({}, "give exactly one of constant or exponential"),
        ({**CONSTANT, **EXPONENTIAL}, "give exactly one"),
        ({"constant": {"attempts": -1, "seconds": 1}}, "constant.attempts"),
        ({"constant": {"attempts": 1}}, "constant.seconds: Field required"),
        ({"linear": {}}, "linear: Extra inputs are not permitted"),
        ({"exponential": {"attempts": 1, "seconds": 1, "jitter": 2}}, "exponential.jitter"),
    ],
)
def test_bad_policies_are_refused(policy: dict[str, object], message: str) -> None:
    """A malformed policy is refused with the field that is wrong."""
    with pytest.raises(SpecError, match="retry: ") as caught:
        parse_policy(policy)
    assert message in str(caught.value)
