"""The OpenFlow model: Windmill's documents parse unchanged; what Gristmill cannot run is refused
with the module and the reason; retry delays as Windmill spells them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flows.errors import FlowDefinitionError
from flows.inputs import FlowInputError, bind_inputs
from flows.model import ExponentialRetry, ForloopFlow, Retry, StaticTransform, dump_flow, parse_flow
from flows.retrying import MAX_RETRY_INTERVAL_S, retry_delay_s
from tests.unit.flow_driver import flow, raw

# The example of ../shared/reference/openflow.md, as Windmill exports it.
EXAMPLE = {
    "summary": "fetch, fan out, route",
    "value": {"modules": [
        {"id": "a", "value": {"type": "rawscript", "language": "python3",
                              "content": "def main(n: int):\n    return list(range(n))",
                              "input_transforms": {"n": {"type": "javascript", "expr": "flow_input.n"}}}},
        {"id": "b", "value": {"type": "forloopflow", "skip_failures": False, "parallel": True,
                              "parallelism": {"type": "static", "value": 4},
                              "iterator": {"type": "javascript", "expr": "results.a"},
                              "modules": [{"id": "c", "value": {
                                  "type": "rawscript", "language": "python3",
                                  "content": "def main(x: int):\n    return x * x",
                                  "input_transforms": {"x": {"type": "javascript",
                                                             "expr": "flow_input.iter.value"}}},
                                  "retry": {"constant": {"attempts": 2, "seconds": 1}}}]}},
        {"id": "d", "value": {"type": "branchone", "branches": [
            {"summary": "big", "expr": "results.b.reduce((s, v) => s + v, 0) > 100",
             "modules": [{"id": "e", "value": {"type": "rawscript", "language": "python3",
                                               "content": "def main(total: list):\n    return 1",
                                               "input_transforms": {}}}]}],
            "default": [{"id": "f", "value": {"type": "identity"}}]},
         "stop_after_if": {"expr": "result == null", "skip_if_stopped": True}}],
        "failure_module": {"id": "failure", "value": {"type": "rawscript", "language": "python3",
                                                      "content": "def main(error: dict):\n    return 1",
                                                      "input_transforms": {}}},
        "same_worker": False},
    "schema": {"type": "object", "properties": {"n": {"type": "integer", "default": 5}}, "required": ["n"]},
}


def test_the_reference_example_parses() -> None:
    """Windmill's example: loop fields, parallelism transform, retry, stop condition, schema."""
    parsed = parse_flow(EXAMPLE)
    loop = parsed.value.modules[1].value
    assert isinstance(loop, ForloopFlow) and loop.parallel and loop.parallelism == StaticTransform(
        type="static", value=4)
    assert parsed.value.modules[1].value.modules[0].retry.constant.attempts == 2  # type: ignore[union-attr]
    assert parsed.value.modules[2].stop_after_if.skip_if_stopped  # type: ignore[union-attr]
    assert parsed.schema_ == EXAMPLE["schema"]


def test_json_and_yaml_texts_parse_to_the_same_flow() -> None:
    """A deploy file may be JSON or YAML; both give the same canonical form."""
    import yaml

    assert dump_flow(parse_flow(json.dumps(EXAMPLE))) == dump_flow(parse_flow(yaml.safe_dump(EXAMPLE)))


def test_a_bare_flow_value_is_accepted() -> None:
    """POST /run/preview_flow carries a FlowValue; it parses as a flow."""
    assert parse_flow({"modules": [raw("a")]}).value.modules[0].id == "a"


def test_old_integer_parallelism_is_accepted() -> None:
    """Old Windmill versions wrote parallelism as a bare integer."""
    doc = flow({"id": "l", "value": {"type": "forloopflow", "iterator": {"type": "javascript", "expr": "[]"},
                                     "skip_failures": True, "parallel": True, "parallelism": 3,
                                     "modules": []}})
    assert parse_flow(doc).value.modules[0].value.parallelism == 3  # type: ignore[union-attr]


