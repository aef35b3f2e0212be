"""The OpenFlow model: Windmill's flow JSON (or YAML), parsed and checked.

Field names are Windmill's (``openflow.openapi.yaml``), so a flow exported from
Windmill parses unchanged when its steps are python3 or bash. :func:`parse_flow`
first walks the raw document and refuses, all at once, everything Gristmill
does not run (naming the module and what is unsupported), then validates the
structure with pydantic. Fields that only Windmill's editor reads (``summary``,
``notes``, positions) are ignored.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flows.errors import FlowDefinitionError
from flows.inputs import schema_problem

LANGUAGES = ("python3", "bash")
MODULE_TYPES = (
    "rawscript", "script", "flow", "forloopflow", "whileloopflow", "branchone", "branchall", "identity",
)
TRANSFORM_TYPES = ("static", "javascript")
# A module id is referenced as results.<id> and is one segment of a step address.
MODULE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAULT_CALL = re.compile(r"(?<![\w$.])(variable|resource)\s*\(")
DEFAULT_SUSPEND_TIMEOUT_S = 1800


class _Model(BaseModel):
    # Windmill documents carry editor-only fields; unsupported ones are refused before this.
    model_config = ConfigDict(extra="ignore", frozen=True)


class StaticTransform(_Model):
    type: Literal["static"]
    value: Any = None


class JavascriptTransform(_Model):
    type: Literal["javascript"]
    expr: str


InputTransform = Annotated[StaticTransform | JavascriptTransform, Field(discriminator="type")]


class RawScript(_Model):
    type: Literal["rawscript"]
    content: str
    language: Literal["python3", "bash"]
    input_transforms: dict[str, InputTransform] = {}
    path: str | None = None
    lock: str | None = None
    tag: str | None = None


class PathScript(_Model):
    type: Literal["script"]
    path: str
    hash: str | None = None
    input_transforms: dict[str, InputTransform] = {}
    tag_override: str | None = None


class PathFlow(_Model):
    type: Literal["flow"]
    path: str
    input_transforms: dict[str, InputTransform] = {}


class ForloopFlow(_Model):
    type: Literal["forloopflow"]
    modules: list[FlowModule]
    iterator: InputTransform
    skip_failures: bool = False
    parallel: bool = False
    # An InputTransform in new Windmill versions, a bare int in old ones.
    parallelism: InputTransform | int | None = None


class WhileloopFlow(_Model):
    type: Literal["whileloopflow"]
    modules: list[FlowModule]
    skip_failures: bool = False


class BranchOneBranch(_Model):
    summary: str | None = None
    expr: str
    modules: list[FlowModule]


class BranchOne(_Model):
    type: Literal["branchone"]
    branches: list[BranchOneBranch]
    default: list[FlowModule]


class BranchAllBranch(_Model):
    summary: str | None = None
    skip_failure: bool = False
    modules: list[FlowModule]


class BranchAll(_Model):
    type: Literal["branchall"]
    branches: list[BranchAllBranch]
    parallel: bool = False


class Identity(_Model):
    type: Literal["identity"]
    flow: bool | None = None


ModuleValue = Annotated[
    RawScript | PathScript | PathFlow | ForloopFlow | WhileloopFlow | BranchOne | BranchAll | Identity,
    Field(discriminator="type"),
]


class StopAfterIf(_Model):
    expr: str
    skip_if_stopped: bool = False
    # A non-empty string fails the flow with it; "" with the default message; None: no error.
    error_message: str | None = None


class SkipIf(_Model):
    expr: str


class RetryIf(_Model):
    expr: str


class ConstantRetry(_Model):
    attempts: int = Field(default=0, ge=0)
    seconds: int = Field(default=0, ge=0)


class ExponentialRetry(_Model):
    attempts: int = Field(default=0, ge=0)
    multiplier: int = Field(default=1, ge=0)
    seconds: int = Field(default=1, ge=0)  # the spec says >= 1; exports with 0 are still accepted
    random_factor: int = Field(default=0, ge=0, le=100)


class Retry(_Model):
    constant: ConstantRetry | None = None
    exponential: ExponentialRetry | None = None
    retry_if: RetryIf | None = None


class ResumeForm(_Model):
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


class Suspend(_Model):
    required_events: int = Field(default=0, ge=0)
    timeout: int | None = Field(default=None, ge=0)
    resume_form: ResumeForm | None = None
    # Enforced by whoever accepts the resume (the API); carried in the suspend action.
    user_auth_required: bool = False
    user_groups_required: InputTransform | None = None
    self_approval_disabled: bool = False
    hide_cancel: bool = False
    continue_on_disapprove_timeout: bool = False


class Mock(_Model):
    enabled: bool = False
    return_value: Any = None


class FlowModule(_Model):
    id: str
    value: ModuleValue
    summary: str | None = None
    stop_after_if: StopAfterIf | None = None
    stop_after_all_iters_if: StopAfterIf | None = None
    skip_if: SkipIf | None = None
    sleep: InputTransform | None = None
    timeout: InputTransform | None = None
    suspend: Suspend | None = None
    priority: int | None = None
    continue_on_error: bool = False
    retry: Retry | None = None
    mock: Mock | None = None


class FlowValue(_Model):
    modules: list[FlowModule]
    failure_module: FlowModule | None = None
    skip_expr: str | None = None
    priority: int | None = None
    early_return: str | None = None


class OpenFlow(_Model):
    summary: str = ""
    description: str | None = None
    value: FlowValue
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")


# --- refusing what is not supported, naming the module -------------------------------------------

# Flow-level fields Gristmill does not implement; refused when set to anything but their default.
_UNSUPPORTED_FLOW_FIELDS = (
    "preprocessor_module", "concurrent_limit", "concurrency_key", "concurrency_time_window_s",
    "debounce_delay_s", "debounce_key", "cache_ttl", "flow_env",
)
_UNSUPPORTED_MODULE_FIELDS = ("cache_ttl", "delete_after_use")
_UNSUPPORTED_RAWSCRIPT_FIELDS = ("concurrent_limit", "concurrency_time_window_s", "custom_concurrency_key")


def _set(value: Any) -> bool:
    return value not in (None, False, "", {}, [], 0)


def _refusals(flow: dict[str, Any]) -> list[str]:
    """Every reason to refuse ``flow`` (the raw ``value`` object), each naming where."""
    problems: list[str] = []
    for field in _UNSUPPORTED_FLOW_FIELDS:
        if _set(flow.get(field)):
            problems.append(f"flow: {field} is not supported")
    _check_expr(flow.get("skip_expr"), "flow: skip_expr", problems)
    if flow.get("same_worker"):
        problems.append("flow: same_worker is not supported (steps are independent jobs)")
    seen: set[str] = set()
    modules = flow.get("modules")
    if isinstance(modules, list):
        _check_modules(modules, problems, seen)
    failure = flow.get("failure_module")
    if isinstance(failure, dict):
        _check_modules([failure], problems, seen)
    early = flow.get("early_return")
    if isinstance(early, str) and early not in seen:
        problems.append(f"flow: early_return names {early!r}, which is no module of the flow")
    return problems


def _check_modules(modules: list[Any], problems: list[str], seen: set[str]) -> None:
    for module in modules:
        if not isinstance(module, dict):
            continue  # pydantic reports the shape
        mid = module.get("id")
        name = f"module {mid!r}"
        if isinstance(mid, str):
            if not MODULE_ID.fullmatch(mid):
                problems.append(f"{name}: an id must be letters, digits and _, not starting with a digit")
            elif mid in seen:
                problems.append(f"{name}: the id is used twice (results.{mid} would be ambiguous)")
            seen.add(mid)
        for field in _UNSUPPORTED_MODULE_FIELDS:
            if _set(module.get(field)):
                problems.append(f"{name}: {field} is not supported")
        for field in ("sleep", "timeout"):
            _check_transform(module.get(field), f"{name}: {field}", problems)
        for field in ("skip_if", "stop_after_if", "stop_after_all_iters_if"):
            if isinstance(module.get(field), dict):
                _check_expr(module[field].get("expr"), f"{name}: {field}", problems)
        if isinstance(module.get("retry"), dict) and isinstance(module["retry"].get("retry_if"), dict):
            _check_expr(module["retry"]["retry_if"].get("expr"), f"{name}: retry_if", problems)
        value = module.get("value")
        if isinstance(value, dict):
            _check_value(value, name, problems, seen)


def _check_transform(transform: Any, where: str, problems: list[str]) -> None:
    if isinstance(transform, dict) and transform.get("type") not in TRANSFORM_TYPES:
        problems.append(f"{where}: input transform type {transform.get('type')!r} is not supported"
                        f" (supported: {', '.join(TRANSFORM_TYPES)})")
    elif isinstance(transform, dict) and transform.get("type") == "javascript":
        _check_expr(transform.get("expr"), where, problems)


def _check_expr(expr: Any, where: str, problems: list[str]) -> None:
    """Windmill's variable()/resource() helpers would need the vault inside V8: refused."""
    if isinstance(expr, str) and (found := _VAULT_CALL.search(expr)):
        problems.append(f"{where}: {found.group(1)}() in an expression is not supported"
                        " (pass the value as a flow input instead)")


