"""Flows end to end: a real scheduler (advancer) and real workers (steps in the sandbox)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from auth.identity import IdentityStore
from common.errors import SpecError
from common.keys import Keys
from common.models import Kind
from gristmill.client import Gristmill
from gristmill.embedded import free_port
from gristmill.embedded_cluster import EmbeddedCluster
from schedules.store import Schedule
from tests.conftest import RedisUnderTest
from tests.e2e.conftest import (
    Processes,
    RunningFleet,
    clean_env,
    deadline,
    scheduler_registered,
    worker_id_of,
)
from tests.e2e.test_identity_e2e import Http, healthy
from vault.crypto import generate_key

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.timeout(120)]

WAIT_S = 90.0

# The reference's example (../shared/reference/openflow.md): 3 steps, a parallel for-loop, a branch.
REFERENCE: dict[str, Any] = {
    "summary": "fetch, fan out, route",
    "value": {"modules": [
        {"id": "a", "value": {"type": "rawscript", "language": "python3",
                              "content": "def main(n: int):\n    return list(range(n))",
                              "input_transforms": {"n": {"type": "javascript", "expr": "flow_input.n"}}}},
        {"id": "b", "value": {
            "type": "forloopflow", "skip_failures": False, "parallel": True,
            "parallelism": {"type": "static", "value": 4},
            "iterator": {"type": "javascript", "expr": "results.a"},
            "modules": [{"id": "c", "value": {
                "type": "rawscript", "language": "python3",
                "content": "def main(x: int):\n    return x * x",
                "input_transforms": {"x": {"type": "javascript", "expr": "flow_input.iter.value"}}},
                "retry": {"constant": {"attempts": 2, "seconds": 1}}}]}},
        {"id": "d", "value": {
            "type": "branchone",
            "branches": [{"summary": "big", "expr": "results.b.reduce((s, v) => s + v, 0) > 100",
                          "modules": [{"id": "e", "value": {
                              "type": "rawscript", "language": "python3",
                              "content": "def main(total: list):\n    return {'big': sum(total)}",
                              "input_transforms": {"total": {"type": "javascript",
                                                             "expr": "results.b"}}}}]}],
            "default": [{"id": "f", "value": {"type": "identity"}}]},
         "stop_after_if": {"expr": "result == null", "skip_if_stopped": True}}],
        "failure_module": {"id": "failure", "value": {
            "type": "rawscript", "language": "python3",
            "content": "def main(error: dict):\n    return {'recover': False, 'seen': error}",
            "input_transforms": {"error": {"type": "javascript", "expr": "previous_result"}}}},
        "same_worker": False},
    "schema": {"type": "object", "properties": {"n": {"type": "integer", "default": 5}}, "required": ["n"]},
}


def test_reference_flow_runs_loop_and_both_branches(fleet_up: RunningFleet, gm: Gristmill) -> None:
    """The reference flow: a parallel loop of squares, then the default branch (n=5) or the big one (n=8)."""
    small = gm.submit({"flow": REFERENCE, "args": {"n": 5}})
    big = gm.submit({"flow": REFERENCE, "args": {"n": 8}})
    done = gm.wait(small, WAIT_S)
    assert done.status == "success", done.error
    assert done.kind == "flowpreview"
    assert done.result == [0, 1, 4, 9, 16]
    done = gm.wait(big, WAIT_S)
    assert done.status == "success", done.error
    assert done.result == {"big": 140}
    steps = gm.flow_steps(big)
    assert [s.label for s in steps if s.depth == 0] == ["a", "b", "d"]
    iterations = [s for s in steps if s.label.startswith("iteration")]
    assert len(iterations) == 8 and all(s.status == "success" for s in iterations)
    branch = next(s for s in steps if s.label == "d")
    assert branch.branch_chosen == 0
    step_jobs = [gm.get_job(s.job) for s in steps if s.job]
    assert {j.parent_job for j in step_jobs} == {big}
    assert all(j.root_job == big and j.status == "success" for j in step_jobs)
    assert {j.flow_step_id for j in step_jobs} == {"a", "c", "e"}


# -- a fleet with the API: suspends, permissions, the sandbox ----------------------------------


@dataclass
class FlowFleet:
    procs: Processes
    gm: Gristmill
    http: Http
    tokens: dict[str, str]
    worker_uid: int


@pytest.fixture
def flow_fleet(procs: Processes, gm: Gristmill, redis_client: redis.Redis) -> FlowFleet:
    """Scheduler, worker and API sharing one secret key; alice and bob, developers."""
    port = free_port()
    env = {"GRISTMILL_SECRET_KEY": generate_key(), "GRISTMILL_BASE_URL": f"http://127.0.0.1:{port}"}
    procs.scheduler(**env)
    worker = procs.worker(**env)
    procs.start("api", "api", "--port", str(port), env=clean_env(procs.redis_url, **env))
    http = Http(f"http://127.0.0.1:{port}")
    identity = IdentityStore(redis_client, Keys("gm"))
    admin = identity.ensure_admin()
    assert admin is not None
    tokens = {"admin": admin}
    for name in ("alice", "bob"):
        identity.create_user(name)
        tokens[name] = identity.create_token(name, label="flows")[0]
    deadline(lambda: healthy(http), 20, "the API to answer /api/health")
    worker_id_of(redis_client, worker.pid)
    scheduler_registered(redis_client)
    return FlowFleet(procs, gm, http, tokens, os.stat(f"/proc/{worker.pid}").st_uid)


def flow_of(*modules: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"summary": "test", "value": {"modules": list(modules)}}
    if schema is not None:
        doc["schema"] = schema
    return doc


def raw(module_id: str, content: str, **inputs: str) -> dict[str, Any]:
    """A python3 rawscript module whose inputs are JavaScript expressions."""
    transforms = {name: {"type": "javascript", "expr": expr} for name, expr in inputs.items()}
    return {"id": module_id, "value": {"type": "rawscript", "language": "python3", "content": content,
                                       "input_transforms": transforms}}


def waiting_steps(fleet: FlowFleet, flow_id: str, who: str = "admin") -> list[str]:
    answer: list[str] = fleet.http.ok("GET", f"/api/jobs/{flow_id}/flow", fleet.tokens[who])["waiting"]
    return answer


def test_suspend_is_resumed_through_its_signed_urls_each_once(flow_fleet: FlowFleet) -> None:
    """Deployed and run over HTTP; the step waits for 2 approvals; each signed URL counts once."""
    fleet, admin = flow_fleet, flow_fleet.tokens["admin"]
    ask = raw("a", "def main():\n    return 'asked'")
    ask["suspend"] = {"required_events": 2, "timeout": 300}
    doc = flow_of(ask, raw("b", "def main(r, who: list):\n    return {'resume': r, 'approvers': who}",
                           r="resume", who="approvers"))
    fleet.http.ok("POST", "/api/flows", admin, {"path": "f/ops/approve", "value": doc})
    flow_id = fleet.http.ok("POST", "/api/jobs/run/f/f/ops/approve", admin, {})
    deadline(lambda: waiting_steps(fleet, flow_id) == ["a"], 60, "step a to wait for approval")
    base = fleet.http.base
    first, second = (fleet.http.ok("GET", f"/api/jobs/flows/{flow_id}/resume_urls/a", admin)
                     for _ in range(2))
    assert first["resume"].startswith(base) and first["cancel"].startswith(base)
    forged = first["resume"].replace("signature=", "signature=0")
    assert fleet.http.call("GET", forged[len(base):], None)[0] == 403
    status, answer = fleet.http.call("POST", first["resume"][len(base):], None, {"n": 1})
    assert status == 200, answer
    status, again = fleet.http.call("POST", first["resume"][len(base):], None, {"n": 2})
    assert status == 403 and "used already" in json.dumps(again)
    assert waiting_steps(fleet, flow_id) == ["a"]
    status, answer = fleet.http.call("GET", second["resume"][len(base):], None)
    assert status == 200, answer
    done = fleet.gm.wait(flow_id, WAIT_S)
    assert done.status == "success", done.error
    assert done.result == {"resume": None, "approvers": ["anonymous", "anonymous"]}


ASK_FOR_URLS = """\
import gristmill
from gristmill.injob import JobClientError, _call

