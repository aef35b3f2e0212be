"""Flow versions on a real Redis: deploy is idempotent, versions never change, paths move."""

from __future__ import annotations

import json

import pytest
import redis

from common.errors import NotFound, SpecError
from common.keys import Keys
from flows.errors import FlowDefinitionError
from flows.versions import FlowVersions
from tests.unit.flow_driver import flow, raw

pytestmark = pytest.mark.cluster


@pytest.fixture
def versions(redis_client: redis.Redis, keys: Keys) -> FlowVersions:
    return FlowVersions(redis_client, keys, clock=lambda: 1000)


def test_deploy_is_idempotent_and_json_or_yaml_give_one_version(versions: FlowVersions) -> None:
    """The same flow deployed as JSON then YAML is one version, not two."""
    import yaml

    doc = flow(raw("a"), raw("b"))
    first, new = versions.deploy("f/team/etl", json.dumps(doc))
    again, new_again = versions.deploy("f/team/etl", yaml.safe_dump(doc))
    assert new and not new_again and first.hash == again.hash
    assert versions.history("f/team/etl") == [first.hash]


def test_a_new_version_moves_the_path_and_the_old_one_stays(versions: FlowVersions) -> None:
    """Path -> latest; an older hash still gives its own flow."""
    v1, _ = versions.deploy("f/team/etl", flow(raw("a")))
    v2, _ = versions.deploy("f/team/etl", flow(raw("a"), raw("b")))
    assert versions.get("f/team/etl").hash == v2.hash
    assert [m.id for m in versions.get(v1.hash).flow.value.modules] == ["a"]
    assert versions.history("f/team/etl") == [v1.hash, v2.hash]
    assert versions.all_paths() == {"f/team/etl": v2.hash}


def test_the_same_flow_at_two_paths_is_two_versions(versions: FlowVersions) -> None:
    """A hash names one path, so one owner."""
    a, _ = versions.deploy("u/ada/f", flow(raw("a")))
    b, _ = versions.deploy("u/bob/f", flow(raw("a")))
    assert a.hash != b.hash


def test_refusals(versions: FlowVersions) -> None:
    """A bad path, an unsupported flow, a missing path: each refused with its reason."""
    with pytest.raises(SpecError):
        versions.deploy("nowhere", flow(raw("a")))
    with pytest.raises(FlowDefinitionError, match="language 'deno'"):
        versions.deploy("u/ada/f", flow({"id": "a", "value": {"type": "rawscript", "language": "deno",
                                                              "content": "", "input_transforms": {}}}))
    with pytest.raises(NotFound, match="gristmill flow deploy"):
        versions.get("u/ada/none")
