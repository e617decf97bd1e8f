"""ClusterClient against a real etcd and two ``engram-store serve --etcd`` nodes on loopback:
rows and Engram n-grams equal a single server's, a node killed under R=2 costs no lookup, and a
cluster behind mutual TLS and tokens, one node copying its shards from the other, serves the
same rows.
Skips (saying why) without an ``etcd`` binary (Debian: ``etcd-server``)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import GROUP, Served, engram_store_bin, make_pki

from engram_store import Client, ClusterClient
from engram_store.errors import EngramStoreError
from engram_store.local_server import run_cli

READ = "read-5a1e0c"
ADMIN = "admin-77b3d9"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _etcd_or_skip() -> str:
    etcd = shutil.which("etcd")
    if etcd is None:
        print("SKIP: no etcd binary on PATH (Debian: apt-get install -y etcd-server)")
        pytest.skip("no etcd binary on PATH (Debian: apt-get install -y etcd-server)")
    return etcd


def _start_etcd(root: Path) -> tuple[str, subprocess.Popen]:
    """An etcd on free loopback ports, its data and log under ``root``; its URL and process."""
    etcd = _etcd_or_skip()
    cport, pport = _free_port(), _free_port()
    url = f"http://127.0.0.1:{cport}"
    log = open(root / "etcd.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [etcd, "--name", "t", "--data-dir", str(root / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
         "--initial-cluster", f"t=http://127.0.0.1:{pport}", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    _wait_port(cport, proc)
    return url, proc


def _plan(binary: Path, url: str, table: str, shards: int) -> None:
    """``cluster plan`` of ``table`` (R=2), retried until the nodes have registered."""
    deadline = time.monotonic() + 20
    while True:
        try:
            run_cli(binary, "cluster", "plan", "--etcd", url, "--table", table,
                    "--shards", str(shards), "--replicas", "2")  # fmt: skip
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster(served: Served, tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("cluster")
    binary = engram_store_bin()
    url, etcd_proc = _start_etcd(root)
    procs: list[subprocess.Popen] = [etcd_proc]
    nodes = {}
    try:
        for i in range(2):
            port = _free_port()
            addr = f"127.0.0.1:{port}"
            p = subprocess.Popen(
                [str(binary), "serve", "--data", str(served.data_dir), "--listen", addr,
                 "--etcd", url, "--node-id", f"p{i}", "--lease-ttl", "2",
                 "--ram-cache", "16MiB"],
                stdout=subprocess.DEVNULL, stderr=open(root / f"p{i}.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            procs.append(p)
            _wait_port(port, p)
            nodes[f"p{i}"] = p
        _plan(binary, url, "plain", 3)
        _plan(binary, url, GROUP, 2)
        yield url, nodes
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _wait_ready(c: ClusterClient, table: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        c._refresh()
        view = c._view
        tm = view.map.get("tables", {}).get(table)
        if tm and all(len(c._candidates(view, tm, i)) == 2 for i in range(len(tm["shards"]))):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{table} not ready")


def test_cluster_rows_and_ngrams_equal_a_single_server(served: Served, cluster) -> None:
    url, _ = cluster
    rng = np.random.default_rng(0)
    with ClusterClient([url]) as c, Client(served.addr) as single:
        _wait_ready(c, "plain")
        _wait_ready(c, f"{GROUP}.layer2")
        ids = rng.integers(0, 3000, size=700)
        np.testing.assert_array_equal(c.lookup("plain", ids), single.lookup("plain", ids))
        tokens = rng.integers(0, 2000, size=(3, 9))
        np.testing.assert_array_equal(
            c.lookup_ngrams(GROUP, 2, tokens), single.lookup_ngrams(GROUP, 2, tokens)
        )
        assert c.prefetch("plain", ids[:50]) > 0


def test_a_killed_node_costs_no_lookup(served: Served, cluster) -> None:
    url, nodes = cluster
    rng = np.random.default_rng(1)
    with ClusterClient([url], part_timeout=1.0) as c, Client(served.addr) as single:
        _wait_ready(c, "plain")
        nodes["p1"].kill()
        nodes["p1"].wait()
        end = time.monotonic() + 4.0  # past the 2 s lease
        n = 0
        while time.monotonic() < end:
            ids = rng.integers(0, 3000, size=300)
            np.testing.assert_array_equal(c.lookup("plain", ids), single.lookup("plain", ids))
            n += 1
        assert n > 5
        assert "p1" not in c._view.nodes


def test_a_cluster_behind_tls_and_tokens(served: Served, tmp_path_factory) -> None:
    """Nodes with mutual TLS and tokens (``--peer-*`` to reach each other): the second starts
    with an empty data directory and copies its shards from the first over TLS; the client,
    given the CA, a certificate and a read token, reads the rows a single server reads; one
    without a token is refused."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make test certificates")
    root: Path = tmp_path_factory.mktemp("cluster-tls")
    pki = make_pki(root)
    (root / "tokens").write_text(f"read:{READ}\nadmin:{ADMIN}\n")
    (root / "peer-token").write_text(ADMIN + "\n")
    (root / "empty").mkdir()
    binary = engram_store_bin()
    url, etcd_proc = _start_etcd(root)
    procs = [etcd_proc]
    try:
        for i, data in enumerate([served.data_dir, root / "empty"]):
            port = _free_port()
            p = subprocess.Popen(
                [str(binary), "serve", "--data", str(data), "--listen", f"127.0.0.1:{port}",
                 "--etcd", url, "--node-id", f"s{i}", "--lease-ttl", "2", "--ram-cache", "16MiB",
                 "--tls-cert", str(pki["server.crt"]), "--tls-key", str(pki["server.key"]),
                 "--tls-client-ca", str(pki["ca.crt"]), "--auth-tokens", str(root / "tokens"),
                 "--peer-ca", str(pki["ca.crt"]), "--peer-cert", str(pki["client.crt"]),
                 "--peer-key", str(pki["client.key"]),
                 "--peer-token-file", str(root / "peer-token")],
                stdout=subprocess.DEVNULL, stderr=open(root / f"s{i}.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            procs.append(p)
            _wait_port(port, p)
        _plan(binary, url, "plain", 3)
        tls = {
            "root_certificates": pki["ca.crt"],
            "certificate_chain": pki["client.crt"],
            "private_key": pki["client.key"],
        }
        rng = np.random.default_rng(2)
        with ClusterClient([url], token=READ, **tls) as c, Client(served.addr) as single:
            _wait_ready(c, "plain")
            ids = rng.integers(0, 3000, size=500)
            np.testing.assert_array_equal(c.lookup("plain", ids), single.lookup("plain", ids))
        assert (root / "empty" / "plain" / "v00000001" / "held_rows.json").exists()
        with ClusterClient([url], part_timeout=1.0, max_rounds=1, **tls) as stranger:
            with pytest.raises(EngramStoreError) as e:
                stranger.lookup("plain", [1, 2])
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED, e.value
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_certificate_without_its_key_is_refused_before_connecting() -> None:
    with pytest.raises(ValueError, match="go together"):
        ClusterClient(["http://127.0.0.1:1"], certificate_chain=b"-----BEGIN CERTIFICATE-----")
