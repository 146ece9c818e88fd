"""`wasm-gitops init`: a commented starter filters.yaml that validates once the paths it names exist.

The text is a template rather than an object for the emitter: its comments are the point. The one
value put into it, the schema path of the editor modeline, goes into a comment line; jinja2 runs
sandboxed with StrictUndefined, and a path that could break out of the line is refused.

Which schema the modeline names: the repository's own schemas/filters.schema.json when DIR is in a
checkout of wasm-gitops (found upwards, recognised by its $id), as a path relative to DIR so it works
on every clone; otherwise the copy installed with this wasm-gitops, by absolute path: it works in the
editor on this machine only, and the starter says so. A URL would work everywhere, but the schema has
no published home yet, and a modeline pointing at nothing helps nobody.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from .errors import UsageError

SPEC_NAME = "filters.yaml"
SCHEMA_FILE = "filters.schema.json"
SCHEMA_ID = "urn:wasm-gitops:schemas:filters:v1"

TEMPLATE = """\
# yaml-language-server: $schema={{ schema }}
{% if not shared %}\
# (That is the schema installed with wasm-gitops on this machine; it has no public URL yet. To give
#  every clone editor checking, commit a copy as schemas/filters.schema.json and point at it.)
{% endif %}\
#
# wasm-gitops spec: which proxy-wasm filters to load into which Istio workloads.
# Next steps:
#   1. put the filter's compiled module at filters/my-filter/my-filter.wasm (or change 'wasm');
#   2. point 'resources' at the kustomize directory holding the Deployment, 'deployment' at its name;
#   3. wasm-gitops validate, then wasm-gitops render, and commit this file together with base/,
#      overlays/, kustomization.yaml and .wasm-gitops-manifest.json.
# Every key is described in the schema.
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "1.22"                  # the mesh's Istio version, quoted: decides the shape of what is rendered
filters:
  - name: my-filter            # names the ConfigMap, the mounted file my-filter.wasm and the Envoy plugin
    wasm: filters/my-filter/my-filter.wasm   # relative to this file, inside the repository
    # rootId: my_root_id       # the root context the filter registers, if it names one
    # config: {key: value}     # delivered to proxy_on_configure as JSON
services:
  - name: my-app               # names the overlay overlays/my-app/
    namespace: default         # the Deployment's namespace
    deployment: my-app         # the Deployment whose pods load the filters
    resources: [apps/my-app]   # the kustomize directory (or remote kustomize URL) that holds it
    filters:                   # in HTTP filter chain order
      - my-filter
# How Argo CD and/or Flux apply the rendered tree (render then also writes gitops/): uncomment.
# gitops:
#   repoURL: https://git.example.com/your-org/your-repo.git   # what Argo CD clones
#   argocd: {}                 # one Application for the root (mode: ApplicationSet: one per service)
#   flux: {}                   # one Kustomization for the root (mode: PerService: one per overlay)
"""


@dataclass(frozen=True)
class Started:
    path: Path
    schema: str
    shared: bool  # the modeline names the repository's schema (works on every clone)


def _is_our_schema(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("$id") == SCHEMA_ID
    except (OSError, ValueError, AttributeError):
        return False


def schema_reference(directory: Path) -> tuple[str, bool]:
    """The modeline target for a spec in `directory`, and whether every clone can follow it."""
    start = directory.resolve()
    for parent in (start, *start.parents):
        candidate = parent / "schemas" / SCHEMA_FILE
        if _is_our_schema(candidate):
            return Path(os.path.relpath(candidate, start)).as_posix(), True
    installed = resources.files("renderer").joinpath("schemas", SCHEMA_FILE)
    return Path(str(installed)).resolve().as_posix(), False


def render_starter(schema: str, shared: bool) -> str:
    if not schema.isprintable():
        # It lands in a comment line: a line break in it would start YAML of its own.
        raise UsageError(f"the schema path {schema!r} holds control characters; run init elsewhere")
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(TEMPLATE).render(schema=schema, shared=shared)


def init(directory: Path) -> Started:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: is not a directory; pass the directory to create {SPEC_NAME} in")
    schema, shared = schema_reference(directory)
    text = render_starter(schema, shared)
    target = directory / SPEC_NAME
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8", newline="\n") as fh:  # "x": never over an existing spec
            fh.write(text)
    except FileExistsError:
        raise UsageError(f"{target}: already exists; init never overwrites a spec (edit it, or choose "
                         "another directory)") from None
    except OSError as e:
        raise UsageError(f"{target}: cannot write it: {e.strerror}") from None
    return Started(target, schema, shared)