def _check_value(value: dict[str, Any], name: str, problems: list[str], seen: set[str]) -> None:
    kind = value.get("type")
    if kind not in MODULE_TYPES:
        problems.append(f"{name}: module type {kind!r} is not supported"
                        f" (supported: {', '.join(MODULE_TYPES)})")
        return
    transforms = value.get("input_transforms")
    if isinstance(transforms, dict):
        for arg, transform in transforms.items():
            _check_transform(transform, f"{name}: input {arg!r}", problems)
    if kind == "rawscript":
        if value.get("language") not in LANGUAGES:
            problems.append(f"{name}: language {value.get('language')!r} is not supported"
                            f" (supported: {', '.join(LANGUAGES)})")
        for field in _UNSUPPORTED_RAWSCRIPT_FIELDS:
            if _set(value.get(field)):
                problems.append(f"{name}: {field} is not supported")
    if kind in ("forloopflow", "whileloopflow"):
        if value.get("squash"):
            problems.append(f"{name}: squash is not supported")
        if kind == "whileloopflow" and value.get("parallel"):
            problems.append(f"{name}: a parallel whileloopflow is not supported")
        _check_transform(value.get("iterator"), f"{name}: iterator", problems)
        _check_transform(value.get("parallelism"), f"{name}: parallelism", problems)
    bodies: list[Any] = []
    if isinstance(value.get("modules"), list):
        bodies.append(value["modules"])
    if isinstance(value.get("default"), list):
        bodies.append(value["default"])
    for index, branch in enumerate(value.get("branches") or []):
        if isinstance(branch, dict) and isinstance(branch.get("modules"), list):
            bodies.append(branch["modules"])
        if isinstance(branch, dict):
            _check_expr(branch.get("expr"), f"{name}: branch {index}", problems)
    for body in bodies:
        _check_modules(body, problems, seen)


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_flow(data: dict[str, Any] | str | bytes) -> OpenFlow:
    """Parse an OpenFlow document (a dict, or JSON / YAML text); FlowDefinitionError says why not.

    A bare ``FlowValue`` (an object with ``modules`` at the top) is accepted too,
    as ``POST /run/preview_flow`` bodies carry one.
    """
    if isinstance(data, bytes | str):
        try:
            loaded = yaml.safe_load(data)  # JSON is YAML; one parser for both
        except yaml.YAMLError as exc:
            raise FlowDefinitionError([f"not JSON or YAML: {exc}"]) from None
    else:
        loaded = data
    if not isinstance(loaded, dict):
        raise FlowDefinitionError(["a flow is a JSON object with a 'value' (or 'modules')"])
    if "modules" in loaded and "value" not in loaded:
        loaded = {"summary": "", "value": loaded}
    value = loaded.get("value")
    if not isinstance(value, dict):
        raise FlowDefinitionError(["a flow needs a 'value' object with 'modules'"])
    problems = _refusals(value)
    schema = loaded.get("schema")
    if isinstance(schema, dict) and (why := schema_problem(schema)) is not None:
        problems.append(f"schema: {why}")
    if problems:
        raise FlowDefinitionError(problems)
    try:
        return OpenFlow.model_validate(loaded)
    except ValidationError as exc:
        raise FlowDefinitionError(
            [f"{_location(err['loc'])}: {err['msg']}" for err in exc.errors()[:10]]
        ) from None


def dump_flow(flow: OpenFlow) -> str:
    """Canonical JSON of a parsed flow (sorted keys), the text its version hash is taken of."""
    return json.dumps(flow.model_dump(mode="json", by_alias=True, exclude_none=True),
                      sort_keys=True, separators=(",", ":"))


def iter_modules(modules: list[FlowModule]) -> list[FlowModule]:
    """Every module of ``modules`` and of their bodies, depth first."""
    found: list[FlowModule] = []
    for module in modules:
        found.append(module)
        for body in bodies_of(module.value):
            found.extend(iter_modules(body))
    return found


def bodies_of(value: Any) -> list[list[FlowModule]]:
    """The module lists nested in a module value: loop body, branches, default."""
    if isinstance(value, ForloopFlow | WhileloopFlow):
        return [value.modules]
    if isinstance(value, BranchOne):
        return [branch.modules for branch in value.branches] + [value.default]
    if isinstance(value, BranchAll):
        return [branch.modules for branch in value.branches]
    return []


for _model in (ForloopFlow, WhileloopFlow, BranchOneBranch, BranchOne, BranchAllBranch, BranchAll,
               FlowModule):
    _model.model_rebuild()
