"""Sealing secrets with AES-GCM, the key setting and key file, and log redaction."""

from __future__ import annotations

import base64
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from common.errors import ConfigError, GristmillError
from vault.crypto import KEY_HINT, DecryptionError, SecretBox, generate_key, load_or_create_key
from vault.redaction import REDACTED, redact, redaction_values, secret_fragments

KEY = bytes(range(32))
R = REDACTED


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(KEY)


def test_roundtrip(box: SecretBox) -> None:
    """What is sealed opens again under the same context, unicode and empty text included."""
    for text in ["hunter2", "", "päss wörd ✓ 🔑", "line1\nline2", "x" * 10_000]:
        assert box.open(box.seal(text, context="u/alice/pw"), context="u/alice/pw") == text


def test_sealed_text_is_versioned_and_hides_plaintext(box: SecretBox) -> None:
    """The sealed form starts with v1: and does not contain the plaintext."""
    sealed = box.seal("hunter2-hunter2", context="u/alice/pw")
    assert sealed.startswith("v1:")
    assert "hunter2" not in sealed
    assert "hunter2" not in base64.urlsafe_b64decode(sealed[3:]).decode("latin-1")


def test_nonces_are_unique(box: SecretBox) -> None:
    """Sealing the same value twice gives different ciphertexts (fresh nonce each time)."""
    sealed = {box.seal("same", context="u/a/x") for _ in range(200)}
    nonces = {base64.urlsafe_b64decode(s[3:])[:12] for s in sealed}
    assert len(sealed) == len(nonces) == 200


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_tampering_is_detected(box: SecretBox, position: int) -> None:
    """Flipping any byte (nonce, ciphertext or tag) makes opening fail."""
    sealed = box.seal("the secret", context="u/a/x")
    raw = bytearray(base64.urlsafe_b64decode(sealed[3:]))
    raw[position] ^= 0x01
    with pytest.raises(DecryptionError):
        box.open("v1:" + base64.urlsafe_b64encode(bytes(raw)).decode(), context="u/a/x")


@pytest.mark.parametrize("sealed", ["", "hunter2", "v2:AAAA", "v1:", "v1:AAAA", "v1:!!!!"])
def test_malformed_sealed_values(box: SecretBox, sealed: str) -> None:
    """Text that is not a v1 sealed value is refused with DecryptionError, a GristmillError."""
    with pytest.raises(DecryptionError) as info:
        box.open(sealed, context="u/a/x")
    assert isinstance(info.value, GristmillError)


def test_wrong_key_fails(box: SecretBox) -> None:
    """A value sealed under one key does not open under another, and the error says why."""
    sealed = box.seal("zq-hunter2-zq", context="u/a/x")
    with pytest.raises(DecryptionError, match="GRISTMILL_SECRET_KEY") as info:
        SecretBox(bytes(32)).open(sealed, context="u/a/x")
    assert "hunter2" not in str(info.value)


def test_wrong_context_fails(box: SecretBox) -> None:
    """A ciphertext copied to another path does not open there."""
    sealed = box.seal("the secret", context="u/alice/pw")
    with pytest.raises(DecryptionError, match="u/bob/pw"):
        box.open(sealed, context="u/bob/pw")


def test_generated_keys_load() -> None:
    """generate_key gives distinct 32-byte keys that from_setting accepts."""
    a, b = generate_key(), generate_key()
    assert a != b
    assert len(base64.urlsafe_b64decode(a)) == 32
    box = SecretBox.from_setting(a)
    assert box.open(box.seal("x", context="c"), context="c") == "x"


def test_key_settings_in_every_base64_flavour() -> None:
    """Urlsafe, standard, unpadded and whitespace-wrapped forms of one key are the same key."""
    key = bytes([0xFB, 0xFF] * 16)  # encodes with + / - _ characters
    forms = [base64.urlsafe_b64encode(key).decode(), base64.b64encode(key).decode(),
             base64.urlsafe_b64encode(key).decode().rstrip("="), f"  {base64.b64encode(key).decode()}\n"]
    sealed = SecretBox(key).seal("v", context="c")
    for form in forms:
        assert SecretBox.from_setting(form).open(sealed, context="c") == "v"


@pytest.mark.parametrize(
    "text",
    ["", "   ", "not base64 at all!", base64.b64encode(bytes(16)).decode(),
     base64.b64encode(bytes(33)).decode(), "A"],
)
def test_bad_key_settings(text: str) -> None:
    """Empty, non-base64 and wrong-length keys are ConfigErrors that say how to make one."""
    with pytest.raises(ConfigError) as info:
        SecretBox.from_setting(text)
    assert KEY_HINT in str(info.value)
    assert "secrets.token_bytes(32)" in str(info.value)


