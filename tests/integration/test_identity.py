"""The identity store on a real Redis: users, groups, tokens, job tokens, grants and folders."""

from __future__ import annotations

import argparse
import hashlib
import io
from typing import Any, cast

import pytest
import redis

from auth.identity import BAD_LOGIN, IdentityStore
from auth.permissions import Acl, FolderAcl, Principal, can
from common.clock import now_ms
from common.errors import AuthError, GristmillError, NotFound, SpecError
from common.keys import Keys
from gristmill import cli_identity

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

HOUR_MS = 3_600_000


class FakeClock:
    """Epoch ms that only move when a test says so (starting now, so Redis expiries agree)."""

    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ids(redis_client: redis.Redis, keys: Keys, clock: FakeClock) -> IdentityStore:
    return IdentityStore(redis_client, keys, clock=clock)


def everything_in(client: redis.Redis) -> str:
    """Every key and value of our own test database, as one string (KEYS is fine here)."""
    parts: list[str] = []
    for key in client.keys("*"):
        parts.append(key.decode())
        kind = client.type(key).decode()
        if kind == "string":
            parts.append(client.get(key).decode())
        elif kind == "hash":
            parts.extend(f"{k.decode()}={v.decode()}" for k, v in client.hgetall(key).items())
        elif kind == "set":
            parts.extend(m.decode() for m in client.smembers(key))
        else:
            parts.append(repr(client.dump(key)))
    return "\n".join(parts)


def test_passwords_are_stored_as_argon2_hashes(ids: IdentityStore, redis_client: redis.Redis,
                                                keys: Keys) -> None:
    """The stored password is an argon2id hash; the right password verifies, others don't."""
    ids.create_user("alice", "correct horse battery")
    stored = redis_client.hget(keys.user("alice"), "password").decode()
    assert stored.startswith("$argon2id$")
    assert "correct horse battery" not in everything_in(redis_client)
    assert ids.verify_password("alice", "correct horse battery").name == "alice"
    for name, password in (("alice", "wrong horse battery"), ("nobody", "correct horse battery")):
        with pytest.raises(AuthError) as refused:
            ids.verify_password(name, password)
        assert str(refused.value) == BAD_LOGIN         # unknown user and bad password look alike


def test_token_only_users_have_no_password(ids: IdentityStore) -> None:
    """A user created without a password cannot log in with any password."""
    ids.create_user("bot")
    with pytest.raises(AuthError, match=BAD_LOGIN):
        ids.verify_password("bot", "")
    with pytest.raises(AuthError, match=BAD_LOGIN):
        ids.verify_password("bot", "not a password of anyone")


def test_user_creation_is_checked(ids: IdentityStore) -> None:
    """Bad or reserved names, short passwords and duplicates are refused."""
    ids.create_user("alice")
    with pytest.raises(GristmillError, match="already exists"):
        ids.create_user("alice", role="admin")
    assert ids.get_user("alice").is_admin is False
    for name in ("Alice", "a/b", "", "inbox"):
        with pytest.raises(SpecError):
            ids.create_user(name)
    with pytest.raises(SpecError, match="password"):
        ids.create_user("bob", "short")


def test_users_are_listed_got_and_deleted(ids: IdentityStore, clock: FakeClock) -> None:
    """Users come back with their flags, sorted; a deleted user is gone."""
    ids.create_user("zoe")
    ids.create_user("adam", role="admin")
    assert [(u.name, u.is_admin, u.created_at) for u in ids.list_users()] == [
        ("adam", True, clock.now), ("zoe", False, clock.now)]
    ids.delete_user("zoe")
    assert [u.name for u in ids.list_users()] == ["adam"]
    with pytest.raises(NotFound):
        ids.get_user("zoe")
    with pytest.raises(NotFound):
        ids.delete_user("zoe")


