"""Variables, secrets and resources against a real Redis: rights, sealing, redaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from auth.permissions import Acl, FolderAcl, Level, Principal
from common.errors import ConfigError, NotFound, PermissionDenied, SpecError
from common.keys import Keys
from vault.crypto import DecryptionError, SecretBox
from vault.redaction import redact, redaction_values
from vault.store import Vault

pytestmark = pytest.mark.cluster  # also on a Redis Cluster (tests/conftest.py)

NOW = 1_700_000_000_000
SECRET = "s3cr3t-Pa55word-\u00e9\u2713"
ALICE = Principal("alice")
BOB = Principal("bob")
CAROL = Principal("carol", frozenset({"ops"}))
ADMIN = Principal("root", role="admin")

# Extra grants (path -> identity -> level) and folders (name -> readers, writers).
GRANTS: dict[str, dict[str, Level]] = {
    "u/alice/shared": {"u/bob": "read"},
    "u/alice/handoff": {"u/bob": "write"},
}
FOLDERS: dict[str, FolderAcl] = {
    "team": FolderAcl(readers=frozenset({"u/bob"}), writers=frozenset({"g/ops"})),
}


def access(path: str) -> tuple[Acl, FolderAcl | None]:
    """The access data for a path, from the plain dicts above."""
    kind, name = path.split("/")[:2]
    return Acl(GRANTS.get(path, {})), FOLDERS.get(name) if kind == "f" else None


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(bytes(range(32)))


@pytest.fixture
def vault(redis_client: redis.Redis, keys: Keys, box: SecretBox) -> Vault:
    return Vault(redis_client, keys, box, access=access, clock=lambda: NOW)


def every_stored_byte(client: redis.Redis) -> Iterator[bytes]:
    """Every key name and every value, field and member on our own test server."""
    for key in client.scan_iter(count=1000):
        yield key
        kind = client.type(key)
        if kind == b"string":
            yield client.get(key)
        elif kind == b"hash":
            for field, value in client.hgetall(key).items():
                yield field
                yield value
        elif kind in (b"set", b"list", b"zset"):
            yield from (client.smembers(key) if kind == b"set" else client.lrange(key, 0, -1)
                        if kind == b"list" else client.zrange(key, 0, -1))
        else:
            pytest.fail(f"unexpected key type {kind!r} for {key!r}")


# -- rights ----------------------------------------------------------------------------------


def test_owner_sets_and_gets(vault: Vault) -> None:
    """A user writes and reads back variables under u/<self>, plain and secret."""
    vault.set_variable(ALICE, "u/alice/plain", "hello", description="a greeting")
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True)
    assert vault.get_variable(ALICE, "u/alice/plain") == "hello"
    assert vault.get_variable(ALICE, "u/alice/pw") == SECRET
    meta = vault.get_variable_meta(ALICE, "u/alice/plain")
    assert (meta.value, meta.description, meta.created_at, meta.updated_by) == (
        "hello", "a greeting", NOW, "u/alice")


def test_other_user_cannot_read_or_write(vault: Vault) -> None:
    """Bob may neither read, list, overwrite nor delete alice's variable; errors carry no value."""
    vault.set_variable(ALICE, "u/alice/x", SECRET, is_secret=True)
    for call in (lambda: vault.get_variable(BOB, "u/alice/x"),
                 lambda: vault.get_variable_meta(BOB, "u/alice/x"),
                 lambda: vault.set_variable(BOB, "u/alice/x", "pwned"),
                 lambda: vault.delete_variable(BOB, "u/alice/x")):
        with pytest.raises(PermissionDenied, match=r"u/bob may not \w+ u/alice/x") as info:
            call()
        assert SECRET not in str(info.value)
    assert vault.list_variables(BOB) == []
    assert vault.get_variable(ALICE, "u/alice/x") == SECRET


def test_unreadable_missing_item_is_refused_not_found(vault: Vault) -> None:
    """For a path one may not read, a missing item looks the same as a present one."""
    with pytest.raises(PermissionDenied):
        vault.get_variable(BOB, "u/alice/nothing")
    with pytest.raises(NotFound, match="no variable at u/alice/nothing"):
        vault.get_variable(ALICE, "u/alice/nothing")


