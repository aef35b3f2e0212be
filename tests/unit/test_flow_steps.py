"""The flow's steps as a tree: modules, iterations (live and archived) and branches, in order."""

from __future__ import annotations

from flows.steps import format_tree, step_rows
from tests.unit.flow_driver import Driver, Failed, flow, js, loop, raw


def _fail_second(args: dict[str, object], attempt: int) -> object:
    if args["v"] == "y":
        raise Failed("no y")
    return args


def test_the_tree_lists_modules_iterations_and_branches_in_order() -> None:
    """Rows come in definition order; iterations by index, whether archived or still live."""
    doc = flow(raw("a", {"v": js("['x', 'y', 'z']")}),
               loop("l", "results.a.v", [raw("c", {"v": js("flow_input.iter.value")})], parallel=True,
                    skip_failures=True),
               {"id": "d", "value": {"type": "branchone", "default": [],
                                     "branches": [{"expr": "true", "modules": [raw("e")]}]}})
    d = Driver(doc, steps={"c": _fail_second}).start()
    d.answer(d.pending[0])  # a
    d.answer(d.job_of("l/2/c"))  # z ends first: archived while x, y run
    rows = step_rows(d.state, {f.addr: f for f in d.archive})
    assert [(r.depth, r.label, r.status) for r in rows] == [
        (0, "a", "success"), (0, "l", "running"),
        (1, "iteration 0", "running"), (2, "c", "running"),
        (1, "iteration 1", "running"), (2, "c", "running"),
        (1, "iteration 2", "success"), (2, "c", "success"),
    ]
    assert rows[2].iteration == "x" and rows[3].job == d.job_of("l/0/c").job
    d.run()
    rows = step_rows(d.state, {f.addr: f for f in d.archive})
    assert [(r.label, r.status) for r in rows][-3:] == [("d", "success"), ("branch 0", "success"),
                                                        ("e", "success")]
    assert rows[1].status == "success" and rows[4].status == "failure" and "no y" in (rows[5].error or "")
    text = format_tree(rows)
    assert "  iteration 1  failure" in text and "branch_chosen=0" in text