def test_groups_and_memberships(ids: IdentityStore) -> None:
    """Members are added and removed both ways; deleting a group or a user forgets the links."""
    for name in ("alice", "bob"):
        ids.create_user(name)
    ids.create_group("ops")
    ids.create_group("dev")
    with pytest.raises(GristmillError, match="already exists"):
        ids.create_group("ops")
    with pytest.raises(NotFound):
        ids.add_member("ops", "nobody")
    with pytest.raises(NotFound):
        ids.add_member("nogroup", "alice")
    ids.add_member("ops", "alice")
    ids.add_member("ops", "bob")
    ids.add_member("dev", "alice")
    assert ids.list_groups() == {"dev": ["alice"], "ops": ["alice", "bob"]}
    assert ids.groups_of("alice") == {"ops", "dev"}
    ids.remove_member("ops", "bob")
    assert ids.groups_of("bob") == frozenset()
    ids.delete_group("dev")
    assert ids.groups_of("alice") == {"ops"}
    ids.delete_user("alice")
    assert ids.list_groups() == {"ops": []}


def test_principal_for(ids: IdentityStore) -> None:
    """Users carry their groups and admin flag; groups are themselves; u/inbox has nothing."""
    ids.create_user("alice")
    ids.create_user("root", role="admin")
    ids.create_group("ops")
    ids.add_member("ops", "alice")
    assert ids.principal_for("u/alice") == Principal("alice", frozenset({"ops"}))
    assert ids.principal_for("u/root") == Principal("root", role="admin")
    assert ids.principal_for("g/ops") == Principal(None, frozenset({"ops"}))
    assert ids.principal_for("u/inbox") == Principal("inbox")
    for unknown in ("u/nobody", "g/nogroup"):
        with pytest.raises(NotFound):
            ids.principal_for(unknown)
    with pytest.raises(SpecError):
        ids.principal_for("u/../root")


def test_api_tokens_authenticate_list_and_revoke(ids: IdentityStore) -> None:
    """A token authenticates as its owner until revoked; only the owner's id revokes it."""
    ids.create_user("alice")
    ids.create_user("bob")
    ids.create_group("ops")
    ids.add_member("ops", "alice")
    token, info = ids.create_token("alice", label="laptop")
    assert token.startswith("gm_") and len(token) > 40
    assert info.token_id == hashlib.sha256(token.encode()).hexdigest()[:12]
    context = ids.authenticate(token)
    assert context.principal == Principal("alice", frozenset({"ops"}))
    assert (context.token.kind, context.token.owner, context.token.label) == ("api", "alice", "laptop")
    [listed] = ids.list_tokens("alice")
    assert (listed.token_id, listed.label, listed.last_used) == (info.token_id, "laptop", info.created_at)
    assert ids.list_tokens("bob") == []
    with pytest.raises(NotFound):
        ids.list_tokens("nobody")
    with pytest.raises(NotFound):
        ids.revoke_token("bob", info.token_id)                  # not bob's
    with pytest.raises(NotFound):
        ids.revoke_token("alice", info.token_id[:6])            # a shorter prefix is not an id
    ids.revoke_token("alice", info.token_id)
    with pytest.raises(AuthError, match="unknown or revoked"):
        ids.authenticate(token)
    with pytest.raises(NotFound):
        ids.revoke_token("alice", info.token_id)
    assert ids.list_tokens("alice") == []


def test_tokens_are_stored_only_as_hashes(ids: IdentityStore, redis_client: redis.Redis,
                                          keys: Keys, clock: FakeClock) -> None:
    """Neither an API token nor a job token appears anywhere in Redis, only their SHA-256."""
    ids.create_user("alice")
    api, _ = ids.create_token("alice")
    job = ids.mint_job_token("job-1", "u/alice", expires_at=clock.now + HOUR_MS)
    dump = everything_in(redis_client)
    for token in (api, job):
        assert token not in dump
        assert token.removeprefix("gm_") not in dump
        assert redis_client.exists(keys.token(hashlib.sha256(token.encode()).hexdigest()))


def test_forged_and_malformed_tokens_are_refused(ids: IdentityStore) -> None:
    """Made-up, truncated, extended, oversized and empty tokens never authenticate."""
    ids.create_user("alice")
    token, info = ids.create_token("alice")
    for forged in ("", "gm_", token[:-1], token + "x", token.upper(), info.token_id,
                   "gm_" + "a" * 10_000, token.removeprefix("gm_")):
        with pytest.raises(AuthError):
            ids.authenticate(forged)


