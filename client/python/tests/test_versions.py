"""Table versions through the Python client against a live server: the version a lookup was
answered from, Reload swapping in a new version (its rows, by their own seed), pinning the
version before it, and a version the server does not keep refused with FAILED_PRECONDITION.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import engram_store_bin
from test_client import synth_values

from engram_store import Client
from engram_store.errors import FailedPreconditionError
from engram_store.local_server import LocalServer, run_cli

ROWS, DIM = 3000, 16


def synth(binary, data, seed: int) -> None:
    run_cli(binary, "synth", "--name", "t", "--rows", ROWS, "--dim", DIM, "--dtype", "f32",
            "--data", data, "--seed", seed)


def test_reload_swaps_versions_and_pins_the_one_before(tmp_path):
    binary, data = engram_store_bin(), tmp_path / "data"
    synth(binary, data, 101)
    ids = np.array([0, ROWS - 1, 7, 7, 1234])
    with LocalServer(binary, data, args=("--watch-interval", "0")) as server:
        with Client(server.addr) as c:
            rows, version = c.lookup("t", ids, return_version=True)
            assert version == 1
            np.testing.assert_array_equal(rows, synth_values(101, "f32", DIM, ids))

            synth(binary, data, 102)
            [report] = [r for r in c.reload() if r["table"] == "t"]
            assert report["outcome"] == "SWAPPED", report
            assert (report["previous_version"], report["version"]) == (1, 2)

            rows, version = c.lookup("t", ids, return_version=True)
            assert version == 2
            np.testing.assert_array_equal(rows, synth_values(102, "f32", DIM, ids))
            # The version before stays pinnable (the server keeps 2 by default).
            rows, version = c.lookup("t", ids, version=1, return_version=True)
            assert version == 1
            np.testing.assert_array_equal(rows, synth_values(101, "f32", DIM, ids))
            with pytest.raises(FailedPreconditionError, match=r'version 5 of table "t"'):
                c.lookup("t", ids, version=5)
            assert c.reload(["t"])[0]["outcome"] == "UNCHANGED"