def _with(module_value: dict[str, Any], **module: Any) -> dict[str, Any]:
    return flow({"id": "a", "value": module_value, **module})


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_with({"type": "rawscript", "language": "deno", "content": "", "input_transforms": {}}),
         "module 'a': language 'deno' is not supported (supported: python3, bash)"),
        (_with({"type": "aiagent", "tools": [], "input_transforms": {}}),
         "module 'a': module type 'aiagent' is not supported"),
        (_with({"type": "rawscript", "language": "python3", "content": "",
                "input_transforms": {"x": {"type": "ai"}}}),
         "module 'a': input 'x': input transform type 'ai' is not supported"),
        (flow(raw("a"), same_worker=True), "flow: same_worker is not supported"),
        (flow(raw("a"), preprocessor_module=raw("p")), "flow: preprocessor_module is not supported"),
        (flow(raw("a"), concurrent_limit=2), "flow: concurrent_limit is not supported"),
        (flow(raw("a", cache_ttl=60)), "module 'a': cache_ttl is not supported"),
        (flow(raw("a", delete_after_use=True)), "module 'a': delete_after_use is not supported"),
        (flow(raw("a"), raw("a")), "module 'a': the id is used twice"),
        (flow(raw("a-b")), "module 'a-b': an id must be letters, digits and _"),
        (flow(raw("a"), early_return="zz"), "early_return names 'zz', which is no module"),
        (_with({"type": "whileloopflow", "skip_failures": False, "parallel": True, "modules": []}),
         "module 'a': a parallel whileloopflow is not supported"),
        (_with({"type": "forloopflow", "iterator": {"type": "javascript", "expr": "[]"},
                "skip_failures": False, "modules": [
                    {"id": "deep", "value": {"type": "rawscript", "language": "go", "content": "",
                                             "input_transforms": {}}}]}),
         "module 'deep': language 'go' is not supported"),
        (_with({"type": "rawscript", "language": "python3", "input_transforms": {}}),
         "value.modules.0.value.rawscript.content: Field required"),
        (flow(raw("a", {"k": {"type": "javascript", "expr": "variable('u/ada/key')"}})),
         "module 'a': input 'k': variable() in an expression is not supported"),
        (flow(raw("a", skip_if={"expr": "resource ('r/x').on"})),
         "module 'a': skip_if: resource() in an expression is not supported"),
        (_with({"type": "branchone", "default": [], "branches": [{"expr": "variable('x')", "modules": []}]}),
         "module 'a': branch 0: variable() in an expression is not supported"),
        ("[1, 2]", "a flow is a JSON object"),
        ("{not: [valid", "not JSON or YAML"),
    ],
)
def test_unsupported_flows_are_refused_naming_the_module(doc: Any, problem: str) -> None:
    """Each refusal names where (the module, or the flow) and what is unsupported."""
    with pytest.raises(FlowDefinitionError) as caught:
        parse_flow(doc)
    assert problem in str(caught.value)


def test_every_problem_is_reported_at_once() -> None:
    """A flow with three problems gets three reasons, not one per try."""
    doc = flow(raw("a", cache_ttl=1), {"id": "b", "value": {"type": "aiagent"}}, same_worker=True)
    with pytest.raises(FlowDefinitionError) as caught:
        parse_flow(doc)
    assert len(caught.value.problems) == 3


BOTH = {"constant": {"attempts": 2, "seconds": 1},
        "exponential": {"attempts": 2, "multiplier": 2, "seconds": 2}}


@pytest.mark.parametrize(
    ("retry", "failures", "delay"),
    [
        ({"constant": {"attempts": 2, "seconds": 5}}, 1, 5.0),
        ({"constant": {"attempts": 2, "seconds": 5}}, 2, 5.0),
        ({"constant": {"attempts": 2, "seconds": 5}}, 3, None),
        ({"exponential": {"attempts": 3, "multiplier": 2, "seconds": 3}}, 1, 6.0),
        ({"exponential": {"attempts": 3, "multiplier": 2, "seconds": 3}}, 3, 54.0),
        ({"exponential": {"attempts": 3, "multiplier": 2, "seconds": 3}}, 4, None),
        ({"exponential": {"attempts": 900, "multiplier": 1, "seconds": 10}}, 800,
         float(MAX_RETRY_INTERVAL_S)),
        ({}, 1, None),
        (None, 1, None),
        # Both kinds: 2 constant retries, then exponential ones whose n counts those too.
        (BOTH, 2, 1.0),
        (BOTH, 3, 2.0 * 2**3),
        (BOTH, 4, 2.0 * 2**4),
        (BOTH, 5, None),
    ],
)
def test_retry_delays(retry: dict[str, Any] | None, failures: int, delay: float | None) -> None:
    """Delays as Windmill spells them, capped; None once the attempts are used up."""
    policy = None if retry is None else Retry.model_validate(retry)
    assert retry_delay_s(policy, failures, "seed") == delay


