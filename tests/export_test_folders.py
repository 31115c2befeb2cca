"""Write the test suite's tiny and base model folders into DIR (DIR/tiny, DIR/base), as its fixtures export them.

    python -m tests.export_test_folders DIR
    ALBERT_ONNX_TEST_FOLDERS=DIR python -m pytest -m cuda tests/runtime

For a machine that runs the runtime tests without the export extra (a GPU host): export here, carry DIR there.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests.conftest import base_export_args, make_tiny_source, run_cli, tiny_export_args


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.export_test_folders DIR", file=sys.stderr)
        return 2
    target = Path(argv[0])
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        source = make_tiny_source(Path(scratch) / "albert-tiny")
        for name, args in (("tiny", tiny_export_args(source, Path(scratch) / "tiny")), ("base", base_export_args(Path(scratch) / "base"))):
            run_cli(*args)
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.move(str(Path(scratch) / name), target / name)
            print(f"wrote {target / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
