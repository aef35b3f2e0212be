"""Arbitrary args to scripts: the worker never crashes and every job ends with a record."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.fleet import Fleet
from common.models import TERMINAL_STATUSES
from common.settings import Settings
from common.store import Store
from jobs.admission import Admission
from jobs.scripts import ScriptStore
from jobs.spec import parse_spec
from worker.sandbox.policy import Sandbox
from worker.worker import Worker

TYPED = """
from dataclasses import dataclass
from datetime import datetime
@dataclass
class Point:
    x: int
    y: float = 0.0
def main(n: int, when: datetime, p: Point, tags: list[str] | None = None, raw=None):
    return {"n": n, "when": when.isoformat(), "x": p.x, "tags": tags, "raw": raw}
"""
BASH = 'name="$1"\ncount="${2:-3}"\necho "$name $count"\n'

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False,
    allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
ARGS = st.dictionaries(
    st.sampled_from(["n", "when", "p", "tags", "raw", "name", "count", "extra"]),
    JSON | st.datetimes(min_value=datetime(1970, 1, 2)).map(datetime.isoformat)
    | st.fixed_dictionaries({"x": JSON}, optional={"y": JSON}),
    max_size=6,
)


@pytest.fixture(scope="module")
def fleet_in_thread(redis_server: object, sandbox: Sandbox) -> Iterator[tuple[Admission, Store]]:
    import redis as redis_py

    from common.keys import Keys

    url = redis_server.url  # type: ignore[attr-defined]
    client = redis_py.Redis.from_url(url)
    keys = Keys("prop")
    store, scripts = Store(client, keys), ScriptStore(client, keys)
    scripts.deploy("u/alice/typed", "python3", TYPED)
    scripts.deploy("u/alice/shell", "bash", BASH)
    worker = Worker(store=store, scripts=scripts, fleet=Fleet(client, keys),
                    settings=Settings(redis_url=url, namespace="prop"), concurrency=2,
                    claim_block_s=0.5, sandbox=sandbox)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield Admission(store, scripts, Settings(redis_url=url, namespace="prop")), store
    worker.stop()
    thread.join(30)
    client.close()


@pytest.mark.timeout(300)
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(args=ARGS, script=st.sampled_from(["u/alice/typed", "u/alice/shell"]))
def test_any_args_end_in_a_record(fleet_in_thread: tuple[Admission, Store],
                                  args: dict[str, object], script: str) -> None:
    """Whatever the args, the job completes (success, or a failure that names the problem)."""
    admission, store = fleet_in_thread
    job = admission.submit(parse_spec({"path": script, "args": args}))
    final = store.wait(job.id, 60)
    assert final.status in TERMINAL_STATUSES
    if final.error is not None:
        assert final.error["name"] in {"ArgumentError", "ExitCode"}, final.error
        assert final.error["message"]