def test_tokens_expire_by_the_clock(ids: IdentityStore, clock: FakeClock) -> None:
    """An API token stops working at its expiry; an expiry in the past is refused."""
    ids.create_user("alice")
    token, info = ids.create_token("alice", expires_at=clock.now + 1000)
    assert info.expires_at == clock.now + 1000
    clock.now += 999
    ids.authenticate(token)
    clock.now += 1
    with pytest.raises(AuthError, match="expired"):
        ids.authenticate(token)
    with pytest.raises(SpecError, match="past"):
        ids.create_token("alice", expires_at=clock.now)


def test_last_used_is_written_at_most_once_a_minute(ids: IdentityStore, clock: FakeClock) -> None:
    """Uses within a minute of the last recorded one do not write again."""
    ids.create_user("alice")
    token, _ = ids.create_token("alice")
    start = clock.now
    ids.authenticate(token)
    clock.now += 59_999
    ids.authenticate(token)
    assert ids.list_tokens("alice")[0].last_used == start
    clock.now += 1
    ids.authenticate(token)
    assert ids.list_tokens("alice")[0].last_used == start + 60_000


def test_a_deleted_users_tokens_stop_working(ids: IdentityStore, redis_client: redis.Redis,
                                            keys: Keys, clock: FakeClock) -> None:
    """Deleting a user revokes its tokens; recreating the name does not revive any."""
    ids.create_user("alice")
    token, _ = ids.create_token("alice")
    job = ids.mint_job_token("job-1", "u/alice", expires_at=clock.now + HOUR_MS)
    ids.delete_user("alice")
    assert not redis_client.exists(keys.token(hashlib.sha256(token.encode()).hexdigest()))
    clock.now += 1
    ids.create_user("alice", role="admin")
    for stale in (token, job):
        with pytest.raises(AuthError):
            ids.authenticate(stale)


def test_disabled_users_cannot_authenticate(ids: IdentityStore, clock: FakeClock) -> None:
    """A disabled user's tokens, password and jobs' tokens are refused until enabled again."""
    ids.create_user("alice", "correct horse battery")
    token, _ = ids.create_token("alice")
    job = ids.mint_job_token("job-1", "u/alice", expires_at=clock.now + HOUR_MS)
    ids.set_disabled("alice", True)
    assert ids.get_user("alice").disabled
    for bearer in (token, job):
        with pytest.raises(AuthError, match="disabled"):
            ids.authenticate(bearer)
    with pytest.raises(AuthError, match="disabled"):
        ids.verify_password("alice", "correct horse battery")
    ids.set_disabled("alice", False)
    assert ids.authenticate(token).principal.user == "alice"


def test_job_tokens_act_as_permissioned_as_until_revoked(ids: IdentityStore,
                                                         clock: FakeClock) -> None:
    """A WM_TOKEN acts as the job's identity, is no API token, and dies with the job."""
    ids.create_user("alice")
    ids.create_group("ops")
    ids.add_member("ops", "alice")
    token = ids.mint_job_token("job-1", "g/ops", expires_at=clock.now + HOUR_MS)
    context = ids.authenticate(token)
    assert context.principal == Principal(None, frozenset({"ops"}))
    assert (context.token.kind, context.token.job_id, context.token.permissioned_as) == (
        "job", "job-1", "g/ops")
    assert ids.list_tokens("alice") == []
    ids.revoke_job_token("job-1")
    with pytest.raises(AuthError):
        ids.authenticate(token)
    ids.revoke_job_token("job-1")                               # idempotent
    ids.revoke_job_token("never-started")