def test_group_member_reads_group_variable(vault: Vault) -> None:
    """Members of ops read and write g/ops/...; others do not."""
    vault.set_variable(CAROL, "g/ops/db_pw", SECRET, is_secret=True)
    assert vault.get_variable(Principal(None, frozenset({"ops"})), "g/ops/db_pw") == SECRET
    with pytest.raises(PermissionDenied):
        vault.get_variable(ALICE, "g/ops/db_pw")


def test_grants_let_bob_read_or_write(vault: Vault) -> None:
    """A read grant lets bob read but not write; a write grant lets him update."""
    vault.set_variable(ALICE, "u/alice/shared", SECRET, is_secret=True)
    vault.set_variable(ALICE, "u/alice/handoff", "v1")
    assert vault.get_variable(BOB, "u/alice/shared") == SECRET
    with pytest.raises(PermissionDenied, match="u/bob may not write u/alice/shared"):
        vault.set_variable(BOB, "u/alice/shared", "changed")
    vault.set_variable(BOB, "u/alice/handoff", "v2")
    meta = vault.get_variable_meta(ALICE, "u/alice/handoff")
    assert (meta.value, meta.updated_by) == ("v2", "u/bob")


def test_folder_readers_and_writers(vault: Vault) -> None:
    """Folder writers create items there; folder readers read them; others neither."""
    vault.set_variable(CAROL, "f/team/url", "https://example.test")
    assert vault.get_variable(BOB, "f/team/url") == "https://example.test"
    with pytest.raises(PermissionDenied):
        vault.set_variable(BOB, "f/team/url", "x")
    with pytest.raises(PermissionDenied):
        vault.get_variable(ALICE, "f/team/url")


def test_admin_reads_everything(vault: Vault) -> None:
    """An admin reads any variable."""
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True)
    assert vault.get_variable(ADMIN, "u/alice/pw") == SECRET


@pytest.mark.parametrize(
    "path", ["u/alice", "u/alice/../bob/x", "x/alice/y", "u/Alice/x", "u/alice/", "/u/alice/x",
             "u/alice/a b", "u/alice/.hidden"],
)
def test_bad_paths_refused(vault: Vault, path: str) -> None:
    """Paths that are not u/, g/ or f/ items, or that try to traverse, are SpecErrors."""
    with pytest.raises(SpecError, match="bad path"):
        vault.set_variable(ADMIN, path, "x")
    with pytest.raises(SpecError, match="bad path"):
        vault.get_variable(ADMIN, path)
    with pytest.raises(SpecError, match="bad path"):
        vault.set_resource(ADMIN, path, "postgresql", {})


# -- secrets at rest -------------------------------------------------------------------------


def test_secret_plaintext_is_nowhere_in_redis(vault: Vault, redis_client: redis.Redis,
                                              keys: Keys) -> None:
    """After writing, reading, listing and redact-recording a secret, no byte of Redis holds it."""
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True, description="db password")
    vault.get_variable(ALICE, "u/alice/pw", redact_into=keys.group("default").redact("job-1"))
    vault.list_variables(ALICE)
    vault.get_variable_meta(ALICE, "u/alice/pw")
    for needle in (SECRET.encode(), b"s3cr3t", b"Pa55word"):
        assert not any(needle in blob for blob in every_stored_byte(redis_client))
    assert redis_client.hget(keys.variable("u/alice/pw"), "value").startswith(b"v1:")


def test_sealed_value_moved_to_another_path_does_not_open(vault: Vault, redis_client: redis.Redis,
                                                          keys: Keys) -> None:
    """Copying alice's sealed value into a variable bob owns does not reveal it to bob."""
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True)
    vault.set_variable(BOB, "u/bob/pw", "placeholder", is_secret=True)
    sealed = redis_client.hget(keys.variable("u/alice/pw"), "value")
    redis_client.hset(keys.variable("u/bob/pw"), "value", sealed)
    with pytest.raises(DecryptionError, match="does not decrypt") as info:
        vault.get_variable(BOB, "u/bob/pw")
    assert SECRET not in str(info.value)


