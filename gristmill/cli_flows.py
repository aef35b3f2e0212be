"""`gristmill flow deploy|show|run|preview`, and a flow job's steps for `job get` / `job logs`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from common.models import Job, Kind
from flows.steps import StepRow, format_tree

FLOW_KINDS = frozenset({Kind.FLOW, Kind.FLOWPREVIEW})
Submit = Callable[[dict[str, Any], bool, "float | None"], int]
SpecOptions = Callable[[argparse.Namespace], dict[str, Any]]


def _client() -> Any:
    from gristmill.client import Gristmill

    return Gristmill()


def read_flow_file(name: str) -> str:
    """A flow document (JSON or YAML) from a file, or stdin for ``-``."""
    return sys.stdin.read() if name == "-" else Path(name).read_text()


def cmd_flow_deploy(ns: argparse.Namespace) -> int:
    version, new = _client().deploy_flow(ns.path, read_flow_file(ns.file))
    print(version.hash)
    if not new:
        print(f"(identical to an existing version of {ns.path})", file=sys.stderr)
    return 0


def cmd_flow_show(ns: argparse.Namespace) -> int:
    client = _client()
    version = client.get_flow(ns.ref)
    print(f"path: {version.path}\nhash: {version.hash}\ncreated_by: {version.created_by}")
    print(json.dumps(version.flow.model_dump(mode="json", by_alias=True, exclude_none=True), indent=2,
                     ensure_ascii=False))
    history = client.flows.history(version.path)
    if len(history) > 1:
        print(f"---\nhistory of {version.path}: {' '.join(history)}")
    return 0


def steps_text(client: Any, flow_id: str) -> str:
    """The flow's steps as an indented tree, each step job with its duration."""
    rows = client.flow_steps(flow_id)
    lines = format_tree(rows).splitlines()
    for index, row in enumerate(rows):
        if row.job:
            duration = _duration(client, row.job)
            if duration is not None:
                lines[index] += f"  {duration} ms"
    return "\n".join(lines) if lines else "(no step has started)"


def _duration(client: Any, job_id: str) -> int | None:
    from common.errors import NotFound

    try:
        duration: int | None = client.get_job(job_id).duration_ms
    except NotFound:
        return None
    return duration


def step_jobs(client: Any, flow_id: str) -> Iterator[tuple[StepRow, Job]]:
    """Every step job of a flow in the tree's order, subflows' steps after their own row."""
    from common.errors import NotFound

    for row in client.flow_steps(flow_id):
        if not row.job:
            continue
        try:
            job = client.get_job(row.job)
        except NotFound:
            continue
        yield row, job
        if job.kind in FLOW_KINDS:
            yield from step_jobs(client, job.id)


def print_flow_logs(client: Any, flow: Job, follow: bool) -> int:
    """The steps' logs in order, each under a line naming the step (``job logs <flow id>``)."""
    if follow and not flow.is_terminal:
        client.wait(flow.id)
    for row, job in step_jobs(client, flow.id):
        if job.kind in FLOW_KINDS:
            continue
        print(f"== {row.addr} {job.id} ({job.status.value})", flush=True)
        for entry in client.logs(job.id):
            stream = sys.stderr if entry.stream == "stderr" else sys.stdout
            print(entry.line, file=stream, flush=True)
    return 0


def add_flow_commands(sub: Any, add_run_options: Callable[[argparse.ArgumentParser], None],
                      spec_options: SpecOptions, submit: Submit) -> None:
    """The ``flow`` command group; run options and submission are the `run` command's."""
    flow = sub.add_parser("flow", help="deploy, show and run flows (OpenFlow JSON or YAML)")
    actions = flow.add_subparsers(dest="action", required=True)
    p = actions.add_parser("deploy", help="save a new version; prints its hash")
    p.add_argument("path", help="u/<user>/<name>, g/<group>/<name> or f/<folder>/<name>")
    p.add_argument("file", help="the flow (JSON or YAML); - reads stdin")
    p.set_defaults(func=cmd_flow_deploy)

    p = actions.add_parser("show", help="show a version by path (latest) or hash")
    p.add_argument("ref")
    p.set_defaults(func=cmd_flow_show)

    p = actions.add_parser("run", help="run the latest version of a flow")
    p.add_argument("path")
    add_run_options(p)
    p.set_defaults(func=lambda ns: submit({"flow_path": ns.path, **spec_options(ns)}, ns.wait,
                                          ns.wait_timeout))

    p = actions.add_parser("preview", help="run a flow file without deploying it")
    p.add_argument("file", help="the flow (JSON or YAML); - reads stdin")
    add_run_options(p)
    p.set_defaults(func=lambda ns: submit({"flow": _document(read_flow_file(ns.file)),
                                           **spec_options(ns)}, ns.wait, ns.wait_timeout))


def _document(text: str) -> dict[str, Any]:
    from flows.model import parse_flow

    # Parsed here for its clear errors; the spec carries Windmill's own field names.
    parsed: dict[str, Any] = parse_flow(text).model_dump(mode="json", by_alias=True, exclude_none=True)
    return parsed
