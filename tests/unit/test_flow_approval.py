"""Signed resume and cancel URLs: valid only for their flow, step, nonce, action and time."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from flows.approval import resume_urls, sign, verify

SECRET = b"k" * 32
FIELDS = ("6a1f3c2e-0000-4000-8000-000000000001", "b/2/c", "n1", "resume", 2_000)


def test_a_signature_verifies_before_expiry_only() -> None:
    """Ours, unchanged and on time: valid; one ms late: not."""
    sig = sign(SECRET, *FIELDS)  # type: ignore[arg-type]
    assert verify(SECRET, *FIELDS, sig, now_ms=2_000)  # type: ignore[arg-type]
    assert not verify(SECRET, *FIELDS, sig, now_ms=2_001)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", range(5))
def test_changing_any_field_invalidates_the_signature(index: int) -> None:
    """Another flow, step, nonce, action or expiry: refused."""
    sig = sign(SECRET, *FIELDS)  # type: ignore[arg-type]
    changed = list(FIELDS)
    changed[index] = {0: "other", 1: "b/2/d", 2: "n2", 3: "cancel", 4: 3_000}[index]
    assert not verify(SECRET, *changed, sig, now_ms=0)  # type: ignore[arg-type]


def test_another_secret_does_not_verify() -> None:
    """A signature made with another instance's secret is refused."""
    assert not verify(b"x" * 32, *FIELDS, sign(SECRET, *FIELDS), now_ms=0)  # type: ignore[arg-type]


def test_urls_carry_a_verifiable_signature_and_escape_the_step() -> None:
    """The URLs' query verifies for their own action, and the step's slashes are escaped."""
    urls = resume_urls("https://gm.example/", SECRET, FIELDS[0], "b/2/c", "n1", 2_000)
    for action, url in urls.items():
        parts = urlsplit(url)
        assert parts.path == f"/api/jobs/flows/{FIELDS[0]}/{action}/b%2F2%2Fc"
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert verify(SECRET, FIELDS[0], "b/2/c", query["nonce"], action, int(query["expires"]),  # type: ignore[arg-type]
                      query["signature"], now_ms=0)
    assert urls["resume"].split("signature=")[1] != urls["cancel"].split("signature=")[1]