def main(other_flow: str, other_job: str):
    urls = gristmill.get_resume_urls()
    refused = {}
    for name, route in (("step", f"/api/jobs/resume_urls/{other_job}"),
                        ("flow", f"/api/jobs/flows/{other_flow}/resume_urls/x")):
        try:
            refused[name] = [200, _call("GET", route)]
        except JobClientError as exc:
            refused[name] = [exc.status, str(exc)]
    return {"urls": urls, "refused": refused}
"""

NO_SUSPEND = """\
import gristmill

def main():
    try:
        return gristmill.get_resume_urls()
    except gristmill.JobClientError as exc:
        return [exc.status, str(exc)]
"""


def test_a_step_gets_its_own_resume_urls_and_no_other_flow_s(flow_fleet: FlowFleet) -> None:
    """`gristmill.get_resume_urls()` in a step with a suspend signs URLs for its own flow and step
    (Windmill's get_resume_urls); its job token gets no other flow's URLs, by step job or by
    flow, although its identity (admin) may see that flow; a step without suspend is told why."""
    fleet, gm = flow_fleet, flow_fleet.gm
    other = raw("x", "def main():\n    return 'other'")
    other["suspend"] = {"required_events": 1, "timeout": 300}
    other_id = gm.run_flow_preview(flow_of(other, raw("y", "def main():\n    return 1")))
    deadline(lambda: waiting_steps(fleet, other_id) == ["x"], 60, "the other flow's step to wait")
    other_job = next(row.job for row in gm.flow_steps(other_id) if row.label == "x")
    ask = raw("ask", ASK_FOR_URLS, other_flow=json.dumps(other_id), other_job=json.dumps(other_job))
    ask["suspend"] = {"required_events": 1, "timeout": 300}
    flow_id = gm.run_flow_preview(flow_of(
        raw("plain", NO_SUSPEND), ask, raw("b", "def main(r):\n    return {'resume': r}", r="resume")))
    deadline(lambda: waiting_steps(fleet, flow_id) == ["ask"], 60, "step ask to wait for approval")
    rows = {row.label: row for row in gm.flow_steps(flow_id)}
    plain = gm.get_job(rows["plain"].job or "").result
    assert plain[0] == 400 and "has no suspend" in plain[1], plain
    asked = gm.get_job(rows["ask"].job or "").result
    for name, (status, message) in asked["refused"].items():
        assert status == 403 and "its own step only" in message, (name, status, message)
    base = fleet.http.base
    urls = asked["urls"]
    assert urls["resume"].startswith(f"{base}/api/jobs/flows/{flow_id}/resume/ask?"), urls
    # Pointed at the other flow, the signature does not hold.
    forged = urls["resume"].replace(flow_id, other_id)
    assert fleet.http.call("POST", forged[len(base):], None, {"n": 0})[0] == 403
    status, answer = fleet.http.call("POST", urls["resume"][len(base):], None, {"n": 1})
    assert status == 200, answer
    done = gm.wait(flow_id, WAIT_S)
    assert (done.status, done.result) == ("success", {"resume": {"n": 1}}), done.error
    assert waiting_steps(fleet, other_id) == ["x"]
    gm.cancel(other_id, reason="test over")


def test_suspend_times_out_and_fails_the_flow(flow_fleet: FlowFleet) -> None:
    """Nobody approves within the suspend's timeout: the flow fails with SuspendedTimedOut."""
    ask = raw("a", "def main():\n    return 1")
    ask["suspend"] = {"required_events": 1, "timeout": 1}
    flow_id = flow_fleet.gm.run_flow_preview(flow_of(ask, raw("b", "def main():\n    return 2")))
    done = flow_fleet.gm.wait(flow_id, WAIT_S)
    assert done.status == "failure"
    assert done.error is not None and done.error["name"] == "SuspendedTimedOut", done.error
    assert [row.status for row in flow_fleet.gm.flow_steps(flow_id)] == ["failure"]


def test_a_subflow_runs_as_a_child_flow_job(flow_fleet: FlowFleet) -> None:
    """A `flow` step runs the deployed child flow as a flow job of its own; its result flows back."""
    gm = flow_fleet.gm
    gm.deploy_flow("f/ops/double", flow_of(raw("d", "def main(x: int):\n    return 2 * x", x="flow_input.x")))
    parent = flow_of(
        raw("a", "def main(n: int):\n    return n + 1", n="flow_input.n"),
        {"id": "b", "value": {"type": "flow", "path": "f/ops/double",
                              "input_transforms": {"x": {"type": "javascript", "expr": "results.a"}}}},
        raw("c", "def main(v: int):\n    return {'final': v}", v="previous_result"))
    flow_id = gm.run_flow_preview(parent, {"n": 20})
    done = gm.wait(flow_id, WAIT_S)
    assert done.status == "success", done.error
    assert done.result == {"final": 42}
    child_id = next(row.job for row in gm.flow_steps(flow_id) if row.label == "b")
    assert child_id is not None
    child = gm.get_job(child_id)
    assert (child.kind, child.status, child.parent_job, child.root_job) == ("flow", "success", flow_id,
                                                                            flow_id)
    assert child.script_path == "f/ops/double" and child.result == 42
    grandchild = next(row.job for row in gm.flow_steps(child_id) if row.label == "d")
    assert grandchild is not None and gm.get_job(grandchild).root_job == flow_id


STEP_ENV = """\
import os, socket

def main():
    try:
        with socket.create_connection(("127.0.0.1", int(os.environ["PORT"])), timeout=5) as conn:
            conn.sendall(b"PING\\r\\n")
            redis = conn.recv(100).decode(errors="replace")
    except OSError as exc:
        redis = f"unreachable: {exc}"
    names = ("WM_PERMISSIONED_AS", "WM_ROOT_FLOW_JOB_ID", "WM_FLOW_STEP_ID", "WM_FLOW_JOB_ID")
    return {"env": {name: os.environ.get(name) for name in names}, "uid": os.getuid(), "redis": redis,
            "secrets": sorted(k for k in os.environ if k.startswith("GRISTMILL_"))}
"""


def any_port(server: RedisUnderTest) -> int:
    """A port the fleet's Redis answers on (a server's, or a cluster's first node's)."""
    return server.nodes[0].port if isinstance(server, EmbeddedCluster) else server.port


def test_steps_run_as_the_flow_identity_and_a_forbidden_script_fails_the_flow(
        flow_fleet: FlowFleet, redis_server: RedisUnderTest) -> None:
    """alice's flow: its steps run as alice in the sandbox; a step running bob's script is refused."""
    fleet, http = flow_fleet, flow_fleet.http
    alice, bob = fleet.tokens["alice"], fleet.tokens["bob"]
    http.ok("POST", "/api/scripts", bob, {"path": "u/bob/private", "language": "python3",
                                          "code": "def main():\n    return 'bob only'"})
    env_step = raw("a", STEP_ENV.replace('os.environ["PORT"]', str(any_port(redis_server))))
    allowed = flow_of(env_step)
    flow_id = http.ok("POST", "/api/jobs/run/preview_flow", alice, {"value": allowed, "args": {}})
    done = fleet.gm.wait(flow_id, WAIT_S)
    assert done.status == "success", done.error
    seen = done.result
    assert seen["env"] == {"WM_PERMISSIONED_AS": "u/alice", "WM_ROOT_FLOW_JOB_ID": flow_id,
                           "WM_FLOW_STEP_ID": "a", "WM_FLOW_JOB_ID": flow_id}
    # The sandbox's guarantees hold for a step: its own uid, no credentials, Redis refuses it.
    assert seen["secrets"] == [] and seen["uid"] != fleet.worker_uid
    assert seen["redis"].startswith(("-NOAUTH", "unreachable")), seen["redis"]

    forbidden = flow_of(raw("a", "def main():\n    return 1"),
                        {"id": "b", "value": {"type": "script", "path": "u/bob/private",
                                              "input_transforms": {}}})
    flow_id = http.ok("POST", "/api/jobs/run/preview_flow", alice, {"value": forbidden, "args": {}})
    done = fleet.gm.wait(flow_id, WAIT_S)
    assert done.status == "failure"
    assert done.error is not None and "PermissionDenied" in json.dumps(done.error), done.error
    assert "u/bob/private" in done.error["message"]
    refused = next(row for row in fleet.gm.flow_steps(flow_id) if row.label == "b")
    assert refused.status == "failure" and refused.job is not None
    record = fleet.gm.get_job(refused.job)  # the refusal left a record saying why
    assert record.status == "failure" and record.error is not None
    assert record.error["name"] == "PermissionDenied" and record.permissioned_as == "u/alice"
    # bob may run his own script in a flow.
    flow_id = http.ok("POST", "/api/jobs/run/preview_flow", bob, {"value": forbidden, "args": {}})
    done = fleet.gm.wait(flow_id, WAIT_S)
    assert (done.status, done.result) == ("success", "bob only"), done.error


def test_a_flow_preview_from_the_inbox(fleet_up: RunningFleet, gm: Gristmill,
                                       redis_client: redis.Redis) -> None:
    """A raw flow LPUSHed to gm:inbox runs; a bad one is rejected with a record that says why."""
    flow_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
    redis_client.lpush("gm:inbox", json.dumps({"id": flow_id, "flow": REFERENCE, "args": {"n": 3}}))
    redis_client.lpush("gm:inbox", json.dumps({
        "id": bad_id, "flow": flow_of({"id": "a", "value": {"type": "rawscript", "language": "deno",
                                                            "content": "x"}})}))
    done = gm.wait(flow_id, WAIT_S)
    assert (done.status, done.kind, done.result) == ("success", "flowpreview", [0, 1, 4]), done.error
    assert done.permissioned_as == "u/inbox"
    rejected = gm.wait(bad_id, WAIT_S)
    assert rejected.status == "failure" and rejected.error is not None
    assert rejected.error["name"] == "InvalidSpec" and "'a'" in rejected.error["message"]
    assert "deno" in rejected.error["message"]


def test_cancel_a_flow_cancels_its_running_step_and_starts_no_other(
        fleet_up: RunningFleet, gm: Gristmill) -> None:
    """Cancel a running flow: its running step is canceled, the next one never starts."""
    share = fleet_up.procs.share
    started = share / "started"
    slow = raw("a", "import pathlib, time\n\ndef main(mark: str):\n    pathlib.Path(mark).touch()\n"
                    "    time.sleep(120)\n", mark=json.dumps(str(started)))
    flow_id = gm.run_flow_preview(flow_of(slow, raw("b", "def main():\n    return 'never'")))
    deadline(started.exists, 60, "step a to start")
    assert gm.cancel(flow_id, reason="enough") == "requested"
    done = gm.wait(flow_id, WAIT_S)
    assert done.status == "canceled"
    rows = gm.flow_steps(flow_id)
    assert [row.label for row in rows] == ["a"]
    assert rows[0].job is not None
    step = gm.wait(rows[0].job, WAIT_S)
    assert step.status == "canceled"


def test_a_flow_s_timeout_cancels_its_running_step_and_fails_it(
        fleet_up: RunningFleet, gm: Gristmill, redis_client: redis.Redis) -> None:
    """A flow job's own timeout_s: the running step is canceled, the next never starts, the flow
    fails with a Timeout that says so; a whole-flow retry is refused, by the client and the inbox."""
    started = fleet_up.procs.share / "started"
    slow = raw("a", "import pathlib, time\n\ndef main(mark: str):\n    pathlib.Path(mark).touch()\n"
                    "    time.sleep(120)\n", mark=json.dumps(str(started)))
    doc = flow_of(slow, raw("b", "def main():\n    return 'never'"))
    flow_id = gm.run_flow_preview(doc, timeout_s=3)
    done = gm.wait(flow_id, WAIT_S)
    assert started.exists()
    assert done.status == "failure" and done.error is not None, done
    assert done.error["name"] == "Timeout" and "timeout of 3 s" in done.error["message"], done.error
    rows = gm.flow_steps(flow_id)
    assert [row.label for row in rows] == ["a"] and rows[0].job is not None
    assert gm.wait(rows[0].job, WAIT_S).status == "canceled"
    retry = {"constant": {"attempts": 2, "seconds": 1}}
    with pytest.raises(SpecError, match="not retried as a whole"):
        gm.run_flow_preview(doc, retry=retry)
    bad_id = str(uuid.uuid4())
    redis_client.lpush("gm:inbox", json.dumps({"id": bad_id, "flow": doc, "retry": retry}))
    rejected = gm.wait(bad_id, WAIT_S)
    assert rejected.status == "failure" and rejected.error is not None
    assert "not retried as a whole" in rejected.error["message"], rejected.error


PRINTING_FLOW = """\
summary: printing
schema:
  type: object
  properties:
    n: {type: integer, default: 2}
value:
  modules:
    - id: a
      value:
        type: rawscript
        language: python3
        content: |
          def main(n: int):
              print(f"a got {n}")
              return list(range(n))
        input_transforms:
          n: {type: javascript, expr: flow_input.n}
    - id: b
      value:
        type: forloopflow
        iterator: {type: javascript, expr: results.a}
        modules:
          - id: c
            value:
              type: rawscript
              language: bash
              content: |
                x="$1"
                echo "c got $x"
                echo "$x"
              input_transforms:
                x: {type: javascript, expr: flow_input.iter.value}
"""


def test_cli_deploys_shows_runs_and_explains_a_flow(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """flow deploy (YAML) / show / run --flow --wait; job get shows the tree; job logs the steps' logs."""
    procs = fleet_up.procs
    (tmp_path / "printing.yaml").write_text(PRINTING_FLOW)
    deployed = procs.cli("flow", "deploy", "f/ops/printing", str(tmp_path / "printing.yaml"))
    assert deployed.returncode == 0, deployed.stderr
    digest = deployed.stdout.strip()
    shown = procs.cli("flow", "show", "f/ops/printing")
    assert shown.returncode == 0 and digest in shown.stdout and '"forloopflow"' in shown.stdout
    ran = procs.cli("run", "--flow", "f/ops/printing", "-a", "n=3", "--wait")
    assert ran.returncode == 0, ran.stderr
    flow_id = ran.stderr.strip().splitlines()[-1]
    assert json.loads(ran.stdout) == [0, 1, 2]
    got = procs.cli("job", "get", flow_id)
    assert got.returncode == 0, got.stderr
    tree = got.stdout.split("steps:\n", 1)[1].splitlines()
    assert tree[0].startswith("a  success") and tree[1].startswith("b  success")
    assert [line.split()[:3] for line in tree[2::2]] == [["iteration", str(i), "success"] for i in range(3)]
    assert all(line.strip().startswith("c  success") and " ms" in line for line in tree[3::2])
    logs = procs.cli("job", "logs", flow_id)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("== ")] == ["a", "b/0/c", "b/1/c", "b/2/c"]
    assert [line for line in lines if not line.startswith("== ")] == [
        "a got 3", "c got 0", "0", "c got 1", "1", "c got 2", "2"]
    preview = procs.cli("flow", "preview", str(tmp_path / "printing.yaml"), "--wait")
    assert preview.returncode == 0 and json.loads(preview.stdout) == [0, 1], preview.stderr


def test_a_schedule_fires_a_flow(fleet_up: RunningFleet, gm: Gristmill) -> None:
    """A schedule whose target is a flow: its fires are flow jobs that run to their result."""
    gm.deploy_flow("f/ops/tick", flow_of(raw("a", "def main(word: str):\n    return word * 2",
                                             word="flow_input.word")))
    gm.schedules.create(Schedule(path="f/ops/every_second", script_path="f/ops/tick", is_flow=True,
                                 cron="* * * * * *", args={"word": "tick"}))
    first = deadline(lambda: gm.schedules.runs("f/ops/every_second"), 30, "the schedule's first fire")
    run_id = first[-1]  # newest first: the first fire
    done = gm.wait(run_id, WAIT_S)
    assert (done.kind, done.status, done.result) == ("flow", "success", "ticktick"), done.error
    assert done.schedule_path == "f/ops/every_second" and done.script_path == "f/ops/tick"
    gm.schedules.pause("f/ops/every_second")


def test_the_readme_example_runs(fleet_up: RunningFleet, tmp_path: Path) -> None:
    """The flow in README's *Flows* section deploys and runs as it says ({"big": 140} for n=8)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("## Flows", 1)[1]
    document = section.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    (tmp_path / "squares.yaml").write_text(document)
    procs = fleet_up.procs
    assert procs.cli("flow", "deploy", "f/demo/squares", str(tmp_path / "squares.yaml")).returncode == 0
    ran = procs.cli("run", "--flow", "f/demo/squares", "-a", "n=8", "--wait")
    assert ran.returncode == 0 and json.loads(ran.stdout) == {"big": 140}, ran.stderr
    ran = procs.cli("flow", "preview", str(tmp_path / "squares.yaml"), "-a", "n=3", "--wait")
    assert ran.returncode == 0 and json.loads(ran.stdout) == [0, 1, 4], ran.stderr


def _gated_early_flow(gate: Path) -> dict[str, Any]:
    """Step a answers early ({"early": True}); step b runs until ``gate`` exists, then 'late'."""
    slow = raw("b", "import pathlib, time\n\ndef main(gate: str):\n"
                    "    for _ in range(1200):\n        if pathlib.Path(gate).exists():\n"
                    "            return 'late'\n        time.sleep(0.05)\n", gate=json.dumps(str(gate)))
    doc = flow_of(raw("a", "def main():\n    return {'early': True}"), slow)
    doc["value"]["early_return"] = "a"
    return doc


def test_cli_wait_and_the_client_answer_a_flow_s_early_return(fleet_up: RunningFleet,
                                                               gm: Gristmill) -> None:
    """`run --flow --wait` prints step a's result and exits 0 while step b still runs; so does
    `Gristmill.wait(early_return=True)`; a plain wait still waits for the flow's end."""
    gates = fleet_up.procs.share / "cli", fleet_up.procs.share / "client"
    gm.deploy_flow("f/ops/early", _gated_early_flow(gates[0]))
    ran = fleet_up.procs.cli("run", "--flow", "f/ops/early", "--wait", "--wait-timeout", "60")
    assert ran.returncode == 0 and json.loads(ran.stdout) == {"early": True}, ran.stderr
    cli_flow = ran.stderr.split()[0]
    assert gm.get_job(cli_flow).status == "running"  # b holds it open
    gates[0].touch()
    done = gm.wait(cli_flow, WAIT_S)
    assert (done.status, done.result) == ("success", "late"), done.error
    flow_id = gm.run_flow_preview(_gated_early_flow(gates[1]))
    answer = gm.wait(flow_id, WAIT_S, early_return=True)
    assert (answer.status, answer.result) == ("running", {"early": True})
    gates[1].touch()
    done = gm.wait(flow_id, WAIT_S)
    assert (done.status, done.result) == ("success", "late"), done.error


def test_run_wait_result_answers_a_flow_s_early_return(flow_fleet: FlowFleet) -> None:
    """early_return: the synchronous caller gets step a's result while step b still runs."""
    fleet = flow_fleet
    gate = fleet.procs.share / "go"
    doc = _gated_early_flow(gate)
    answer = fleet.http.ok("POST", "/api/jobs/run_wait_result/preview_flow", fleet.tokens["admin"],
                           {"value": doc, "args": {}}, query={"wait_s": 60})
    assert answer == {"early": True}
    running = fleet.gm.list_jobs(kind=Kind.FLOWPREVIEW)
    assert [job.status for job in running] == ["running"]
    gate.touch()
    done = fleet.gm.wait(running[0].id, WAIT_S)
    assert (done.status, done.result) == ("success", "late"), done.error
