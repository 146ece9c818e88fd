"""schemas/kubernetes-1.37.json, the Kubernetes schemas the renderer validates its output against, and
scripts/kubernetes-schemas.py, which cuts it from kubernetes-validate's files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import REPO

from renderer import conformance
from renderer.conformance import KubernetesSchema
from renderer.kubernetes_schemas import DEFAULT_KUBERNETES_VERSION, reachable_definitions

COMMITTED = REPO / "schemas" / f"kubernetes-{DEFAULT_KUBERNETES_VERSION}.json"
SCRIPT = REPO / "scripts" / "kubernetes-schemas.py"
REF = re.compile(r"#/\$defs/([^\"]+)")


def committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(COMMITTED.read_text(encoding="utf-8"))
    return document


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubernetes_schemas", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_subset_holds_exactly_the_kinds_and_definitions_the_renderer_reaches() -> None:
    document = committed()
    wanted = {f"{api} {kind}" for (api, kind), ref in conformance.SCHEMAS.items() if isinstance(ref, KubernetesSchema)}
    assert set(document["kinds"]) == wanted
    defs = document["definitions"]["$defs"]
    roots = [*document["kinds"].values(), *({"$ref": f"#/$defs/{n}"} for n in conformance.KUBERNETES_DEFINITIONS)]
    # Nothing unused was kept, nothing used is missing (a missing one would make a $ref dangle).
    assert reachable_definitions(roots, defs) == sorted(defs)
    named = {name for node in [*roots, *defs.values()] for name in REF.findall(json.dumps(node))}
    assert named == set(defs)
    assert {"io.k8s.api.core.v1.Volume", "io.k8s.api.core.v1.VolumeMount", "io.k8s.api.apps.v1.DeploymentSpec"} <= set(defs)


def test_the_file_is_canonical_and_names_its_source() -> None:
    raw = COMMITTED.read_bytes()
    document = committed()
    assert script().render(document) == raw  # compact, sorted keys, one final newline
    source = document["source"]
    assert source["package"] == "kubernetes-validate 1.37.0"
    assert source["directory"].endswith(f"/v{DEFAULT_KUBERNETES_VERSION}.0-local-strict")
    assert sorted(source["sha256"]) == ["_definitions.json", "configmap-v1.json", "deployment-apps-v1.json"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in source["sha256"].values())
    assert "make kubernetes-schemas" in document["$comment"]


def test_the_generator_keeps_what_is_reached_and_reproduces_the_committed_schemas(tmp_path: Path) -> None:
    # A source laid out like kubernetes-validate's directory, with one definition nothing reaches.
    document = committed()
    source = tmp_path / f"v{DEFAULT_KUBERNETES_VERSION}.0-local-strict"
    source.mkdir()
    definitions = json.loads(json.dumps(document["definitions"]))
    definitions["$defs"]["io.k8s.api.example.v1.Unused"] = {"type": "object"}
    files = {"_definitions.json": definitions, "configmap-v1.json": document["kinds"]["v1 ConfigMap"],
             "deployment-apps-v1.json": document["kinds"]["apps/v1 Deployment"]}
    for name, content in files.items():
        (source / name).write_text(json.dumps(content, indent=2), encoding="utf-8")
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--source", str(source), "--output", str(out)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    generated = json.loads(out.read_text(encoding="utf-8"))
    assert {k: v for k, v in generated.items() if k != "source"} == {k: v for k, v in document.items() if k != "source"}
    defs = len(document["definitions"]["$defs"])
    assert generated["source"]["definitions"] == f"{defs} of {defs + 1}"
    assert generated["source"]["sha256"] == {name: hashlib.sha256((source / name).read_bytes()).hexdigest()
                                             for name in files}
    # --check: the same bytes again say "up to date"; the committed file (other source digests) differs.
    again = subprocess.run([sys.executable, str(SCRIPT), "--source", str(source), "--output", str(out), "--check"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "up to date" in again.stdout
    other = subprocess.run([sys.executable, str(SCRIPT), "--source", str(source), "--output", str(COMMITTED), "--check"],
                           capture_output=True, text=True, timeout=120, check=False)
    assert other.returncode == 1 and "differs" in other.stdout


def test_a_dangling_reference_in_the_source_is_refused(tmp_path: Path) -> None:
    document = committed()
    source = tmp_path / f"v{DEFAULT_KUBERNETES_VERSION}.0-local-strict"
    source.mkdir()
    definitions = json.loads(json.dumps(document["definitions"]))
    del definitions["$defs"]["io.k8s.api.core.v1.VolumeMount"]
    (source / "_definitions.json").write_text(json.dumps(definitions), encoding="utf-8")
    (source / "configmap-v1.json").write_text(json.dumps(document["kinds"]["v1 ConfigMap"]), encoding="utf-8")
    (source / "deployment-apps-v1.json").write_text(json.dumps(document["kinds"]["apps/v1 Deployment"]), encoding="utf-8")
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--source", str(source), "--output", str(out)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode != 0 and "io.k8s.api.core.v1.VolumeMount" in run.stderr
    assert not out.exists()
