"""The worker's side of the VRAM tier's file-descriptor handoff (``engram_store.torch.vmm``)
where there is no GPU: against a socket that speaks the server's protocol (a token in; one byte
out, 1 with the descriptors or 0 with an error text), a refusal is raised with the server's
words, a count of descriptors other than the sizes asked for is refused naming both, and the
token sent is the one given. (The import and mapping of real allocations, and the server's side
against it, run in the GPU tests of ``test_torch_mapped.py`` and the Rust tests of
``store/src/engine/fd_handoff.rs``.)"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

import pytest

vmm = pytest.importorskip("engram_store.torch.vmm", reason="engram_store.torch needs torch")


def serve_once(path: Path, reply: bytes, fds: list[int], got: list[bytes]) -> threading.Thread:
    """A server on ``path`` that reads a 16-byte token into ``got`` and sends ``reply`` with
    ``fds`` attached, once."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        with server, server.accept()[0] as conn:
            token = b""
            while len(token) < 16:
                token += conn.recv(16 - len(token))
            got.append(token)
            socket.send_fds(conn, [reply], fds) if fds else conn.sendall(reply)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_refusal_is_raised_with_the_servers_words():
    with tempfile.TemporaryDirectory() as tmp:
        path, got = Path(tmp) / "s.sock", []
        thread = serve_once(path, b"\x00unknown, used or expired token", [], got)
        token = bytes(range(16))
        with pytest.raises(RuntimeError, match="unknown, used or expired token"):
            vmm.collect_shared(str(path), token, [2 << 20] * 5, 0)
        thread.join(5)
        assert got == [token]


def test_a_wrong_count_of_descriptors_is_refused_and_they_are_closed():
    with tempfile.TemporaryDirectory() as tmp:
        path, got = Path(tmp) / "s.sock", []
        files = [open(Path(tmp) / f"f{i}", "w") for i in range(2)]  # noqa: SIM115
        thread = serve_once(path, b"\x01", [f.fileno() for f in files], got)
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(RuntimeError, match="2 file descriptors .* not 5"):
            vmm.collect_shared(str(path), b"t" * 16, [2 << 20] * 5, 0)
        thread.join(5)
        assert set(os.listdir("/proc/self/fd")) <= before, "a received descriptor leaked"
        for f in files:
            f.close()


def test_no_server_is_an_os_error_naming_nothing_mapped():
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(OSError):
        vmm.collect_shared(str(Path(tmp) / "absent.sock"), b"t" * 16, [1], 0)
