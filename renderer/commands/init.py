"""`wasm-gitops init`: a commented starter filters.yaml that validates once the paths it names exist.

The text is a template rather than an object for the emitter: its comments are the point. The one
value put into it, the schema path of the editor modeline, goes into a comment line; jinja2 runs
sandboxed with StrictUndefined, and a path that could break out of the line is refused.

Which schema the modeline names: the repository's own schemas/filters.schema.json when DIR is in a
checkout of wasm-gitops or already holds a copy (found upwards, recognised by its $id), as a path relative
to DIR; otherwise init writes a copy of the schema installed with this wasm-gitops to
DIR/schemas/filters.schema.json and names that. Either way the modeline is relative and works on every
clone: an absolute path into site-packages would work on one machine only, and the schema has no
published URL.

init also makes sure DIR/.gitignore ignores .wasm-gitops.tmp/, the staging directory a killed render
leaves behind (the next render finishes it): `git add -A` must never commit it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from ..errors import UsageError
from ..model import SCHEMA_FILE

SPEC_NAME = "filters.yaml"
SCHEMA_ID = "urn:wasm-gitops:schemas:filters:v1"

TEMPLATE = """\
# yaml-language-server: $schema={{ schema }}
#
# wasm-gitops spec: which proxy-wasm filters to load into which Istio workloads.
# Next steps:
#   1. put the filter's compiled module at filters/my-filter/my-filter.wasm (or change 'wasm');
#   2. point 'resources' at the kustomize directory holding the Deployment, 'deployment' at its name;
#   3. wasm-gitops validate, then wasm-gitops render, and commit everything: git add -A (the
#      .gitignore beside this file keeps render's staging directory out).
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


STAGING_IGNORE = ".wasm-gitops.tmp/"


@dataclass(frozen=True)
class Started:
    path: Path
    schema: str  # the modeline's target, relative to the spec
    written: tuple[Path, ...]  # every file init created or appended to, in order


def _is_our_schema(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("$id") == SCHEMA_ID
    except (OSError, ValueError, AttributeError):
        return False


def _installed_schema() -> bytes:
    return resources.files("renderer").joinpath("schemas", SCHEMA_FILE).read_bytes()


def schema_reference(directory: Path) -> tuple[str, bool]:
    """The modeline target for a spec in `directory`, and whether init must write it there first."""
    start = directory.resolve()
    for parent in (start, *start.parents):
        candidate = parent / "schemas" / SCHEMA_FILE
        if _is_our_schema(candidate):
            return Path(os.path.relpath(candidate, start)).as_posix(), False
    own = directory / "schemas" / SCHEMA_FILE
    if os.path.lexists(own):
        raise UsageError(f"{own}: exists and is not the wasm-gitops schema; move it away, then run init again")
    return f"schemas/{SCHEMA_FILE}", True


def render_starter(schema: str) -> str:
    if not schema.isprintable():
        # It lands in a comment line: a line break in it would start YAML of its own.
        raise UsageError(f"the schema path {schema!r} holds control characters; run init elsewhere")
    env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True, autoescape=False)
    return env.from_string(TEMPLATE).render(schema=schema)


def _ignores_staging(text: str) -> bool:
    wanted = {STAGING_IGNORE, STAGING_IGNORE.rstrip("/"), "/" + STAGING_IGNORE, "/" + STAGING_IGNORE.rstrip("/")}
    return any(line.strip() in wanted for line in text.splitlines())


def _create(path: Path, data: bytes) -> None:
    try:
        with open(path, "xb") as fh:  # "x": never over an existing file
            fh.write(data)
    except FileExistsError:
        raise UsageError(f"{path}: already exists; init never overwrites a file (edit it, or choose another "
                         "directory)") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot write it: {e.strerror}") from None


def _ignore_staging(gitignore: Path) -> bool:
    """Append the staging directory to .gitignore unless it is there; every other line stays as it is."""
    try:
        existing = gitignore.read_bytes() if os.path.lexists(gitignore) else b""
    except OSError as e:
        raise UsageError(f"{gitignore}: cannot read it: {e.strerror}") from None
    if gitignore.is_symlink():
        raise UsageError(f"{gitignore}: is a symlink; add the line {STAGING_IGNORE} to it by hand")
    text = existing.decode("utf-8", "replace")
    if _ignores_staging(text):
        return False
    separator = "\n" if text and not text.endswith("\n") else ""
    addition = f"{separator}# left behind by a killed wasm-gitops render (the next render finishes it)\n" \
               f"{STAGING_IGNORE}\n"
    try:
        with open(gitignore, "a", encoding="utf-8", newline="\n") as fh:
            fh.write(addition)
    except OSError as e:
        raise UsageError(f"{gitignore}: cannot write it: {e.strerror}") from None
    return True


def init(directory: Path) -> Started:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory}: is not a directory; pass the directory to create {SPEC_NAME} in")
    target = directory / SPEC_NAME
    if os.path.lexists(target):
        raise UsageError(f"{target}: already exists; init never overwrites a spec (edit it, or choose "
                         "another directory)")
    schema, copy = schema_reference(directory)
    text = render_starter(schema)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"{directory}: cannot create it: {e.strerror}") from None
    _create(target, text.encode("utf-8"))
    written = [target]
    if copy:
        (directory / "schemas").mkdir(exist_ok=True)
        _create(directory / "schemas" / SCHEMA_FILE, _installed_schema())
        written.append(directory / "schemas" / SCHEMA_FILE)
    if _ignore_staging(directory / ".gitignore"):
        written.append(directory / ".gitignore")
    return Started(target, schema, tuple(written))