def test_job_tokens_expire_and_are_replaced_on_retry(ids: IdentityStore, redis_client: redis.Redis,
                                                     keys: Keys, clock: FakeClock) -> None:
    """A job token dies at its expiry (also in Redis); minting again kills the previous one."""
    ids.create_user("alice")
    first = ids.mint_job_token("job-1", "u/alice", expires_at=clock.now + HOUR_MS)
    assert 0 < redis_client.pttl(keys.job_token("job-1")) <= HOUR_MS
    second = ids.mint_job_token("job-1", "u/alice", expires_at=clock.now + HOUR_MS)
    with pytest.raises(AuthError):
        ids.authenticate(first)
    assert ids.authenticate(second).principal.user == "alice"
    clock.now += HOUR_MS
    with pytest.raises(AuthError, match="expired"):
        ids.authenticate(second)
    with pytest.raises(SpecError):
        ids.mint_job_token("job-2", "u/alice", expires_at=clock.now)
    with pytest.raises(SpecError):
        ids.mint_job_token("job-2", "alice", expires_at=clock.now + HOUR_MS)


def test_job_tokens_of_the_inbox_and_of_missing_identities(ids: IdentityStore,
                                                           clock: FakeClock) -> None:
    """u/inbox authenticates with no rights; a job token of a deleted group is refused."""
    inbox = ids.mint_job_token("job-1", "u/inbox", expires_at=clock.now + HOUR_MS)
    assert ids.authenticate(inbox).principal == Principal("inbox")
    ids.create_group("ops")
    token = ids.mint_job_token("job-2", "g/ops", expires_at=clock.now + HOUR_MS)
    ids.delete_group("ops")
    with pytest.raises(AuthError, match="no longer exists"):
        ids.authenticate(token)


def test_ensure_admin_is_idempotent(ids: IdentityStore) -> None:
    """The first call makes the admin and its bootstrap token; later calls do nothing."""
    token = ids.ensure_admin()
    assert token is not None
    assert ids.authenticate(token).principal == Principal("admin", role="admin")
    assert ids.ensure_admin() is None
    assert [t.label for t in ids.list_tokens("admin")] == ["bootstrap"]


def test_grants_and_folders(ids: IdentityStore) -> None:
    """access() returns the path's grants and its folder's members, as permissions.can needs."""
    for name in ("alice", "bob", "carol"):
        ids.create_user(name)
    ids.create_group("dev")
    ids.add_member("dev", "carol")
    ids.set_grant("u/alice/db", "u/bob", "read")
    ids.set_grant("u/alice/db", "g/dev", "run")
    assert ids.get_acl("u/alice/db") == Acl({"u/bob": "read", "g/dev": "run"})
    assert ids.access("u/alice/db") == (Acl({"u/bob": "read", "g/dev": "run"}), None)
    ids.set_grant("u/alice/db", "u/bob", None)
    assert ids.get_acl("u/alice/db") == Acl({"g/dev": "run"})

    ids.create_folder("shared", owner="u/alice")
    with pytest.raises(GristmillError, match="already exists"):
        ids.create_folder("shared", owner="u/bob")
    ids.set_folder_member("shared", "u/bob", "reader")
    ids.set_folder_member("shared", "g/dev", "writer")
    ids.set_folder_member("shared", "g/dev", "reader")          # a new role replaces the old
    assert ids.get_folder("shared") == FolderAcl(frozenset({"u/bob", "g/dev"}), frozenset({"u/alice"}))
    assert ids.get_folder("nothing") is None
    ids.set_grant("f/shared/api", "u/carol", "write")
    acl, folder = ids.access("f/shared/api")
    assert acl == Acl({"u/carol": "write"}) and folder == ids.get_folder("shared")
    bob, carol = ids.principal_for("u/bob"), ids.principal_for("u/carol")
    assert can(bob, "run", "f/shared/api", acl, folder)
    assert not can(bob, "write", "f/shared/api", acl, folder)
    assert can(carol, "write", "f/shared/api", acl, folder)
    ids.set_folder_member("shared", "u/bob", None)
    assert not can(bob, "read", "f/shared/api", *ids.access("f/shared/api"))