def test_list_and_meta_carry_no_secret_value(vault: Vault) -> None:
    """List views and metadata give plain values but never a secret's, sealed or not."""
    vault.set_variable(ALICE, "u/alice/b_plain", "visible")
    vault.set_variable(ALICE, "u/alice/a_pw", SECRET, is_secret=True)
    vault.set_variable(BOB, "u/bob/other", "bob's")
    listed = vault.list_variables(ALICE)
    assert [(v.path, v.is_secret, v.value) for v in listed] == [
        ("u/alice/a_pw", True, None), ("u/alice/b_plain", False, "visible")]
    assert vault.get_variable_meta(ALICE, "u/alice/a_pw").value is None
    assert SECRET not in repr(listed) and "v1:" not in repr(listed)
    assert {v.path for v in vault.list_variables(ADMIN)} == {
        "u/alice/a_pw", "u/alice/b_plain", "u/bob/other"}


def test_update_keeps_secrecy_and_created_at(redis_client: redis.Redis, keys: Keys,
                                             box: SecretBox) -> None:
    """Updating a secret without repeating is_secret keeps it sealed; created_at is kept."""
    early = Vault(redis_client, keys, box, access=access, clock=lambda: NOW)
    late = Vault(redis_client, keys, box, access=access, clock=lambda: NOW + 5)
    early.set_variable(ALICE, "u/alice/pw", "old", is_secret=True, description="kept")
    late.set_variable(ALICE, "u/alice/pw", "new-value")
    meta = late.get_variable_meta(ALICE, "u/alice/pw")
    assert (meta.is_secret, meta.value, meta.description) == (True, None, "kept")
    assert (meta.created_at, meta.updated_at) == (NOW, NOW + 5)
    assert late.get_variable(ALICE, "u/alice/pw") == "new-value"
    assert b"new-value" not in redis_client.hget(keys.variable("u/alice/pw"), "value")
    late.set_variable(ALICE, "u/alice/pw", "now plain", is_secret=False)
    assert late.get_variable_meta(ALICE, "u/alice/pw").value == "now plain"


def test_secrets_need_a_key(redis_client: redis.Redis, keys: Keys, box: SecretBox) -> None:
    """Without a configured box, writing or reading a secret is a ConfigError; plain ones work."""
    Vault(redis_client, keys, box, access=access).set_variable(
        ALICE, "u/alice/pw", SECRET, is_secret=True)
    keyless = Vault(redis_client, keys, None, access=access)
    with pytest.raises(ConfigError, match="set GRISTMILL_SECRET_KEY"):
        keyless.set_variable(ALICE, "u/alice/new", "x", is_secret=True)
    with pytest.raises(ConfigError, match="set GRISTMILL_SECRET_KEY"):
        keyless.get_variable(ALICE, "u/alice/pw")
    keyless.set_variable(ALICE, "u/alice/plain", "fine")
    assert keyless.get_variable(ALICE, "u/alice/plain") == "fine"
    assert keyless.get_variable_meta(ALICE, "u/alice/pw").is_secret


def test_delete_variable(vault: Vault, redis_client: redis.Redis, keys: Keys) -> None:
    """Deleting removes the item and its index entry; a second delete is NotFound."""
    vault.set_variable(ALICE, "u/alice/x", "1")
    vault.delete_variable(ALICE, "u/alice/x")
    assert not redis_client.sismember(keys.item_index("variable"), "u/alice/x")
    assert vault.list_variables(ALICE) == []
    with pytest.raises(NotFound):
        vault.delete_variable(ALICE, "u/alice/x")


def test_value_limits(vault: Vault) -> None:
    """Oversized values, non-strings and long descriptions are refused by name."""
    with pytest.raises(SpecError, match="limit"):
        vault.set_variable(ALICE, "u/alice/big", "x" * (64 * 1024 + 1))
    with pytest.raises(SpecError, match="must be a string"):
        vault.set_variable(ALICE, "u/alice/n", 5)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="description"):
        vault.set_variable(ALICE, "u/alice/d", "x", description="d" * 1001)


