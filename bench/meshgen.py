"""Synthetic meshes for the benchmark: a filters.yaml, its .wasm filters and one local app per service.

The shape is what a large Alibaba Cloud Service Mesh / Istio user would commit: N services over 20
namespaces, 5 filters of 200,000 bytes each, every service loading 2 of them, every service with its own
kustomize directory (Deployment + Service). Everything is deterministic, so two runs at one size render
byte-identical trees and their timings are comparable.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from pathlib import Path

import wasmtime

# The module padding is shared with the tests, which hold it because the renderer never grows a module.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from wasm_sections import padded_to  # noqa: E402

NAMESPACES = 20
FILTERS = 5
FILTERS_PER_SERVICE = 2
WASM_SIZE = 200_000

# A minimal module the renderer's inspection accepts as proxy-wasm: the ABI marker plus two callbacks.
# Valid WebAssembly (wasmtime validates it during render), so the benchmark exercises the real checks
# rather than an error path.
_WAT = """
(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) i32.const 0)
  (func (export "proxy_on_context_create") (param i32 i32))
)
"""

# Every unordered pair of the 5 filters: a service's pair is picked so that each namespace sees all 5
# filters, i.e. the base holds the maximum 20 x 5 = 100 ConfigMaps at every size (see service_filters).
_PAIRS = list(itertools.combinations(range(FILTERS), FILTERS_PER_SERVICE))


def _payload(seed: str, size: int) -> bytes:
    # Incompressible, distinct per (filter, variant): no two filters share bytes or a sha256, so the
    # renderer cannot get away with encoding one binary for all of them.
    blocks = -(-size // 32)  # sha256 gives 32 bytes a block
    return b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(blocks))[:size]


def wasm_module(filter_index: int, variant: int = 0, size: int = WASM_SIZE) -> bytes:
    """A valid proxy-wasm module of exactly `size` bytes, padded with a custom section (id 0)."""
    core = bytes(wasmtime.wat2wasm(_WAT))
    seed = f"filter-{filter_index}-variant-{variant}"
    return padded_to(core, size, name="bench-padding", fill=lambda n: _payload(seed, n))


def filter_name(index: int) -> str:
    return f"filter-{index}"


def service_name(index: int) -> str:
    return f"svc-{index:05d}"


def namespace_of(index: int) -> str:
    return f"ns-{index % NAMESPACES:02d}"


def service_filters(index: int) -> tuple[int, ...]:
    # index // NAMESPACES, not index: services i and i+20 share a namespace, so stepping the pair per
    # 20 services gives each namespace a spread of pairs (index % 10 would pin one pair per namespace).
    return _PAIRS[(index // NAMESPACES) % len(_PAIRS)]


def wasm_path(root: Path, filter_index: int) -> Path:
    return root / "filters" / filter_name(filter_index) / f"{filter_name(filter_index)}.wasm"


def is_patched(index: int, patched_percent: int) -> bool:
    """Whether service `index` patches its Deployment: spread evenly, patched_percent in every 100."""
    return patched_percent > 0 and (index * patched_percent) % 100 < patched_percent


# What a team's kustomization typically adds: a strategic-merge patch of the pod template (here a
# label and an annotation), which the renderer can only see by running kustomize.
_PATCH = """patches:
  - target: {{kind: Deployment, name: {name}-v1}}
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: {name}-v1
      spec:
        template:
          metadata:
            labels:
              tier: patched
            annotations:
              example.com/patched: "true"
"""


def _app_files(name: str, namespace: str, patched: bool = False) -> dict[str, str]:
    return {
        "kustomization.yaml": (
            "apiVersion: kustomize.config.k8s.io/v1beta1\n"
            "kind: Kustomization\n"
            "resources:\n"
            "  - service.yaml\n"
            "  - deployment.yaml\n"
        ) + (_PATCH.format(name=name) if patched else ""),
        "deployment.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}-v1
  namespace: {namespace}
  labels:
    app: {name}
    version: v1
spec:
  replicas: 1
  selector:
    matchLabels:
      app: {name}
      version: v1
  template:
    metadata:
      labels:
        app: {name}
        version: v1
    spec:
      containers:
        - name: {name}
          image: registry.example.com/mesh/{name}:1.0.0
          ports:
            - containerPort: 8080
""",
        "service.yaml": f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
  labels:
    app: {name}
    service: {name}
spec:
  selector:
    app: {name}
  ports:
    - name: http
      port: 8080
      targetPort: 8080
""",
    }


def generate(root: Path, services: int, patched_percent: int = 0) -> None:
    """Write filters.yaml, filters/*/*.wasm and apps/<svc>/ under root (which must not hold a mesh).

    With patched_percent, that share of the services patch their Deployment in their kustomization."""
    for i in range(FILTERS):
        path = wasm_path(root, i)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wasm_module(i))

    lines = [
        "apiVersion: wasm-gitops/v1",
        "kind: FilterSet",
        'istio: "1.22"',
        "filters:",
    ]
    for i in range(FILTERS):
        lines += [
            f"  - name: {filter_name(i)}",
            f"    wasm: {wasm_path(root, i).relative_to(root).as_posix()}",
            f"    rootId: root_{i}",
            # A per-filter config, so the EnvoyFilters carry a realistic StringValue payload.
            f"    config: {{header: x-bench-{i}, value: filter {i}}}",
        ]
    lines.append("services:")
    for s in range(services):
        name, namespace = service_name(s), namespace_of(s)
        app = root / "apps" / name
        app.mkdir(parents=True, exist_ok=True)
        for fname, text in _app_files(name, namespace, is_patched(s, patched_percent)).items():
            (app / fname).write_text(text, encoding="utf-8")
        # The selector is given, so validation also checks it against the Deployment's pod labels.
        lines += [
            f"  - name: {name}",
            f"    namespace: {namespace}",
            f"    deployment: {name}-v1",
            f"    selector: {{app: {name}, version: v1}}",
            f"    resources: [apps/{name}]",
            "    filters: [" + ", ".join(filter_name(f) for f in service_filters(s)) + "]",
        ]
    (root / "filters.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
