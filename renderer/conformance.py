"""Validate every object the renderer is about to write, before anything touches the disk.

A problem found here is a bug in wasm-gitops, never a user error: the user's filters.yaml was
already validated, so anything malformed at this point came from our own templates.

What validates what (the SCHEMAS table below):

* Kubernetes kinds (ConfigMap, the Deployment patch) use the OpenAPI-derived JSON Schemas of
  schemas/kubernetes-<major>.<minor>.json (loaded and compiled by kubernetes_schemas), in their
  "strict" flavour (unknown fields are errors): the kinds in SCHEMAS and the definitions they reach,
  cut by scripts/kubernetes-schemas.py from kubernetes-validate's files (217 KB instead of a 108 MB
  package). The schemas do not encode the API server's own validation, so the
  rules our output can plausibly break are added here: object names, label and annotation syntax
  and size, ConfigMap keys, base64 and the 1 MiB ConfigMap limit, and the JSON inside Istio's
  sidecar.istio.io/userVolume(Mount) annotations.
* The Deployment is only ever written as a strategic-merge patch, i.e. a partial Deployment. It is
  validated against the full Deployment schema with every `required` removed rather than against a
  hand-written "pod template annotations" schema: that still rejects misplaced or misspelt keys
  anywhere in the patch (strict schema) and keeps working if the patch grows beyond annotations.
  Any object that a Kustomization in the same batch lists under `patches` is treated the same way.
* Kustomization, EnvoyFilter, WasmPlugin (Istio's and Higress's) and TrafficExtension use our own schemas in
  schemas/.

Adding a kind is one entry in SCHEMAS, e.g. for Argo CD:
    ("argoproj.io/v1alpha1", "Application"): BundledSchema("argocd-application.schema.json"),
(a Kubernetes kind, KubernetesSchema(), also needs `make kubernetes-schemas` to add its schema).
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import jsonschema_rs

from .apply_size import CONFIGMAP_LIMIT
from .files import schema_text
from .kubernetes_schemas import (
    DEFAULT_KUBERNETES_VERSION,
    definition_fast,
    definition_validator,
    fast_formats,
    format_checker,
    kind_fast,
    kind_validator,
    resolve_version,
)
from .schema_errors import json_path, kubernetes_message
from .schema_errors import short as _short

if TYPE_CHECKING:  # the Python validator is imported only when an object fails (it costs ~0.1 s)
    from jsonschema import Draft202012Validator

__all__ = [
    "DEFAULT_KUBERNETES_VERSION",
    "KUBERNETES_DEFINITIONS",
    "SCHEMAS",
    "BundledSchema",
    "KubernetesSchema",
    "OutputProblem",
    "validate_objects",
]

@dataclass(frozen=True)
class OutputProblem:
    """One way a rendered object is invalid. `name` is "namespace/name" (or just "name")."""

    file: str
    kind: str
    name: str
    json_path: str
    message: str

    def __str__(self) -> str:
        return f"BUG: {self.file}: {self.kind} {self.name}: {self.json_path}: {self.message}"


@dataclass(frozen=True)
class KubernetesSchema:
    """Validate against the strict Kubernetes schema for the object's apiVersion/kind.

    partial=True drops every `required` constraint, for objects written as strategic-merge patches.
    """

    partial: bool = False


@dataclass(frozen=True)
class BundledSchema:
    """Validate against one of our JSON Schema (draft 2020-12) files in schemas/."""

    file: str


SchemaRef = KubernetesSchema | BundledSchema

# (apiVersion, kind) -> how to validate it. An object whose pair is missing here is reported: it
# means the renderer emits a kind nobody taught the validator about.
SCHEMAS: Mapping[tuple[str, str], SchemaRef] = {
    ("v1", "ConfigMap"): KubernetesSchema(),
    ("apps/v1", "Deployment"): KubernetesSchema(partial=True),  # only ever rendered as a patch
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): BundledSchema("kustomization.schema.json"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"): BundledSchema("envoyfilter.schema.json"),
    ("extensions.istio.io/v1alpha1", "WasmPlugin"): BundledSchema("wasmplugin.schema.json"),
    ("extensions.istio.io/v1alpha1", "TrafficExtension"): BundledSchema("trafficextension.schema.json"),
    ("extensions.higress.io/v1alpha1", "WasmPlugin"): BundledSchema("higress-wasmplugin.schema.json"),
    ("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy"): BundledSchema("envoygateway-envoyextensionpolicy.schema.json"),
    ("argoproj.io/v1alpha1", "Application"): BundledSchema("argocd-application.schema.json"),
    ("argoproj.io/v1alpha1", "ApplicationSet"): BundledSchema("argocd-applicationset.schema.json"),
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): BundledSchema("flux-kustomization.schema.json"),
}

_MAX_CONFIGMAP_BYTES: Final = CONFIGMAP_LIMIT
_MAX_ANNOTATIONS_BYTES: Final = 256 * 1024  # apimachinery TotalAnnotationSizeLimitB

_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED_NAME_PART = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")

# Istio's injector reads these pod annotations as JSON: a map of name -> volume (mount), or a list.
_ISTIO_VOLUME_ANNOTATIONS: Final = {
    "sidecar.istio.io/userVolume": "io.k8s.api.core.v1.Volume",
    "sidecar.istio.io/userVolumeMount": "io.k8s.api.core.v1.VolumeMount",
}
# Definitions validated on their own, besides the kinds in SCHEMAS: the schema generator keeps them.
KUBERNETES_DEFINITIONS: Final = tuple(sorted(set(_ISTIO_VOLUME_ANNOTATIONS.values())))


def _bundled_schema_text(file: str) -> str:
    return schema_text(file)


@functools.cache
def _bundled_validator(file: str) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = json.loads(_bundled_schema_text(file))
    return Draft202012Validator(schema, format_checker=format_checker())


@functools.cache
def _bundled_fast(file: str) -> Any:
    return jsonschema_rs.Draft202012Validator(json.loads(_bundled_schema_text(file)), formats=fast_formats(),
                                              validate_formats=True)


# ---- error reporting ----------------------------------------------------------------------------

_json_path = functools.partial(json_path, quoted=True)


def _schema_problems(validator: Draft202012Validator, instance: Any) -> list[tuple[str, str]]:
    found = [(_json_path(e.absolute_path), kubernetes_message(e)) for e in validator.iter_errors(instance)]
    return sorted(set(found))


# ---- rules the OpenAPI schemas do not carry ------------------------------------------------------


def _qualified_name_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)):
        return f"key {key!r}: prefix must be a DNS-1123 subdomain"
    if len(name) > 63 or not _QUALIFIED_NAME_PART.fullmatch(name):
        return f"key {key!r}: name part must be at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _metadata_problems(metadata: Any, path: tuple[str | int, ...], *, top_level: bool) -> Iterator[tuple[str, str]]:
    if not isinstance(metadata, Mapping):
        if top_level:
            yield _json_path(path), "metadata is required"
        return
    if top_level:
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            yield _json_path((*path, "name")), "metadata.name is required (kustomize identifies objects and patches by it)"
        elif len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
            yield _json_path((*path, "name")), f"{name!r} is not a DNS-1123 subdomain (lower-case alphanumerics, '-', '.')"
        namespace = metadata.get("namespace")
        if isinstance(namespace, str) and (len(namespace) > 63 or not _DNS1123_LABEL.fullmatch(namespace)):
            yield _json_path((*path, "namespace")), f"{namespace!r} is not a DNS-1123 label"
    labels = metadata.get("labels")
    if isinstance(labels, Mapping):
        for key, value in labels.items():
            problem = _qualified_name_problem(str(key))
            if problem:
                yield _json_path((*path, "labels", str(key))), problem
            if isinstance(value, str) and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
                yield _json_path((*path, "labels", str(key))), f"label value {_short(value)} is not valid (at most 63 alphanumerics, '-', '_', '.')"
    annotations = metadata.get("annotations")
    if isinstance(annotations, Mapping):
        total = 0
        for key, value in annotations.items():
            problem = _qualified_name_problem(str(key))
            if problem:
                yield _json_path((*path, "annotations", str(key))), problem
            if isinstance(value, str):
                total += len(str(key).encode()) + len(value.encode())
        if total > _MAX_ANNOTATIONS_BYTES:
            yield _json_path((*path, "annotations")), f"annotations total {total} bytes; the API server allows {_MAX_ANNOTATIONS_BYTES}"


def _null_problems(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[str, str]]:
    # The Kubernetes schemas allow null nearly everywhere, but in our output a null is always a
    # template slip, and in a strategic-merge patch it deletes the target's field.
    if node is None:
        yield _json_path(path), "null value (a strategic-merge patch would delete this field)"
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _null_problems(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _null_problems(value, (*path, index))


def _configmap_problems(obj: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    data = obj.get("data")
    binary = obj.get("binaryData")
    data = data if isinstance(data, Mapping) else {}
    binary = binary if isinstance(binary, Mapping) else {}
    total = 0
    for field, bag in (("data", data), ("binaryData", binary)):
        for key, value in bag.items():
            key = str(key)
            if (len(key) > 253 or not _CONFIGMAP_KEY.fullmatch(key) or key in (".", "..") or key.startswith("..")):
                yield _json_path((field, key)), f"{key!r} is not a valid ConfigMap key (alphanumerics, '-', '_', '.'; not '.', '..' or '..*')"
            if field == "data" and key in binary:
                yield _json_path((field, key)), "duplicate of a key present in binaryData"
            if isinstance(value, str):
                if field == "data":
                    total += len(value.encode())
                else:
                    padding = len(value) - len(value.rstrip("="))
                    total += len(value) * 3 // 4 - padding
    if total > _MAX_CONFIGMAP_BYTES:
        yield "$", f"ConfigMap holds {total} bytes of data; the API server rejects more than {_MAX_CONFIGMAP_BYTES} (1 MiB)"


def _istio_volume_annotation_problems(annotations: Any, path: tuple[str | int, ...],
                                      version: tuple[int, int]) -> Iterator[tuple[str, str]]:
    if not isinstance(annotations, Mapping):
        return
    for annotation, definition in _ISTIO_VOLUME_ANNOTATIONS.items():
        raw = annotations.get(annotation)
        if not isinstance(raw, str):
            continue
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield _json_path((*path, annotation)), f"not valid JSON: {exc.msg} at character {exc.pos}"
            continue
        if isinstance(parsed, dict):
            # Map form: the key is the volume name (Istio's injection template writes `name: <key>`).
            items = [(str(k), {**v, "name": k} if isinstance(v, dict) else v) for k, v in parsed.items()]
        elif isinstance(parsed, list):
            items = [(str(i), v) for i, v in enumerate(parsed)]
        else:
            yield _json_path((*path, annotation)), "must be a JSON object (name -> spec) or array"
            continue
        fast = definition_fast(definition, version)
        for label, item in items:
            if fast.is_valid(item):
                continue
            for error in definition_validator(definition, version).iter_errors(item):
                inner = _json_path(error.absolute_path)[1:]
                yield _json_path((*path, annotation)), f"[{label}]{inner}: {kubernetes_message(error)}"


def _has_null(node: Any) -> bool:
    # The common answer is "no", found without building a path per node (4,000 objects a render).
    if node is None:
        return True
    if isinstance(node, dict):
        return any(map(_has_null, node.values()))
    if isinstance(node, list):
        return any(map(_has_null, node))
    return isinstance(node, Mapping) and any(map(_has_null, node.values()))


def _kubernetes_extra_problems(obj: Mapping[str, Any], version: tuple[int, int]) -> Iterator[tuple[str, str]]:
    if _has_null(obj):
        yield from _null_problems(obj, ())
    yield from _metadata_problems(obj.get("metadata"), ("metadata",), top_level=True)
    if obj.get("kind") == "ConfigMap":
        yield from _configmap_problems(obj)
    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    if isinstance(template, Mapping) and isinstance(template.get("metadata"), Mapping):
        template_path = ("spec", "template", "metadata")
        yield from _metadata_problems(template["metadata"], template_path, top_level=False)
        yield from _istio_volume_annotation_problems(template["metadata"].get("annotations"),
                                                     (*template_path, "annotations"), version)


# ---- driver ---------------------------------------------------------------------------------------


def _display_name(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return "<unnamed>"
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata['name']}" if isinstance(namespace, str) else metadata["name"]


def _patch_files(objects: Sequence[tuple[str, Mapping[str, Any]]]) -> frozenset[str]:
    """Files some Kustomization of this batch uses as patches: they hold partial objects."""
    found = set()
    for file, obj in objects:
        if not isinstance(obj, Mapping) or obj.get("kind") != "Kustomization" or not isinstance(obj.get("patches"), list):
            continue
        for entry in obj["patches"]:
            if isinstance(entry, Mapping) and isinstance(entry.get("path"), str):
                found.add(posixpath.normpath(posixpath.join(posixpath.dirname(file), entry["path"])))
    return frozenset(found)


def _validate_one(file: str, obj: Any, version: tuple[int, int], patch_files: frozenset[str]) -> list[OutputProblem]:
    if not isinstance(obj, Mapping):
        return [OutputProblem(file, "?", "<unnamed>", "$", f"expected a mapping, got {type(obj).__name__}")]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    name = _display_name(obj)
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [OutputProblem(file, str(kind or "?"), name, "$", "apiVersion and kind must be strings")]
    ref = SCHEMAS.get((api_version, kind))
    if ref is None:
        return [OutputProblem(file, kind, name, "$",
                              f"no schema registered for {api_version} {kind} (add it to conformance.SCHEMAS)")]
    found: list[tuple[str, str]]
    if isinstance(ref, KubernetesSchema):
        partial = ref.partial or posixpath.normpath(file) in patch_files
        try:
            fast_ok = kind_fast(api_version, kind, version, partial).is_valid(obj)
        except LookupError as exc:
            return [OutputProblem(file, kind, name, "$.apiVersion", str(exc))]
        found = [] if fast_ok else _schema_problems(kind_validator(api_version, kind, version, partial), obj)
        found += sorted(set(_kubernetes_extra_problems(obj, version)) - set(found))
    else:
        found = [] if _bundled_fast(ref.file).is_valid(obj) else _schema_problems(_bundled_validator(ref.file), obj)
    return [OutputProblem(file, kind, name, path, message) for path, message in found]


# What every render writes: compiled ahead by warm_up(). Argo CD and Flux objects, when asked for,
# are compiled on first use.
_ALWAYS_BUNDLED: Final = ("kustomization.schema.json", "envoyfilter.schema.json", "wasmplugin.schema.json")


def warm_up(kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> None:
    """Compile the validators a render needs before it has objects (~0.05 s): done while a helper
    reads the workloads, so that the helper planning overlays later inherits them instead of
    compiling its own."""
    version = resolve_version(kubernetes_version)
    for (api_version, kind), ref in SCHEMAS.items():
        if isinstance(ref, KubernetesSchema):
            kind_fast(api_version, kind, version, ref.partial)
        elif ref.file in _ALWAYS_BUNDLED:
            _bundled_fast(ref.file)
    for definition in _ISTIO_VOLUME_ANNOTATIONS.values():
        definition_fast(definition, version)


def validate_objects(objects: Sequence[tuple[str, Mapping[str, Any]]],
                     kubernetes_version: str = DEFAULT_KUBERNETES_VERSION) -> list[OutputProblem]:
    """Check every (output file, object) pair; an empty list means everything may be written.

    Raises ValueError if kubernetes_version is not one schemas/ has schemas for.
    """
    version = resolve_version(kubernetes_version)
    patch_files = _patch_files(objects)
    problems: list[OutputProblem] = []
    for file, obj in objects:
        problems.extend(_validate_one(file, obj, version, patch_files))
    return problems
