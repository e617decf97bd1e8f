"""The Python client against a server with TLS, mutual TLS and bearer tokens
(``--tls-cert``, ``--tls-key``, ``--tls-client-ca``, ``--auth-tokens``), certificates made here
with the ``openssl`` command line: the rows match those of the plaintext server, a missing or
wrong token is UNAUTHENTICATED, a read token on an admin RPC PERMISSION_DENIED, and a client
without a certificate from the client CA is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from conftest import engram_store_bin, make_pki

from engram_store import Client
from engram_store.errors import EngramStoreError, PermissionDeniedError, UnauthenticatedError
from engram_store.local_server import LocalServer, run_cli

READ = "read-3c9e1f"
ADMIN = "admin-8d2b7a"


@pytest.fixture(scope="module")
def secured(served, tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make test certificates")
    d = tmp_path_factory.mktemp("tls")
    pki = make_pki(d)
    tokens = d / "tokens"
    tokens.write_text(f"read:{READ}\nadmin:{ADMIN}\n")
    args = ("--auth-tokens", str(tokens), "--tls-cert", str(pki["server.crt"]),
            "--tls-key", str(pki["server.key"]), "--tls-client-ca", str(pki["ca.crt"]))  # fmt: skip
    with LocalServer(engram_store_bin(), served.data_dir, ram_cache="4MiB", args=args) as server:
        port = server.addr.rsplit(":", 1)[1]
        yield f"localhost:{port}", pki


def _client(addr: str, pki: dict[str, Path], token: str | None, cert: bool = True) -> Client:
    return Client(
        addr,
        timeout=10,
        root_certificates=pki["ca.crt"],
        certificate_chain=pki["client.crt"] if cert else None,
        private_key=pki["client.key"] if cert else None,
        token=token,
    )


def test_tls_with_tokens_serves_the_same_rows(served, secured):
    addr, pki = secured
    with Client(served.addr) as plain, _client(addr, pki, READ) as c:
        ids = [0, 5, 2999, 5]
        assert c.lookup("plain", ids).tobytes() == plain.lookup("plain", ids).tobytes()
        assert {t.name for t in c.list_tables()} == {t.name for t in plain.list_tables()}
    with _client(addr, pki, ADMIN) as admin:
        assert admin.prefetch("plain", [1, 2, 3]).result() == 3


def test_token_cases(secured):
    addr, pki = secured
    for token in (None, "wrong", READ + "x"):
        with _client(addr, pki, token) as c, pytest.raises(UnauthenticatedError):
            c.lookup("plain", [1])
    with _client(addr, pki, READ) as c:
        with pytest.raises(PermissionDeniedError, match="Prefetch"):
            c.prefetch("plain", [1]).result()
        assert c.stats().requests >= 0


def test_mutual_tls_refuses_a_client_without_a_certificate(secured):
    addr, pki = secured
    with _client(addr, pki, READ, cert=False) as c, pytest.raises(Exception) as e:
        c.lookup("plain", [1])
    assert getattr(e.value, "code", None) != grpc.StatusCode.OK
    with Client(addr.replace("localhost", "127.0.0.1"), timeout=5, token=READ) as plain:
        with pytest.raises(EngramStoreError):  # no TLS handshake: the channel never connects
            plain.lookup("plain", [1])


def test_cli_lookup_over_mutual_tls_with_a_token_file(secured, tmp_path):
    addr, pki = secured
    token_file = tmp_path / "token"
    token_file.write_text(READ + "\n")
    out = run_cli(engram_store_bin(), "lookup", "--addr", addr, "--table", "plain",
                  "--ids", "3,4", "--tls-ca", pki["ca.crt"], "--tls-cert", pki["client.crt"],
                  "--tls-key", pki["client.key"], "--token-file", token_file)  # fmt: skip
    assert [line.split(":")[0] for line in out.splitlines()] == ["3", "4"]
    token_file.write_text("wrong\n")
    with pytest.raises(RuntimeError, match="nauthenticated"):
        run_cli(engram_store_bin(), "lookup", "--addr", addr, "--table", "plain", "--ids", "3",
                "--tls-ca", pki["ca.crt"], "--tls-cert", pki["client.crt"],
                "--tls-key", pki["client.key"], "--token-file", token_file)  # fmt: skip
