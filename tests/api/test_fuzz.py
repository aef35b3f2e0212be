"""Fuzzing the HTTP API from its own OpenAPI spec (schemathesis): no answer is ever a 5xx.

Every operation of ``/api/openapi.json`` gets a bounded, derandomized batch
of generated requests: with the admin's token, valid and invalid ones (so the
handlers themselves meet the data; answers must also match the documented
response schemas), and without a token (everything but health must be 401).
The figures (operations, calls, failures) are printed for the project's
notes; run with ``-s`` to see them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.api.conftest import Api

AUTHENTICATED_EXAMPLES = 30
ANONYMOUS_EXAMPLES = 5
# Blocking endpoints get tiny bounds instead of being left out: a wait of
# 50 ms on a job that no worker will run, and logs without ``follow``.
FIXED_QUERY: dict[str, dict[str, Any]] = {
    "/api/jobs/run_wait_result/p/{path}": {"wait_s": 0.05},
    "/api/jobs/run_wait_result/h/{script_hash}": {"wait_s": 0.05},
    "/api/jobs/run_wait_result/preview": {"wait_s": 0.05},
    "/api/jobs/{job_id}/logs": {"follow": False},
}
# A flow's signed resume URL needs no token: its signature is the permission (flows/approval.py).
PUBLIC = {("GET", "/api/health"), ("GET", "/api/jobs/flows/{flow_id}/{action}/{step}"),
          ("POST", "/api/jobs/flows/{flow_id}/{action}/{step}")}
Check = Callable[[str, str, Any], str | None]


@dataclass
class Tally:
    """What one fuzzing run did."""

    operations: int = 0
    calls: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)


def fuzz(api: Api, headers: dict[str, str], examples: int, extra: Check | None = None,
         modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE,)) -> Tally:
    """Generate ``examples`` requests per operation and mode, send them, collect what went wrong."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", api.client.app)
    tally = Tally()
    for result in schema.get_all_operations():
        tally.operations += 1
        fuzz_operation(result.ok(), headers, examples, extra, modes, tally)
    return tally


def fuzz_operation(operation: APIOperation, headers: dict[str, str], examples: int,
                   extra: Check | None, modes: tuple[GenerationMode, ...], tally: Tally) -> None:
    """Send ``examples`` generated requests to one operation; record calls and failures."""
    method, path = operation.method.upper(), operation.path
    label = f"{method} {path}"
    strategy = st.one_of(*(operation.as_strategy(mode, query=FIXED_QUERY.get(path))
                           for mode in modes))

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        # Negative generation also drops the bearer header: put ours back, so that the
        # handlers (not the auth check) meet the invalid data.
        case.headers = {**(case.headers or {}), **headers}
        response = case.call(headers=headers)
        tally.calls += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, headers=headers,
                                   checks=[not_a_server_error, response_schema_conformance])
        except FailureGroup as failure:
            tally.failures.setdefault(label, str(failure)[:2000])
        problem = extra(method, path, response) if extra else None
        if problem:
            tally.failures.setdefault(label, problem)

    run()


def report(name: str, tally: Tally, seconds: float) -> None:
    print(f"\nfuzzing {name}: {tally.operations} operations, {tally.calls} calls, "
          f"{len(tally.failures)} failing operations, {seconds:.1f} s, "
          f"statuses {dict(sorted(tally.statuses.items()))}")


@pytest.mark.timeout(90)
def test_fuzz_as_admin_never_gets_a_server_error(api: Api) -> None:
    """Generated requests with the admin's token: no 5xx, answers match the documented schema."""
    started = time.monotonic()
    tally = fuzz(api, api.auth("admin"), AUTHENTICATED_EXAMPLES,
                 modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    report("as admin", tally, time.monotonic() - started)
    assert tally.operations >= 30
    assert not tally.failures, "\n\n".join(f"{k}:\n{v}" for k, v in tally.failures.items())


@pytest.mark.timeout(60)
def test_fuzz_without_a_token_is_refused_everywhere(api: Api) -> None:
    """Generated requests without a token: every operation but health answers 401, never 5xx."""

    def refused(method: str, path: str, response: Any) -> str | None:
        if (method, path) in PUBLIC or response.status_code == 401:
            return None
        return f"answered {response.status_code} without a token: {response.text[:300]}"

    started = time.monotonic()
    tally = fuzz(api, {}, ANONYMOUS_EXAMPLES, refused)
    report("without a token", tally, time.monotonic() - started)
    assert not tally.failures, "\n\n".join(f"{k}:\n{v}" for k, v in tally.failures.items())
    assert api.job_count() == 0