def test_repr_hides_the_key(box: SecretBox) -> None:
    """repr() of a box never shows key material."""
    assert "hidden" in repr(box)


def test_key_file_created_0600_and_reused(tmp_path: Path) -> None:
    """load_or_create_key creates a 0600 file once and returns the same key afterwards."""
    path = tmp_path / ".gristmill" / "secret-key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    SecretBox.from_setting(key)
    assert [p.name for p in path.parent.iterdir()] == ["secret-key"]


def test_key_file_concurrent_starts_agree(tmp_path: Path) -> None:
    """Several starts creating the key file at once all end up with one key."""
    path = tmp_path / "secret-key"
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: load_or_create_key(path), range(16)))
    assert keys == {path.read_text().strip()}
    assert [p.name for p in tmp_path.iterdir()] == ["secret-key"]


def test_key_file_with_garbage_is_refused(tmp_path: Path) -> None:
    """A key file that does not hold a key is a ConfigError naming the file."""
    path = tmp_path / "secret-key"
    path.write_text("garbage\n")
    with pytest.raises(ConfigError, match="secret-key"):
        load_or_create_key(path)


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("no secrets here", ["hunter2"], "no secrets here"),
        ("pw=hunter2", ["hunter2"], f"pw={R}"),
        ("hunter2 and hunter2", ["hunter2"], f"{R} and {R}"),
        ("hunter2hunter2", ["hunter2"], R),                    # adjacent runs: one marker
        ("abcdefgh", ["abcdef", "defgh"], R),                  # overlapping: no tail left
        ("xabcdefghx", ["defgh", "abcdef"], f"x{R}x"),         # order of secrets is irrelevant
        ("aaaa", ["aa"], R),                                   # overlapping occurrences of one
        ("token tok", ["token", "tok"], f"{R} {R}"),           # one secret inside another
        ("say redacted", ["redacted"], f"say {R}"),            # the marker makes no new match
        ("line1\nsecret\nline3", ["secret"], f"line1\n{R}\nline3"),
        ("a\nmulti\nline", ["multi\nline"], f"a\n{R}"),        # a secret spanning lines
        ("clé: päss🔑wörd!", ["päss🔑wörd"], f"clé: {R}!"),
        ("keep", ["", "zzz"], "keep"),                         # empty values are ignored
        ("a-b-c", ["-"], f"a{R}b{R}c"),                        # very short: over-redaction
        ("", ["x"], ""),
    ],
)
def test_redact(text: str, secrets: list[str], expected: str) -> None:
    """Every occurrence of every secret becomes [redacted], runs merged, nothing left over."""
    assert redact(text, secrets) == expected


def test_secret_fragments() -> None:
    """A secret yields itself, its JSON-escaped form and its long enough lines."""
    assert secret_fragments("plain") == ["plain"]
    assert set(secret_fragments('a"b')) == {'a"b', 'a\\"b'}
    pem = "-----BEGIN KEY-----\nMIIEv0123\n}\n-----END KEY-----"
    fragments = secret_fragments(pem)
    assert {pem, "MIIEv0123", "-----BEGIN KEY-----", "-----END KEY-----"} <= set(fragments)
    assert "}" not in fragments


def test_redaction_values_open_members(box: SecretBox) -> None:
    """Members {p, v} open under their own path; longest first, duplicates once."""
    members = [json.dumps({"p": p, "v": box.seal(v, context=p)}).encode()
               for p, v in [("u/a/x", "short"), ("u/a/y", "much longer"), ("u/a/z", "short")]]
    assert redaction_values(box, members) == ["much longer", "short"]


@pytest.mark.parametrize("member", ["not json", '{"p": "u/a/x"}', "[1, 2]"])
def test_redaction_values_refuse_bad_members(box: SecretBox, member: str) -> None:
    """A malformed member is a DecryptionError rather than a silently unredacted log."""
    with pytest.raises(DecryptionError):
        redaction_values(box, [member])


def test_redaction_values_wrong_path(box: SecretBox) -> None:
    """A member whose path does not match its ciphertext is refused."""
    member = json.dumps({"p": "u/a/other", "v": box.seal("s3cret", context="u/a/x")})
    with pytest.raises(DecryptionError):
        redaction_values(box, [member])