def test_random_factor_moves_the_delay_within_its_bounds_and_repeats() -> None:
    """Jitter stays within random_factor percent and is the same for the same seed."""
    policy = Retry(exponential=ExponentialRetry(attempts=5, multiplier=1, seconds=10, random_factor=50))
    delays = [retry_delay_s(policy, 1, f"job-{i}") for i in range(200)]
    assert all(d is not None and 5.0 <= d <= 15.0 for d in delays)
    assert len(set(delays)) > 100
    assert retry_delay_s(policy, 1, "job-7") == delays[7]


SCHEMA = {"type": "object", "required": ["n"],
          "properties": {"n": {"type": "integer", "default": 5}, "tag": {"type": "string"},
                         "db": {"type": "object", "format": "resource-postgresql"}}}


@pytest.mark.parametrize(
    ("args", "bound", "problem"),
    [
        ({}, {"n": 5}, None),
        ({"n": 2, "tag": "x"}, {"n": 2, "tag": "x"}, None),
        ({"db": {"host": "h"}}, {"n": 5, "db": {"host": "h"}}, None),  # formats are annotations
        ({"n": "two"}, None, 'n: "two" is not of type "integer"'),
        ({"n": 1, "tag": 3}, None, 'tag: 3 is not of type "string"'),
    ],
)
def test_flow_inputs_get_defaults_and_are_checked(args: dict[str, Any], bound: dict[str, Any] | None,
                                                  problem: str | None) -> None:
    """The schema's defaults fill missing args; args that do not fit are refused by path."""
    if problem is None:
        assert bind_inputs(SCHEMA, args) == bound
    else:
        with pytest.raises(FlowInputError) as caught:
            bind_inputs(SCHEMA, args)
        assert problem in str(caught.value)


def test_required_without_default_is_refused() -> None:
    """A required input with no default and no value is named."""
    with pytest.raises(FlowInputError, match='"x" is a required property'):
        bind_inputs({"type": "object", "required": ["x"], "properties": {"x": {"type": "string"}}}, {})


def test_a_broken_schema_refuses_the_flow() -> None:
    """A schema that is no JSON Schema is refused at deploy, not at the first run."""
    with pytest.raises(FlowDefinitionError, match="schema: "):
        parse_flow({**flow(raw("a")), "schema": {"type": "nope"}})


def test_names_that_merely_contain_variable_are_fine() -> None:
    """Only calls of the helpers are refused, not properties or other names."""
    parse_flow(flow(raw("a", {"k": {"type": "javascript", "expr": "flow_input.variable + my_variable(1)"}})))


def test_windmill_editor_exports_parse() -> None:
    """What Windmill's editor writes: both retry kinds with zero attempts, nulls, editor fields."""
    doc = {"summary": "", "path": "f/x/y", "edited_by": "ada", "extra_perms": {}, "value": {
        "modules": [{"id": "a", "summary": "", "value": {
            "type": "rawscript", "language": "python3", "content": "def main(): pass", "lock": "",
            "path": "f/x/y/a", "tag": None, "concurrent_limit": None, "input_transforms": {},
            "is_trigger": False},
            "retry": {"constant": {"attempts": 0, "seconds": 0},
                      "exponential": {"attempts": 0, "multiplier": 1, "seconds": 0, "random_factor": 0}},
            "sleep": {"type": "static", "value": None}, "cache_ttl": None, "mock": {"enabled": False}}],
        "failure_module": None, "preprocessor_module": None, "same_worker": False, "concurrent_limit": None,
        "skip_expr": None, "cache_ttl": None, "priority": None, "early_return": None},
        "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                   "properties": {}, "required": [], "order": []}}
    parsed = parse_flow(doc)
    assert retry_delay_s(parsed.value.modules[0].retry, 1, "j") is None
