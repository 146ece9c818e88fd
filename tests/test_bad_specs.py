"""The corpus of bad specs: each gives exactly its expected `filters.yaml:LINE:COL: message` lines,
exit code 2, no traceback, and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import wasmtime
from conftest import Repo, deployment, proxy_wasm_module

BAD = Path(__file__).parent / "specs" / "bad"
UPDATE = os.environ.get("WASM_GITOPS_UPDATE_GOLDEN") == "1"
CASES = sorted(p.stem for p in BAD.glob("*.yaml"))


EXAMPLE_SCHEMA = """{
  "type": "object",
  "additionalProperties": false,
  "properties": {"header": {"type": "string", "minLength": 1}, "value": {"type": "string"}}
}
"""
# The layout hgctl writes for a Higress plugin (apiVersion, info, spec.configSchema.openAPIV3Schema).
HIGRESS_SPEC = """apiVersion: 1.0.0
info:
  category: custom
  name: higress
  version: 0.1.0
spec:
  phase: UNSPECIFIED_PHASE
  priority: 100
  configSchema:
    openAPIV3Schema:
      type: object
      required: [block_urls]
      properties:
        block_urls:
          type: array
          items: {type: string}
        blocked_code: {type: integer, minimum: 100, maximum: 599, exclusiveMaximum: true}
"""


def _hostile_files(repo: Repo) -> None:
    repo.write("filters/not-wasm.wasm", "(module)\n")  # WAT text: wasmtime would accept it as a module
    repo.write("filters/plain.wasm", bytes(wasmtime.wat2wasm('(module (func (export "main")))')))
    repo.write("filters/huge.wasm", proxy_wasm_module("huge", pad=1_048_576))
    outside = repo.root.parent / "outside.wasm"
    outside.write_bytes(proxy_wasm_module("outside"))
    (repo.root / "filters" / "link-out.wasm").symlink_to(outside)
    repo.write("apps/broken/kustomization.yaml", "resources: [deployment.yaml]\n")
    repo.write("apps/broken/deployment.yaml", "kind: Deployment\nmetadata: {name: broken-v1\n")
    # Workloads that only kustomize's build shows as they are, and resources that loop into the output.
    repo.write("apps/frontend/kustomization.yaml", "resources: [deployment.yaml]\n")
    repo.write("apps/frontend/deployment.yaml",
               deployment("frontend-v1", "frontend").replace("version: v1}", "version: front end}"))
    repo.write("overlays/productpage/kustomization.yaml", "resources: [../../apps/productpage]\n")
    repo.write("overlays/details/kustomization.yaml", "resources: [../../apps/details]\n")
    repo.write("apps/sneaky/kustomization.yaml", "resources: [deployment.yaml, ../../overlays/details]\n")
    repo.write("apps/sneaky/deployment.yaml", deployment("sneaky-v1", "sneaky"))
    repo.write("apps/versioned/deployment.yaml", deployment("versioned-v1", "versioned"))
    repo.write("apps/versioned/kustomization.yaml", "resources: [deployment.yaml]\npatches:\n"
               "  - target: {kind: Deployment, name: versioned-v1}\n"
               "    patch: '[{\"op\": \"replace\", \"path\": \"/spec/template/metadata/labels/version\", "
               "\"value\": \"v2\"}]'\n")
    repo.write("apps/remote-base/deployment.yaml", deployment("remote-v1", "remote"))
    repo.write("apps/remote-base/kustomization.yaml",
               "namePrefix: team-\nresources: [deployment.yaml, https://github.com/example/base?ref=v1]\n")
    repo.write("apps/namespaced/deployment.yaml", deployment("namespaced-v1", "namespaced"))
    repo.write("apps/namespaced/kustomization.yaml", "namespace: team-a\nresources: [deployment.yaml]\n")
    os.mkfifo(repo.root / "filters" / "fifo.wasm")
    repo.write("apps/fifo/kustomization.yaml", "resources: [deployment.yaml]\n")
    os.mkfifo(repo.root / "apps" / "fifo" / "deployment.yaml")
    repo.write("apps/utf16/kustomization.yaml", "resources: [deployment.yaml]\n")
    repo.write("apps/utf16/deployment.yaml", ("\ufeff" + deployment("utf16-v1", "utf16")).encode("utf-16-le"))
    # Configuration schemas: one that works, and files that must be refused as schemas.
    repo.write("filters/example.schema.json", EXAMPLE_SCHEMA)
    repo.write("filters/invalid.schema.json", '{"type": "object", "properties": {"header": {"type": "strin"}}}\n')
    repo.write("filters/remote.schema.json", '{"properties": {"header": {"$ref": "http://127.0.0.1:9/s.json"}}}\n')
    repo.write("filters/not-json.schema.json", "{type: object}\n")
    repo.write("filters/twice.schema.json", '{"type": "object", "type": "string"}\n')
    (repo.root / "filters" / "outside.schema.json").symlink_to(repo.root.parent / "outside.wasm")
    repo.write("filters/higress/plugin.wasm", proxy_wasm_module("higress"))
    repo.write("filters/higress/spec.yaml", HIGRESS_SPEC)
    repo.write("filters/no-schema/spec.yaml", "apiVersion: 1.0.0\ninfo: {name: x}\nspec: {phase: default}\n")
    repo.write("filters/no-context.wasm", bytes(wasmtime.wat2wasm(
        '(module (memory (export "memory") 1) (func (export "proxy_abi_version_0_2_1")) '
        '(func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0))')))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", ["validate", "render", "check"])
def test_bad_spec(repo: Repo, case: str, command: str) -> None:
    _hostile_files(repo)
    repo.write("filters.yaml", (BAD / f"{case}.yaml").read_bytes())
    before = repo.tree()
    result = repo.cli(command)
    expected_file = BAD / f"{case}.expected"
    if UPDATE and command == "validate":
        expected_file.write_text(result.output)
    expected = expected_file.read_text()
    assert result.exit_code == 2, result.output
    assert result.output == expected
    assert "Traceback" not in result.output
    for line in result.output.splitlines():
        assert line.startswith("filters.yaml:"), line
    assert repo.tree() == before, "a bad spec must not write anything"