# -- redaction -------------------------------------------------------------------------------


def test_redact_into_fills_the_set(vault: Vault, redis_client: redis.Redis, keys: Keys,
                                   box: SecretBox) -> None:
    """Reading secrets for a job records them; redaction_values recovers the plaintexts."""
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True)
    vault.set_variable(ALICE, "u/alice/token", "tok-123456", is_secret=True)
    vault.set_variable(ALICE, "u/alice/plain", "not secret")
    redact_key = keys.group("default").redact("job-1")
    for path in ("u/alice/pw", "u/alice/token", "u/alice/plain", "u/alice/pw"):
        vault.get_variable(ALICE, path, redact_into=redact_key)
    members = redis_client.smembers(redact_key)
    assert len(members) == 2
    assert 0 < redis_client.ttl(redact_key) <= 86_400
    values = redaction_values(box, members)
    assert {SECRET, "tok-123456"} <= set(values)
    line = f"connecting with {SECRET} and tok-123456, not secret"
    assert redact(line, values) == "connecting with [redacted] and [redacted], not secret"


def test_redact_into_ignored_for_plain_and_refused_reads(vault: Vault, redis_client: redis.Redis,
                                                         keys: Keys) -> None:
    """Plain variables and refused reads record nothing."""
    vault.set_variable(ALICE, "u/alice/plain", "x")
    vault.set_variable(ALICE, "u/alice/pw", SECRET, is_secret=True)
    redact_key = keys.group("default").redact("job-2")
    vault.get_variable(ALICE, "u/alice/plain", redact_into=redact_key)
    with pytest.raises(PermissionDenied):
        vault.get_variable(BOB, "u/alice/pw", redact_into=redact_key)
    assert not redis_client.exists(redact_key)


# -- resources -------------------------------------------------------------------------------


def test_resource_roundtrip(vault: Vault) -> None:
    """A resource's JSON object comes back equal, with its type and description."""
    value = {"host": "db.internal", "port": 5432, "ssl": True, "opts": {"x": [1, 2.5, None]},
             "name": "caf\u00e9"}
    vault.set_resource(ALICE, "u/alice/db", "postgresql", value, description="main db")
    got = vault.get_resource(ALICE, "u/alice/db")
    assert (got.path, got.resource_type, got.value, got.description) == (
        "u/alice/db", "postgresql", value, "main db")
    assert got.created_at == NOW
    assert [r.path for r in vault.list_resources(ALICE)] == ["u/alice/db"]
    assert vault.list_resources(BOB) == []


def test_resource_rights(vault: Vault) -> None:
    """Resources follow the same rights as variables."""
    vault.set_resource(ALICE, "u/alice/shared", "http", {"url": "https://x.test"})
    assert vault.get_resource(BOB, "u/alice/shared").value == {"url": "https://x.test"}
    with pytest.raises(PermissionDenied):
        vault.set_resource(BOB, "u/alice/shared", "http", {})
    with pytest.raises(PermissionDenied):
        vault.delete_resource(BOB, "u/alice/shared")
    vault.delete_resource(ALICE, "u/alice/shared")
    with pytest.raises(NotFound, match="no resource at u/alice/shared"):
        vault.get_resource(ALICE, "u/alice/shared")


@pytest.mark.parametrize(
    ("resource_type", "value", "match"),
    [("Bad Type", {}, "resource type"), ("http", [1, 2], "JSON object"),
     ("http", {"x": float("nan")}, "not JSON"), ("http", {"x": object()}, "not JSON"),
     ("http", {"x": "y" * 70_000}, "limit")],
)
def test_resource_values_checked(vault: Vault, resource_type: str, value: object, match: str) -> None:
    """Bad types, non-objects, non-JSON and oversized values are refused with a reason."""
    with pytest.raises(SpecError, match=match):
        vault.set_resource(ALICE, "u/alice/r", resource_type, value)  # type: ignore[arg-type]
