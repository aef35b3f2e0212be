"""Redis credentials: producer users that may only enqueue, and TLS (``rediss://``)."""

from __future__ import annotations

import datetime
import io
import ipaddress
import subprocess
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from common.connection import check_version, connect
from common.settings import Settings
from gristmill import cli
from gristmill.client import Gristmill
from gristmill.embedded import ACL_FILE, EmbeddedRedis, find_server_binary, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def producer_url(redis_server: EmbeddedRedis, redis_client: redis.Redis,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`gristmill redis-user create feeder` on the session's server; deleted afterwards."""
    monkeypatch.setenv("GRISTMILL_REDIS_URL", redis_server.url)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(["redis-user", "create", "feeder"]) == 0
    yield out.getvalue().strip()
    with redirect_stdout(io.StringIO()):
        assert cli.main(["redis-user", "delete", "feeder"]) == 0


def test_a_producer_may_only_lpush_the_inbox(producer_url: str, redis_client: redis.Redis,
                                            redis_server: EmbeddedRedis) -> None:
    """The producer's URL enqueues; every read, other key or admin command is refused."""
    assert producer_url.startswith("redis://feeder:")
    producer = redis.Redis.from_url(producer_url)
    spec = '{"path": "u/alice/hello"}'
    assert producer.lpush("gm:inbox", spec) >= 1
    assert redis_client.lindex("gm:inbox", 0) == spec.encode()
    for refused in (lambda: producer.lrange("gm:inbox", 0, -1), lambda: producer.get("gm:x"),
                    lambda: producer.lpush("gm:{wg:default}:ready", "x"),
                    lambda: producer.hset("gm:{auth}:user:feeder", "role", "admin"),
                    lambda: producer.config_get("*"), lambda: producer.acl_whoami() and
                    producer.acl_setuser("feeder", enabled=True, commands=["+@all"])):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
    assert "user feeder on" in (redis_server.data_dir / ACL_FILE).read_text()  # saved
    listing = io.StringIO()
    with redirect_stdout(listing):
        assert cli.main(["redis-user", "list"]) == 0
    assert {"default", "gristmill", "feeder"} <= set(listing.getvalue().split())
    redis_client.delete("gm:inbox")


def test_wrong_credentials_name_the_setting(redis_server: EmbeddedRedis) -> None:
    """A wrong password is a ConfigError that names what to check, not a hang or a retry."""
    url = redis_server.url.replace(f":{redis_server.password}@", ":wrong@")
    with pytest.raises(Exception, match="GRISTMILL_REDIS_PASSWORD_FILE"):
        check_version(connect(url))


def test_the_password_file_overrides_the_url(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """GRISTMILL_REDIS_PASSWORD_FILE: a URL naming only the user connects with the file's password."""
    assert redis_server.password is not None
    secret = tmp_path / "redis-password"
    secret.write_text(redis_server.password + "\n")
    url = f"redis://gristmill@127.0.0.1:{redis_server.port}/0"
    gm = Gristmill(settings=Settings(redis_url=url, redis_password_file=secret))
    assert gm.redis.ping()


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gristmill test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "redis.crt", directory / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_rediss_url_with_tls(tmp_path: Path) -> None:
    """A TLS-only server with a password: `rediss://user:pw@...?ssl_ca_certs=` works end to end."""
    binary = find_server_binary()
    cert, key = _certificate(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", "tls-test-password", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        url = f"rediss://default:tls-test-password@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
        client = connect(url)
        end = time.monotonic() + 15
        while True:
            if server.poll() is not None:
                output = server.stdout.read().decode() if server.stdout else ""
                if "TLS" in output and ("not" in output or "support" in output):
                    pytest.skip(f"{Path(binary).name} was built without TLS")
                raise AssertionError(f"the TLS server exited: {output[-500:]}")
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < end, "the TLS server did not answer"
                time.sleep(0.05)
        gm = Gristmill(url)
        job_id = gm.run_preview("def main():\n    return 1\n", "python3", {})
        assert gm.get_job(job_id).status.value == "queued"
        with pytest.raises(redis.exceptions.ConnectionError):  # plain text is not spoken
            redis.Redis(port=port, password="tls-test-password", socket_timeout=2).ping()
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
