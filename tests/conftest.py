"""Shared fixtures: a throwaway GitOps repository, tiny proxy-wasm modules, the real kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import wasmtime
import yaml
from click.testing import CliRunner, Result
from wasm_sections import with_custom_section

from renderer.cli import main

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def proxy_wasm_module(tag: str = "v1", abi: str = "0_2_1", pad: int = 0) -> bytes:
    """A minimal valid proxy-wasm module; `tag` changes its bytes (and so its hash)."""
    data = tag.replace("\\", "\\\\").replace('"', '\\"')
    wat = f"""
    (module
      (memory (export "memory") 1)
      (func (export "proxy_abi_version_{abi}"))
      (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 1024)
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) i32.const 0)
      (data (i32.const 16) "{data}"))
    """
    module = bytes(wasmtime.wat2wasm(wat))
    return with_custom_section(module, "pad_", bytes(pad)) if pad else module


BASIC_SPEC = """\
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "1.22"
filters:
  - name: example-filter
    wasm: filters/example-filter.wasm
    rootId: my_root_id
  - name: other-filter
    wasm: filters/other-filter.wasm
    config: {mode: strict, limits: [1, 2]}
services:
  - name: productpage
    namespace: default
    deployment: productpage-v1
    selector: {app: productpage, version: v1}
    resources: [apps/productpage]
    filters:
      - example-filter
      - {name: other-filter, config: {mode: relaxed}}
  - name: details
    deployment: details-v1
    resources: [apps/details]
    filters: [example-filter]
"""


def deployment(name: str, app: str, namespace: str | None = None) -> str:
    ns = f"namespace: {namespace}" if namespace else ""
    return textwrap.dedent(f"""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: {name}
          {ns}
          labels: {{app: {app}}}
        spec:
          selector:
            matchLabels: {{app: {app}, version: v1}}
          template:
            metadata:
              labels: {{app: {app}, version: v1}}
            spec:
              containers:
                - name: {app}
                  image: example.invalid/{app}:1
        """)


INPUTS = ("apps/", "filters/", "filters.yaml")


class Repo:
    """A GitOps repository in a temporary directory, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spec = root / "filters.yaml"

    def write(self, rel: str, text: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def app(self, name: str, deployment_name: str, app: str, namespace: str | None = None) -> None:
        self.write(f"apps/{name}/kustomization.yaml",
                   "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                   "resources: [deployment.yaml]\n")
        self.write(f"apps/{name}/deployment.yaml", deployment(deployment_name, app, namespace))

    def run(self, *args: str) -> Result:
        runner = CliRunner()
        return runner.invoke(main, [*args], catch_exceptions=False)

    def cli(self, *args: str) -> Result:
        """Run a command with the spec of this repository."""
        cmd, *rest = args
        return self.run(cmd, "-f", str(self.spec), *rest)

    def outputs(self) -> dict[str, bytes]:
        """The tree without the inputs the tests wrote: what wasm-gitops owns or stages."""
        return {k: v for k, v in self.tree().items() if not k.startswith(INPUTS)}

    def tree(self) -> dict[str, bytes]:
        """Every file under the repository except the inputs the tests wrote."""
        out = {}
        for p in sorted(self.root.rglob("*")):
            if p.is_file():
                out[p.relative_to(self.root).as_posix()] = p.read_bytes()
        return out

    def load(self, rel: str) -> Any:
        return yaml.safe_load((self.root / rel).read_text(encoding="utf-8"))


def make_repo(root: Path) -> Repo:
    """The standard test repository: two filters, four apps, BASIC_SPEC."""
    r = Repo(root)
    r.root.mkdir(parents=True)
    r.write("filters/example-filter.wasm", proxy_wasm_module("example"))
    r.write("filters/other-filter.wasm", proxy_wasm_module("other"))
    r.app("productpage", "productpage-v1", "productpage")
    r.app("details", "details-v1", "details")
    r.app("reviews", "reviews-v1", "reviews", namespace="bookinfo")
    r.app("gateway", "istio-ingressgateway", "istio-ingressgateway")
    r.write("filters.yaml", BASIC_SPEC)
    return r


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path / "repo")


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not on PATH: the tests build the output with the real 'kubectl kustomize' "
                    "(kustomize v5); install kubectl")
    return path


def kustomize(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture
def build() -> Callable[[Path], list[dict[str, Any]]]:
    return kustomize


GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("WASM_GITOPS_UPDATE_GOLDEN") == "1"


def assert_golden(got: dict[str, bytes], golden: Path) -> None:
    """`got` (relative path -> bytes) is exactly the golden directory's files. WASM_GITOPS_UPDATE_GOLDEN=1
    rewrites the golden files instead; review that diff like code."""
    if UPDATE_GOLDEN:
        for rel, data in got.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_bytes(data)
    want = {p.relative_to(golden).as_posix(): p.read_bytes() for p in golden.rglob("*") if p.is_file()}
    assert sorted(got) == sorted(want), f"the set of files differs from the golden tree {golden}"
    for rel in want:
        assert got[rel] == want[rel], f"{rel} differs from {golden / rel} (WASM_GITOPS_UPDATE_GOLDEN=1 " \
                                      "rewrites the golden files; review the diff)"
