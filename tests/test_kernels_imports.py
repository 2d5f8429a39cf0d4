"""alignts.kernels stays torch-free and each kernel file imports no other project module but alignts.errors (and
the kernels' own cache policy, alignts.kernels.numba_cache, which imports nothing of the project)."""

import ast
import subprocess
import sys
from pathlib import Path

import alignts.kernels

KERNELS_DIR = Path(alignts.kernels.__file__).parent


def test_kernel_files_import_only_errors():
    for path in KERNELS_DIR.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                # the kernels depend on nothing of alignts but its errors and each other (the stream kernels reuse
                # the digit codec); numba_cache on the errors only
                ok = name == "alignts.errors" or (path.name != "numba_cache.py" and name.startswith("alignts.kernels."))
                assert not name.startswith("alignts") or ok, (path.name, name)
                assert name.split(".")[0] not in ("torch", "transformers", "peft"), (path.name, name)


def test_import_pulls_no_torch():
    code = ("import sys, numpy as np, alignts.kernels as k; k.norm_patchify(np.ones((1, 20)), 16, 8); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
