"""A real S3 API on loopback (moto's standalone server), started by the test session.

``s3_url`` gives each test a fresh bucket and sets the environment variables
obstore reads (endpoint, credentials, plain HTTP), and returns the
``s3://bucket/prefix`` URL for ``GRISTMILL_OBJECT_STORE_URL``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's server on a free loopback port; its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_url(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the test server; the store URL with a prefix in it."""
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_server, "AWS_ALLOW_HTTP": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = f"gm-{uuid.uuid4().hex[:12]}"
    client: Any = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/gristmill"
