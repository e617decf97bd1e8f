"""Running an ``engram-store`` binary from Python: its command line (``synth``,
``engram create``) and a server on a free loopback port, for tests and examples.

    with LocalServer(binary, data_dir) as server:
        client = Client(server.addr)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["LocalServer", "run_cli"]

_LISTENING = re.compile(r" on (\S+:\d+) \(io: ")


def run_cli(binary: str | Path, *args: str | Path) -> str:
    """Runs ``engram-store ARGS...``; returns its stdout, raises with its stderr on failure."""
    cmd = [str(binary), *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}")
    return done.stdout


class LocalServer:
    """``engram-store serve --data DATA --listen 127.0.0.1:0`` in a child process, with a local
    socket (for shared-memory regions) in a fresh temporary directory.

    Args:
        binary: the ``engram-store`` executable.
        data_dir: the data directory to serve.
        ram_cache: RAM tier budget (``--ram-cache``). Default ``"64MiB"``.
        args: more ``serve`` flags.
    """

    def __init__(
        self,
        binary: str | Path,
        data_dir: str | Path,
        *,
        ram_cache: str = "64MiB",
        args: tuple[str, ...] = (),
    ):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.ram_cache = ram_cache
        self.args = args
        self.addr: str | None = None
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._socket_dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self, timeout: float = 60.0) -> LocalServer:
        """Starts the server and waits until it listens; returns self."""
        if not self.binary.is_file():
            raise FileNotFoundError(
                f"engram-store binary {self.binary} not found (cargo build -p engram-store)"
            )
        fd, log = tempfile.mkstemp(prefix="engram-store-serve-", suffix=".log")
        self.log_path = Path(log)
        self._socket_dir = tempfile.TemporaryDirectory(prefix="engram-store-sock-")
        local_socket = Path(self._socket_dir.name) / "local.sock"
        cmd = [
            str(self.binary), "serve", "--data", str(self.data_dir),
            "--listen", "127.0.0.1:0", "--ram-cache", self.ram_cache,
            "--local-socket", str(local_socket), *self.args,
        ]  # fmt: skip
        with os.fdopen(fd, "wb") as log_file:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if m := _LISTENING.search(text):
                self.addr = m.group(1)
                return self
            if self._proc.poll() is not None:
                raise RuntimeError(f"{' '.join(cmd)} exited {self._proc.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"engram-store did not start listening in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """What the server printed so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        """Asks the server to shut down (SIGINT, as Ctrl-C), killing it if it does not."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        if self._socket_dir is not None:
            self._socket_dir.cleanup()
            self._socket_dir = None

    def __enter__(self) -> LocalServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
