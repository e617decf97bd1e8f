"""Generates the gRPC stubs of engram_store.v1 into the package, or checks the committed ones.

The stubs (``engram_store/v1/store_pb2.py``, ``store_pb2.pyi``, ``store_pb2_grpc.py``) are
committed so that ``pip install ./client/python`` needs no code generator; CI runs this script
with ``--check`` to prove they match ``proto/engram_store/v1/store.proto``. It needs the
``grpcio-tools`` version pinned in the package's ``dev`` extra (its output differs between
versions).

    python client/python/scripts/gen_stubs.py            # regenerate
    python client/python/scripts/gen_stubs.py --check    # exit 1 if they differ
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

PYTHON_ROOT = Path(__file__).resolve().parents[1]
REPO = PYTHON_ROOT.parents[1]
PROTO_ROOT = REPO / "proto"
PROTO = "engram_store/v1/store.proto"
STUBS = ("store_pb2.py", "store_pb2.pyi", "store_pb2_grpc.py")
PACKAGE_DIR = PYTHON_ROOT / "engram_store" / "v1"


def generate(out_dir: Path) -> None:
    """Runs protoc (from grpcio-tools) on the proto, writing ``engram_store/v1/*`` under out_dir."""
    from grpc_tools import protoc

    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO}")


def differences() -> list[str]:
    """Names of the committed stubs that differ from freshly generated ones."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "engram_store" / "v1"
        return [
            name
            for name in STUBS
            if not (PACKAGE_DIR / name).is_file()
            or (PACKAGE_DIR / name).read_bytes() != (fresh / name).read_bytes()
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences()
        if stale:
            print(
                f"stale gRPC stubs in {PACKAGE_DIR}: {', '.join(stale)}; "
                f"run python {Path(__file__).relative_to(REPO)}",
                file=sys.stderr,
            )
            return 1
        print(f"gRPC stubs in {PACKAGE_DIR} match {PROTO}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "engram_store" / "v1"
        for name in STUBS:
            (PACKAGE_DIR / name).write_bytes((fresh / name).read_bytes())
    print(f"wrote {', '.join(STUBS)} to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
