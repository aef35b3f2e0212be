"""The operator's Python client: routing, settings, raw inbox pushes."""

from __future__ import annotations

import pytest

from common.errors import SpecError
from gristmill.client import Gristmill
from gristmill.embedded import EmbeddedRedis

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)


@pytest.fixture
def gm(redis_client: object, redis_server: EmbeddedRedis) -> Gristmill:
    return Gristmill(redis_server.url)


def test_routes_send_a_tag_to_a_group(gm: Gristmill, redis_server: EmbeddedRedis) -> None:
    """`route set` sends a tag's jobs to a group; `unset` sends them back to the default."""
    gm.set_route("gpu", "gpu-pool")
    assert gm.routes() == {"gpu": "gpu-pool"}
    fresh = Gristmill(redis_server.url)  # routes are cached per client for a few seconds
    job = fresh.get_job(fresh.run_preview("echo hi", "bash", tag="gpu"))
    assert (job.tag, job.group) == ("gpu", "gpu-pool")
    gm.set_route("gpu", None)
    assert gm.routes() == {}
    again = Gristmill(redis_server.url)
    assert again.get_job(again.run_preview("echo hi", "bash", tag="gpu")).group == "default"


@pytest.mark.parametrize(("tag", "group"), [("bad tag", "g"), ("gpu", "no/slash"), ("", "g")])
def test_bad_route_names_are_refused(gm: Gristmill, tag: str, group: str) -> None:
    """Tags and groups become parts of keys: only safe names are accepted."""
    with pytest.raises(SpecError, match="bad"):
        gm.set_route(tag, group)