def test_grants_and_folder_members_are_checked(ids: IdentityStore) -> None:
    """Bad paths, identities, levels and roles, unknown identities and u/inbox are refused."""
    ids.create_user("alice")
    ids.create_folder("shared", owner="u/alice")
    refused: list[tuple[Any, type[Exception]]] = [
        (lambda: ids.set_grant("u/alice/../bob/x", "u/alice", "read"), SpecError),
        (lambda: ids.set_grant("u/alice/x", "alice", "read"), SpecError),
        (lambda: ids.set_grant("u/alice/x", "u/alice", cast(Any, "admin")), SpecError),
        (lambda: ids.set_grant("u/alice/x", "u/nobody", "read"), NotFound),
        (lambda: ids.set_grant("u/alice/x", "u/inbox", "read"), SpecError),
        (lambda: ids.access("u/alice"), SpecError),
        (lambda: ids.get_acl("/etc/passwd"), SpecError),
        (lambda: ids.create_folder("Shared", owner="u/alice"), SpecError),
        (lambda: ids.create_folder("other", owner="u/nobody"), NotFound),
        (lambda: ids.set_folder_member("nothing", "u/alice", "reader"), NotFound),
        (lambda: ids.set_folder_member("shared", "u/alice", cast(Any, "owner")), SpecError),
        (lambda: ids.set_folder_member("shared", "g/nogroup", "writer"), NotFound),
        (lambda: ids.set_folder_member("shared", "u/inbox", "reader"), SpecError),
    ]
    for call, error in refused:
        with pytest.raises(error):
            call()


def test_cli_commands(ids: IdentityStore, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """The user, group and token commands work end to end and print the token once."""
    monkeypatch.setattr(cli_identity, "_store", lambda: ids)
    parser = argparse.ArgumentParser()
    cli_identity.add_identity_commands(parser.add_subparsers(dest="command", required=True))

    errors: list[str] = []

    def run(*argv: str) -> str:
        ns = parser.parse_args(argv)
        assert ns.func(ns) == 0
        captured = capsys.readouterr()
        errors.append(captured.err)
        return captured.out

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert "created developer alice" in run("user", "create", "alice", "--password-stdin")
    ids.verify_password("alice", "correct horse battery")
    assert "token-only" in run("user", "create", "root", "--admin")
    assert "created operator olga" in run("user", "create", "olga", "--role", "operator")
    assert ids.get_user("olga").role == "operator" and ids.get_user("root").role == "admin"
    run("group", "create", "ops")
    run("group", "add", "ops", "alice")
    assert run("group", "list").split() == ["ops", "alice"]
    assert "groups=ops" in run("user", "list")
    token = run("token", "create", "--user", "alice", "--label", "ci", "--expires-in", "30d").strip()
    assert "not shown again" in errors[-1]
    assert ids.authenticate(token).principal.user == "alice"
    [line] = run("token", "list", "--user", "alice").splitlines()
    assert token not in line and "ci" in line
    run("token", "revoke", "--user", "alice", line.split()[0])
    with pytest.raises(AuthError):
        ids.authenticate(token)
    run("group", "remove", "ops", "alice")
    run("user", "delete", "alice")
    assert "alice" not in run("user", "list")
    with pytest.raises(NotFound):
        run("token", "list", "--user", "alice")


def test_a_recreated_name_inherits_no_grants(redis_client: redis.Redis, keys: Keys) -> None:
    """Deleting a user or group removes its grants and folder roles: a new namesake gets nothing."""
    store = IdentityStore(redis_client, keys)
    store.create_user("alice")
    store.create_user("mallory")
    store.create_group("ops")
    store.set_grant("u/alice/report", "u/mallory", "write")
    store.set_grant("u/alice/report", "g/ops", "read")
    store.create_folder("shared", owner="u/alice")
    store.set_folder_member("shared", "u/mallory", "reader")
    store.delete_user("mallory")
    store.delete_group("ops")
    store.create_user("mallory")
    store.create_group("ops")
    _, folder = store.access("f/shared/x")
    assert store.get_acl("u/alice/report").extra == {}
    assert folder is not None and "u/mallory" not in folder.readers
    assert folder.writers == frozenset({"u/alice"})
