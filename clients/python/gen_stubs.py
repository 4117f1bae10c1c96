"""Generates the Python stubs for orders.v1 from ../../proto into ./gen.

Run it directly (`python gen_stubs.py`) or let pytest do it: conftest.py calls
generate() before the tests are collected. Nothing in gen/ is committed.
"""

from __future__ import annotations

import pathlib
import shutil
import sys

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
OUT = HERE / "gen"


def generate() -> pathlib.Path:
    # Imported here so that `import gen_stubs` stays cheap.
    from importlib import resources

    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "orders" / "v1").glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / 'orders' / 'v1'}")
    well_known = resources.files("grpc_tools") / "_proto"  # google/protobuf/*.proto
    tmp = OUT.with_name("gen.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={tmp}",
        f"--pyi_out={tmp}",
        f"--grpc_python_out={tmp}",
        *protos,
    ]
    # protoc resolves the file names against the -I roots.
    rc = protoc.main(args)
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"grpc_tools.protoc failed with exit code {rc}")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    return OUT


if __name__ == "__main__":
    out = generate()
    print(f"generated {sum(1 for _ in out.rglob('*.py'))} modules into {out}", file=sys.stderr)
