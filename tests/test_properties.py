"""Property-based: random valid specs render, build with the real kustomize and are deterministic;
random mutations of a spec end in a clean user error or a valid render, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conftest import Repo, kustomize, proxy_wasm_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from renderer.cli import main
from renderer.yamlio import dump

TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n"), max_size=12)
LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
VERSIONS = st.sampled_from(["1.5", "1.6", "1.7", "1.9.2", "1.11", "1.22", "1.30.3"])
CONTEXTS = st.sampled_from(["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"])


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    fnames = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
    filters = []
    for name in fnames:
        f: dict[str, Any] = {"name": name, "wasm": f"filters/{name}.wasm"}
        if draw(st.booleans()):
            f["rootId"] = draw(TEXT)
        if draw(st.booleans()):
            f["config"] = draw(JSONISH.filter(lambda v: v is not None))
        if draw(st.booleans()):
            f["failOpen"] = draw(st.booleans())
        filters.append(f)
    snames = draw(st.lists(LABEL, min_size=1, max_size=3, unique=True))
    services = []
    for name in snames:
        chosen = draw(st.lists(st.sampled_from(fnames), min_size=1, unique=True))
        entries: list[Any] = [c if draw(st.booleans()) else {"name": c, "config": draw(JSONISH.filter(
            lambda v: v is not None))} for c in chosen]
        s: dict[str, Any] = {"name": name, "namespace": draw(st.sampled_from(["default", "team-a", "x"])),
                             "deployment": f"{name}-v1", "resources": [f"apps/{name}"], "filters": entries,
                             "context": draw(CONTEXTS)}
        if draw(st.booleans()):
            s["proxyLogLevel"] = {"wasm": draw(st.sampled_from(["debug", "info", "trace"]))}
        services.append(s)
    return {"apiVersion": "wasm-gitops/v1", "kind": "FilterSet", "istio": draw(VERSIONS),
            "filters": filters, "services": services}


def materialise(root: Path, spec: dict[str, Any]) -> Repo:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    repo = Repo(root)
    for f in spec["filters"]:
        repo.write(f["wasm"], proxy_wasm_module(f["name"]))
    for s in spec["services"]:
        repo.app(s["name"], s["deployment"], s["name"], namespace=s["namespace"])
    repo.write("filters.yaml", dump(spec))  # our emitter: unambiguous for YAML 1.1 and 1.2
    return repo


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=specs())
def test_random_valid_specs_render_build_and_are_deterministic(tmp_path: Path, spec: dict[str, Any]) -> None:
    repo = materialise(tmp_path / "r", spec)
    first = repo.cli("render")
    assert first.exit_code == 0, first.output
    tree = repo.tree()
    assert repo.cli("render").exit_code == 0
    assert repo.tree() == tree
    for s in spec["services"]:
        objs = kustomize(repo.root / "overlays" / s["name"])
        dep = next(o for o in objs if o["kind"] == "Deployment")
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        json.loads(ann["sidecar.istio.io/userVolume"])
    built = kustomize(repo.root)
    ids = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in built]
    assert len(ids) == len(set(ids))
    # Same spec in another directory: byte-identical output.
    again = materialise(tmp_path / "r2", spec)
    assert again.cli("render").exit_code == 0
    assert again.tree() == tree


BASE = """\
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "1.22"
filters:
  - name: example-filter
    wasm: filters/example-filter.wasm
    rootId: my_root_id
    config: {a: [1, 2], b: "x"}
services:
  - name: productpage
    namespace: default
    deployment: productpage-v1
    selector: {app: productpage, version: v1}
    resources: [apps/productpage]
    filters:
      - {name: example-filter, config: {}}
"""

JUNK = st.sampled_from(["", " ", "\t", ":", "- ", "{", "}", "[", "]", "&a ", "*a", "!!str ", "!x ", "'", '"',
                        "#", "\n", "---\n", "0", "-1", "null", "true", "1.5", "~", "%", "@", "<<: ", "ü"])


@st.composite
def mutations(draw: st.DrawFn) -> str:
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup-line", "drop-line"]))
        lines = text.splitlines(keepends=True)
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "dup-line":
            lines.insert(i, lines[i])
        elif kind == "drop-line":
            del lines[i]
        else:
            line = lines[i]
            at = draw(st.integers(0, max(0, len(line) - 1)))
            if kind == "insert":
                line = line[:at] + draw(JUNK) + line[at:]
            elif kind == "delete":
                line = line[:at] + line[at + draw(st.integers(1, 5)):]
            else:
                line = line[:at] + draw(JUNK) + line[at + 1:]
            lines[i] = line
        text = "".join(lines)
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=mutations())
def test_mutated_specs_give_a_clean_error_or_a_valid_render(repo: Repo, text: str) -> None:
    repo.write("filters.yaml", text)
    result = CliRunner().invoke(main, ["validate", "-f", str(repo.spec)])
    # A traceback would surface as an exception other than SystemExit (click maps exit 0 to None).
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        for line in result.output.splitlines():
            assert line.startswith("filters.yaml:"), line
