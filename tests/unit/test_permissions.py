"""Who may do what (auth.permissions), from tables of cases, without Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from auth.permissions import Acl, FolderAcl, Level, Principal, can, level_of, may_run_as, require
from common.errors import PermissionDenied, SpecError
from common.paths import check_identity, check_item_path, check_name

ALICE = Principal("alice", frozenset({"ops"}))
BOB = Principal("bob")
CAROL = Principal("carol", frozenset({"dev"}))
DAVE = Principal("dave", frozenset({"dev"}))
OPS = Principal(None, frozenset({"ops"}))          # a job run as g/ops
ADMIN = Principal("root", role="admin")
INBOX = Principal("inbox")                         # tokenless inbox specs
OPS_USER = Principal("ops")                        # a user who happens to be named like a group
NOBODY = Principal(None)                           # a group principal with no group

SHARED = FolderAcl(readers=frozenset({"u/bob", "g/dev"}), writers=frozenset({"u/carol"}))
OPS_READS = FolderAcl(readers=frozenset({"g/ops"}))
GRANTS = Acl({"u/bob": "run", "g/dev": "read"})

ALLOWED: dict[Level | None, set[str]] = {
    "write": {"read", "run", "write"}, "run": {"read", "run"}, "read": {"read"}, None: set(),
}


@pytest.mark.parametrize(
    ("principal", "path", "acl", "folder", "level"),
    [
        (ALICE, "u/alice/x", None, None, "write"),                       # owner user
        (ALICE, "u/alice/deep/er/x.py", None, None, "write"),
        (BOB, "u/alice/x", None, None, None),                            # other user
        (ALICE, "u/alicex/y", None, None, None),                         # a prefix is not the owner
        (ALICE, "g/ops/x", None, None, "write"),                         # group member
        (BOB, "g/ops/x", None, None, None),                              # not a member
        (OPS, "g/ops/x", None, None, "write"),                           # the group identity itself
        (OPS, "u/alice/x", None, None, None),                            # ... owns no member's items
        (OPS_USER, "g/ops/x", None, None, None),                         # a user named ops is no member
        (ADMIN, "u/alice/x", None, None, "write"),                       # admin
        (ADMIN, "f/shared/x", None, None, "write"),
        (INBOX, "u/alice/x", None, None, None),                          # u/inbox: nothing
        (INBOX, "f/shared/x", None, SHARED, None),
        (INBOX, "g/ops/x", GRANTS, None, None),
        (NOBODY, "g/ops/x", None, None, None),
        (BOB, "f/shared/x", None, SHARED, "run"),                        # folder reader (user)
        (DAVE, "f/shared/x", None, SHARED, "run"),                       # folder reader (group)
        (CAROL, "f/shared/x", None, SHARED, "write"),                    # folder writer
        (ALICE, "f/shared/x", None, SHARED, None),                       # not in the folder
        (BOB, "f/shared/x", None, None, None),                           # folder unknown
        (OPS, "f/shared/x", None, OPS_READS, "run"),                     # group principal reads
        (BOB, "u/alice/x", GRANTS, None, "run"),                         # extra grant by user
        (DAVE, "u/alice/x", GRANTS, None, "read"),                       # extra grant by group
        (ALICE, "u/carol/x", GRANTS, None, None),                        # grants name others
        (BOB, "g/ops/x", Acl({"u/bob": "write"}), None, "write"),
        (DAVE, "u/x/y", Acl({"u/dave": "read", "g/dev": "write"}), None, "write"),  # the highest wins
        (DAVE, "u/x/y", Acl({"u/dave": "run", "g/dev": "read"}), None, "run"),
        (ALICE, "u/alice/x", Acl({"u/alice": "read"}), None, "write"),   # a grant never lowers
        (BOB, "f/shared/x", Acl({"u/bob": "write"}), SHARED, "write"),   # folder + grant: the higher
        (CAROL, "f/shared/x", Acl({"u/carol": "read"}), SHARED, "write"),
        (OPS, "u/alice/x", Acl({"g/ops": "read"}), None, "read"),
    ],
)
def test_level_and_can(principal: Principal, path: str, acl: Acl | None, folder: FolderAcl | None,
                       level: Level | None) -> None:
    """level_of gives the expected level, and can allows exactly the levels at or below it."""
    assert level_of(principal, path, acl, folder) == level
    for action in ("read", "run", "write"):
        assert can(principal, action, path, acl, folder) is (action in ALLOWED[level])


def test_require_names_what_was_refused() -> None:
    """require raises PermissionDenied with the principal, the action and the path."""
    require(BOB, "run", "u/alice/x", GRANTS)
    with pytest.raises(PermissionDenied, match=r"u/bob may not write u/alice/x"):
        require(BOB, "write", "u/alice/x", GRANTS)


@pytest.mark.parametrize(
    ("principal", "permissioned_as", "allowed"),
    [
        (ALICE, "u/alice", True),                  # self
        (ALICE, "g/ops", True),                    # a group one belongs to
        (ALICE, "g/dev", False),                   # another group
        (ALICE, "u/bob", False),                   # another user
        (ALICE, "u/ALICE", False),
        (ALICE, "U/alice", False),
        (ALICE, "g/ops ", False),
        (ALICE, "u/alice/x", False),               # malformed
        (ALICE, "alice", False),
        (ALICE, "", False),
        (ALICE, "u/", False),
        (ALICE, "x/alice", False),
        (OPS, "g/ops", True),                      # a job run as a group starts jobs as it
        (OPS, "u/alice", False),                   # ... never as a member
        (NOBODY, "g/", False),
        (NOBODY, "u/", False),
        (INBOX, "u/inbox", True),
        (INBOX, "g/ops", False),
        (ADMIN, "u/bob", True),                    # admins run as anyone
        (ADMIN, "g/dev", True),
        (ADMIN, "x/../anything", False),           # ... but only as an identity that can exist
        (ADMIN, "u/bob\n", False),
        (ALICE, "u/alice\n", False),
    ],
)
def test_may_run_as(principal: Principal, permissioned_as: str, allowed: bool) -> None:
    """A user runs as himself or his groups, admins as anyone, nobody as anything else."""
    assert may_run_as(principal, permissioned_as) is allowed


@pytest.mark.parametrize(
    ("check", "value", "valid"),
    [
        (check_item_path, "u/alice/x", True),
        (check_item_path, "g/ops/a/b", True),
        (check_item_path, "f/shared/job.py", True),
        (check_item_path, "u/alice/My_Script-2.v1", True),
        (check_item_path, "u/alice/../bob/x", False),            # traversal
        (check_item_path, "u/alice/..", False),
        (check_item_path, "u/alice/./x", False),
        (check_item_path, "u/alice/.hidden", False),
        (check_item_path, "f/../u/bob/x", False),
        (check_item_path, "u/Alice/x", False),                   # owners are lowercase
        (check_item_path, "u/alice", False),                     # no item name
        (check_item_path, "x/a/b", False),                       # unknown kind
        (check_item_path, "u/alice/", False),
        (check_item_path, "u/alice/x/", False),
        (check_item_path, "u//x", False),
        (check_item_path, "/u/alice/x", False),                  # absolute
        (check_item_path, "u\\alice\\x", False),                 # backslashes
        (check_item_path, "u/alice/a\\b", False),
        (check_item_path, "u/alice/" + "a" * 200, False),        # very long segment
        (check_item_path, "u/" + "a" * 65 + "/x", False),        # very long owner
        (check_item_path, "u/alice/%2e%2e", False),
        (check_item_path, "u/alice/a b", False),
        (check_item_path, "u/alice/é", False),
        (check_item_path, "", False),
        (check_item_path, "u/alice/x\n", False),                # '$' would allow a final newline
        (check_item_path, "u/alice\n/x", False),
        (check_identity, "u/alice", True),
        (check_identity, "g/ops", True),
        (check_identity, "u/inbox", True),
        (check_identity, "u/", False),
        (check_identity, "g/", False),
        (check_identity, "f/shared", False),                     # folders are not identities
        (check_identity, "u/alice/x", False),
        (check_identity, "U/alice", False),
        (check_identity, "u/Alice", False),
        (check_identity, "alice", False),
        (check_identity, "", False),
        (check_identity, "u/" + "a" * 65, False),
        (check_identity, "u/../admin", False),
        (check_identity, "u/alice\n", False),
        (check_name, "alice", True),
        (check_name, "a-b_9", True),
        (check_name, "-alice", False),
        (check_name, "Alice", False),
        (check_name, "al ice", False),
        (check_name, "", False),
        (check_name, "alice\n", False),
    ],
)
def test_names_paths_identities(check: Callable[[str], str], value: str, valid: bool) -> None:
    """Malformed names, identities and paths are refused with SpecError; good ones come back."""
    if valid:
        assert check(value) == value
    else:
        with pytest.raises(SpecError):
            check(value)


@pytest.mark.parametrize(
    ("principal", "path"),
    [
        (ALICE, "u/alice/../bob/x"),             # the owner segment must not carry a traversal
        (ADMIN, "u/alice/../../x"),              # not even for admins
        (ADMIN, "u"),
        (BOB, "u/alice"),
        (BOB, ""),
    ],
)
def test_decisions_refuse_malformed_paths(principal: Principal, path: str) -> None:
    """level_of and can refuse a malformed path instead of deciding on it."""
    with pytest.raises(SpecError):
        level_of(principal, path)
    with pytest.raises(SpecError):
        can(principal, "read", path)
