"""The Redis key layout: DESIGN.md §4 names, one hash tag per atomic script."""

from __future__ import annotations

import re

from common.keys import Keys


def _tag(key: str) -> str:
    match = re.search(r"\{([^}]*)\}", key)
    assert match, key
    return match.group(1)


def test_group_keys_follow_the_contract() -> None:
    """Every per-group key has the exact name of DESIGN.md §4."""
    g = Keys("gm").group("gpu")
    assert g.scheduled == "gm:{wg:gpu}:scheduled"
    assert g.ready == "gm:{wg:gpu}:ready"
    assert g.running("w1") == "gm:{wg:gpu}:running:w1"
    assert g.job("j") == "gm:{wg:gpu}:job:j"
    assert g.logs("j") == "gm:{wg:gpu}:logs:j"
    assert g.done("j") == "gm:{wg:gpu}:done:j"
    assert g.completed == "gm:{wg:gpu}:completed"
    assert g.events == "gm:{wg:gpu}:events"
    assert g.wake == "gm:{wg:gpu}:wake"


def test_global_keys_follow_the_contract() -> None:
    """Global keys have the exact names of DESIGN.md §4, under the namespace."""
    k = Keys("gm")
    assert (k.inbox, k.jobloc("j"), k.workers, k.worker("w"), k.routing, k.settings) == (
        "gm:inbox", "gm:jobloc:j", "gm:workers", "gm:worker:w", "gm:routing", "gm:settings")
    assert Keys("other").inbox == "other:inbox"


def test_one_hash_tag_per_group_and_per_script_store() -> None:
    """Keys that one script touches share a hash tag, so the scripts run on a cluster."""
    g = Keys("gm").group("default")
    group_keys = [g.scheduled, g.ready, g.running("w"), g.job("j"), g.logs("j"), g.done("j"),
                  g.completed, g.events, g.wake]
    assert {_tag(key) for key in group_keys} == {"wg:default"}
    k = Keys("gm")
    assert {_tag(k.script("h")), _tag(k.script_paths), _tag(k.script_history("u/a/b"))} == {"scripts"}
