"""Lua snippets shared by scripts: an include line becomes the snippet's text at load time."""

from __future__ import annotations

import pytest

from common import luascripts
from common.luascripts import INCLUDE, assemble

pytestmark = pytest.mark.timeout(10)


def test_an_include_line_is_replaced_by_the_snippet() -> None:
    """Only a whole line names a snippet; the rest of the script is left as it is."""
    snippets = {"_twice.lua": "local function twice(x)\n  return 2 * x\nend\n"}
    source = "#!lua\n-- header\n-- include: _twice.lua\nreturn twice(ARGV[1])\n"
    assert assemble(source, snippets.__getitem__) == (
        "#!lua\n-- header\nlocal function twice(x)\n  return 2 * x\nend\nreturn twice(ARGV[1])\n")
    mention = "-- see `-- include: _twice.lua`\nreturn 1\n"
    assert assemble(mention, snippets.__getitem__) == mention


def test_a_snippet_that_includes_another_is_refused() -> None:
    """Snippets are one level deep, so what Redis runs is easy to read back."""
    snippets = {"_a.lua": "-- include: _b.lua\n", "_b.lua": "local b = 1\n"}
    with pytest.raises(ValueError, match=r"_a\.lua: a snippet includes no other"):
        assemble("-- include: _a.lua\nreturn 1\n", snippets.__getitem__)


def test_the_log_budget_has_one_home_in_both_scripts_that_write_lines() -> None:
    """append_logs.lua and complete.lua each get the shared function once, their shebang still
    first; no loaded script keeps an include line."""
    for script in (luascripts.APPEND_LOGS, luascripts.COMPLETE):
        assert script.source.startswith("#!lua\n")
        assert script.source.count("local function append_within_budget(") == 1
    for script in luascripts.ALL:
        assert not INCLUDE.search(script.source), script.name
