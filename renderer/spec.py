"""filters.yaml -> validated FilterSet: YAML with positions, the JSON Schema, then the meaning.

Every problem found is collected as a Finding with file:line:col and reported at once.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import jsonschema_rs

from . import config_schema, gateway_checks, istio_versions, parallel
from .build import BuildTarget
from .errors import Finding, SpecError, UsageError
from .files import NotAFile, TooLarge, is_within, read_file, schema_text
from .model import (
    DEFAULT_KUBERNETES,
    DEFAULT_RUNTIME,
    ArgoCD,
    Binary,
    Build,
    Cluster,
    Filter,
    FilterSet,
    Flux,
    FluxSourceRef,
    Gateway,
    GatewayFilter,
    GatewayRule,
    GitOps,
    HttpMessageSpec,
    ImageRef,
    LocalReplySpec,
    OutputKind,
    Service,
    ServiceFilter,
    TestExpect,
    TestSpec,
)
from .wasm import CLIENT_SIDE_APPLY_LIMIT, CONFIGMAP_LIMIT, MODULE_LIMIT, WasmReport, inspect_wasm
from .workloads import KUSTOMIZATION_NAMES, PathProblem, WorkloadReader, inside, inside_stat, is_remote
from .yamlio import MAX_SPEC_BYTES, Document, SpecSyntaxError, json_path, load_document

if TYPE_CHECKING:  # the lock (and the OCI module under it) is imported only by specs with images
    from .lockfile import LockEntry

SCHEMA_FILE = "filters.schema.json"


@cache
def load_schema(name: str = SCHEMA_FILE) -> dict[str, Any]:
    return json.loads(schema_text(name))


@cache
def _validator() -> Any:
    import jsonschema  # only an invalid spec needs it (and its import costs ~0.1 s)

    schema = load_schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


@dataclass(frozen=True)
class LoadedSpec:
    filter_set: FilterSet
    warnings: tuple[Finding, ...]
    # The parsed document, for findings that later stages place in filters.yaml.
    document: Document | None = field(default=None, repr=False, compare=False)


def read_spec_text(spec_path: Path, display: str) -> bytes:
    try:
        return read_file(os.fspath(spec_path), MAX_SPEC_BYTES)
    except FileNotFoundError:
        raise UsageError(f"{spec_path}: no such file; create one with 'wasm-gitops init'") from None
    except IsADirectoryError:
        raise UsageError(f"{spec_path}: is a directory; pass the spec file with -f") from None
    except NotAFile as e:
        raise UsageError(f"{spec_path}: is {e.kind}, not a file; pass the spec file with -f") from None
    except TooLarge as e:
        raise SpecError([Finding(display, 1, 1, f"file is {e.size:,} bytes, more than the "
                                 f"{MAX_SPEC_BYTES:,} accepted; split or shorten it")]) from None
    except OSError as e:
        raise UsageError(f"{spec_path}: cannot read it: {e.strerror}") from None


def parse(spec_path: Path, display: str | None = None) -> Document:
    name = display or spec_path.name
    text = read_spec_text(spec_path, name)
    try:
        return load_document(text, name)
    except SpecSyntaxError as e:
        raise SpecError(e.findings) from None


# --------------------------------------------------------------------------------- schema findings

def _where(path: Iterable[str | int]) -> str:
    text = json_path(path)
    return "the document" if text == "$" else text.removeprefix("$.")


def _describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


_TYPE_WORDS = {"object": "a map", "array": "a list", "string": "a string", "integer": "a whole number",
               "boolean": "true or false", "number": "a number", "null": "empty"}


@cache
def _fast_validator() -> Any:
    return jsonschema_rs.validator_for(load_schema())


def _schema_findings(doc: Document) -> list[Finding]:
    # jsonschema-rs answers "valid?" ~100x faster; only an invalid spec pays for the Python
    # validator, whose errors carry the paths we turn into positions.
    if _fast_validator().is_valid(doc.data):
        return []
    out: list[Finding] = []
    for error in _validator().iter_errors(doc.data):
        out.extend(_explain(doc, error))
    return out


def _explain(doc: Document, error: Any) -> Iterator[Finding]:
    path = tuple(error.absolute_path)
    where = _where(path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    inst = error.instance
    if kind == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(schema.get("properties", {}))
        for key in sorted(set(inst) - set(allowed)):
            guess = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else (
                f"allowed here: {', '.join(allowed)}" if allowed else "remove it")
            yield doc.finding(path + (key,), f"unknown key {key!r} in {where}; {hint}", key=True)
    elif kind == "required" and isinstance(inst, dict):
        for key in error.validator_value:
            if key not in inst:
                yield doc.finding(path, f"{where} is missing the required key {key!r}; add it")
    elif kind == "type":
        want = error.validator_value
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in (want if isinstance(want, list) else [want]))
        hint = ""
        if want == "string" and isinstance(inst, (int, float, bool)) and not isinstance(inst, bool):
            hint = f"; quote it: \"{inst}\""
        elif want == "string" and isinstance(inst, bool):
            hint = "; quote it"
        yield doc.finding(path, f"{where} must be {words}, not {_describe(inst)}{hint}")
    elif kind == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        yield doc.finding(path, f"{where}: {inst!r} is not allowed; use one of: {options}")
    elif kind == "const":
        yield doc.finding(path, f"{where} must be {error.validator_value!r}, not {inst!r}")
    elif kind in ("pattern", "maxLength", "minLength") and "x-hint" in schema:
        yield doc.finding(path, f"{where}: {inst!r} is not {schema['x-hint']}; fix the value")
    elif kind == "minLength":
        yield doc.finding(path, f"{where} must not be empty")
    elif kind == "minItems":
        n = error.validator_value
        yield doc.finding(path, f"{where} must list at least {n} item{'s' if n != 1 else ''}")
    elif kind == "minProperties":
        yield doc.finding(path, f"{where} must not be empty; remove it or add entries")
    elif kind == "propertyNames" and isinstance(inst, dict):
        for sub in error.context or []:
            name = sub.instance
            if isinstance(name, str):
                yield doc.finding(path + (name,), f"{name!r} is not a valid key in {where}; "
                                  "use a Kubernetes label key (prefix/name) or a component name",
                                  key=True)
    elif kind == "oneOf":
        # The two shapes of a service's filter entry: explain against the branch the user meant.
        branch = 0 if isinstance(inst, str) else 1
        subs = [s for s in error.context or [] if s.relative_schema_path and s.relative_schema_path[0] == branch]
        if isinstance(inst, (str, dict)) and subs:
            for sub in subs:
                yield from _explain(doc, sub)
        else:
            yield doc.finding(path, f"{where} must be a filter name or a map with 'name' (and "
                              f"'config'), not {_describe(inst)}")
    elif kind in ("minimum", "maximum"):
        yield doc.finding(path, f"{where}: {inst} is out of range ({kind} {error.validator_value})")
    elif kind == "anyOf" and "x-message" in schema:
        yield doc.finding(path, f"{where}: {schema['x-message']}")
    elif kind == "dependentRequired" and isinstance(inst, dict):
        for key, needs in error.validator_value.items():
            for need in needs if key in inst else ():
                if need not in inst:
                    yield doc.finding(path + (key,), f"{where}.{key} needs {need!r} in {where}; add it", key=True)
    else:
        yield doc.finding(path, f"{where}: {error.message}")


# --------------------------------------------------------------------------------- meaning

# Kubernetes' own label syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue): what the
# API server refuses in a workloadSelector or matchLabels, refused here where the label comes from.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE_RULE = ("at most 63 characters, alphanumeric, '-', '_' or '.', starting and ending with an "
                     "alphanumeric character, or empty")


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
        return f"{value!r} is not a valid Kubernetes label value ({_LABEL_VALUE_RULE})"
    return None


def label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{key!r} is not a valid Kubernetes label key (its prefix must be a DNS subdomain)"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (f"{key!r} is not a valid Kubernetes label key (the name after any prefix/ is 1 to 63 "
                "characters, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric)")
    return None


def _path_text_problem(what: str, text: str) -> str | None:
    """Whitespace a path can hold on disk but that our output refuses to carry (leading or trailing
    whitespace is invisible in a review; a tab or newline in a path is a typo, not a directory)."""
    if "\\" in text:
        return (f"{what} {text!r} holds a backslash; separate directories with '/' (kustomize reads a "
                "backslash as part of a name, and Windows checkouts as a separator)")
    norm = posixpath.normpath(text)  # as the overlay names it: "apps/x /" ends in a space there
    if text != text.strip() or norm != norm.strip() or any(c in text for c in "\t\n\r\f\v"):
        return (f"{what} {text!r} has leading, trailing or non-space whitespace; remove it (rename the "
                "directory if it really has such a name)")
    return None


def _config_text(doc: Document, path: tuple[str | int, ...], value: Any,
                 findings: list[Finding]) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except ValueError:
        findings.append(doc.finding(path, f"{_where(path)} holds .inf or .nan, which JSON cannot carry; "
                                    "use a string or a finite number"))
        return None


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _headers(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in (raw or {}).items())


def _message(raw: Any) -> HttpMessageSpec:
    raw = raw or {}
    return HttpMessageSpec(_headers(raw.get("headers")), raw.get("body"), _headers(raw.get("trailers")),
                           raw.get("chunks"))


def _expect(raw: dict[str, Any]) -> TestExpect:
    reply = raw.get("localReply")
    return TestExpect(
        request_headers=_headers(raw.get("requestHeaders")),
        response_headers=_headers(raw.get("responseHeaders")),
        absent_request_headers=tuple(str(h) for h in raw.get("absentRequestHeaders", ())),
        absent_response_headers=tuple(str(h) for h in raw.get("absentResponseHeaders", ())),
        local_reply=LocalReplySpec(int(reply["status"]), reply.get("body")) if reply else None,
        paused=raw.get("paused", "none"),
        logs=tuple(raw.get("logs", ())),
        request_body=raw.get("requestBody"),
        response_body=raw.get("responseBody"),
        status=raw.get("status"),
        config_rejected=bool(raw.get("configRejected", False)),
    )


class _Checker:
    def __init__(self, doc: Document, spec_path: Path, inspect: bool,
                 meanwhile: Callable[[], None] | None = None, out: Path | None = None) -> None:
        self.doc = doc
        self.spec_path = spec_path
        self.root = spec_path.parent.resolve()
        self.inspect = inspect
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self.reader = WorkloadReader(self.root)
        # The output tree (render's default; load_spec's `out` when the caller knows another):
        # resources must never load what it writes.
        self.out = os.path.realpath(out) if out is not None else os.fspath(self.root)
        self.outputs = [os.path.join(self.out, name) for name in
                        ("base", "overlays", "gitops", ".wasm-gitops.tmp", *KUSTOMIZATION_NAMES,
                          # A fleet's trees and entry points; without clusters, clusters/ may hold anything.
                          *(("trees", "clusters") if doc.data.get("clusters") else ()))]
        self.resource_dirs: dict[str, Path | str | None] = {}
        self.to_inspect: list[tuple[tuple[str | int, ...], dict[str, Any], str, bytes]] = []
        self.meanwhile = meanwhile
        self.broken_filters: set[str] = set()
        self.raw_filters: list[dict[str, Any]] = doc.data.get("filters", [])
        # First declaration wins, as in filters(): later duplicates are reported there.
        self.filter_index = {raw["name"]: i for i, raw in reversed(list(enumerate(self.raw_filters)))}
        self.lock_file = spec_path.with_suffix(".lock")  # lockfile.lock_path, without importing it
        self._lock: dict[str, LockEntry] | None = None
        self._lock_read = False
        self._lock_broken = False
        self.kubernetes = (1, 33)

    def error(self, path: tuple[str | int, ...], message: str, *, key: bool = False) -> None:
        self.errors.append(self.doc.finding(path, message, key=key))

    def warn(self, path: tuple[str | int, ...], message: str) -> None:
        self.warnings.append(self.doc.finding(path, message, severity="warning"))

    def run(self) -> FilterSet | None:
        data = self.doc.data
        istio_text: str = data["istio"]
        version = istio_versions.parse_version(istio_text)
        if version is None or version < (1, 5) or version[0] != 1:
            self.error(("istio",), f"istio: {istio_text!r} has no Wasm support this tool can render "
                       "(Wasm filters arrived in Istio 1.5); target 1.5 or later")
            version = (1, 99)
        top_output = (data.get("output") or {}).get("kind", "EnvoyFilter")
        kubernetes_text = data.get("kubernetes", DEFAULT_KUBERNETES)
        self.kubernetes = istio_versions.parse_version(kubernetes_text) or (1, 33)
        filters = self.filters(data.get("filters", []), version)
        inspection = self.inspect_binaries()
        try:
            services = self.services(data.get("services", []), filters, version, top_output)
            gateways = self.gateways(data.get("gateways", []), filters, version)
            gitops = self.gitops(data["gitops"]) if "gitops" in data else None
            clusters = self.clusters(data.get("clusters", []), services, gitops)
            if gateways and clusters:
                # A fleet's trees hold its services' filter objects; gateways have no place in them yet.
                self.error(("gateways",), "gateways cannot be combined with clusters yet: render the gateways "
                           "from a spec of their own, or remove clusters")
            if inspection is not None:
                self.module_findings(inspection.result())
        finally:
            if inspection is not None:
                inspection.cancel()  # nothing left to do once result() has run
        if self.errors:
            return None
        return FilterSet(self.spec_path, self.root, version, istio_text,
                         tuple(filters.values()), tuple(services), gitops=gitops, kubernetes=self.kubernetes,
                         gateways=tuple(gateways), clusters=tuple(clusters))

    # ------------------------------------------------------------------ gateways
    def gateways(self, raw_gateways: list[dict[str, Any]], filters: dict[str, Filter],
                 version: tuple[int, int]) -> list[Gateway]:
        out: list[Gateway] = []
        services = {raw["name"] for raw in self.doc.data.get("services", [])}
        names: set[str] = set()
        for i, raw in enumerate(raw_gateways):
            p: tuple[str | int, ...] = ("gateways", i)
            name = raw["name"]
            if name in names:
                self.error(p + ("name",), f"gateway name {name!r} is used twice; gateway names must be unique "
                           "(each names an overlay)")
                continue
            names.add(name)
            if name in services:
                self.error(p + ("name",), f"gateway name {name!r} is also a service's name, and both would be "
                           f"overlays/{name}/; rename one")
            chosen: list[GatewayFilter] = []
            seen: set[str] = set()
            for j, entry in enumerate(raw["filters"]):
                fp = p + ("filters", j)
                gf = self.gateway_filter(fp, entry, filters, seen, raw["controlPlane"])
                if gf is not None:
                    chosen.append(gf)
            out.append(gateway_checks.gateway(raw, p, self, chosen, self.tests(p, raw, "gateway"), version,
                                              (self.doc.data.get("output") or {}).get("kind", "EnvoyFilter")))
        return out

    def gateway_filter(self, fp: tuple[str | int, ...], entry: str | dict[str, Any], filters: dict[str, Filter],
                       seen: set[str], plane: str = "higress") -> GatewayFilter | None:
        raw = {"name": entry} if isinstance(entry, str) else entry
        npath = fp if isinstance(entry, str) else fp + ("name",)
        fname = raw["name"]
        if fname in self.broken_filters:
            return None
        if fname not in filters:
            known = sorted(filters)
            guess = difflib.get_close_matches(fname, known, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else f"declared: {', '.join(known) or 'none'}"
            self.error(npath, f"unknown filter {fname!r}; {hint}")
            return None
        if fname in seen:
            self.error(npath, f"filter {fname!r} is listed twice for this gateway; list it once")
            return None
        seen.add(fname)
        f = filters[fname]
        if f.oci_url is None:
            # A gateway is not a workload this tree patches: nothing mounts a ConfigMap into it.
            self.error(npath, f"filter {fname!r} is not delivered as an image, and {gateway_checks.A[plane]} gateway "
                       "pulls its modules from a registry: give the filter image: and delivery: oci, and run 'wasm-gitops "
                       f"push {fname}' (or point wasm at an oci:// reference)")
            return None
        config = f.config
        cpath: tuple[str | int, ...] = ("filters", self.filter_index[fname], "config")
        if "config" in raw:
            cpath = fp + ("config",)
            config = _config_text(self.doc, cpath, raw["config"], self.errors)
            if f.config_schema is not None:
                self.check_config(cpath, raw, "config", f.config_schema)
        if config is not None and gateway_checks.needs_map(plane) and not _is_json_object(config):
            self.error(cpath, gateway_checks.NOT_A_MAP[plane][0])
        rules: list[GatewayRule] = []
        for k, rule in enumerate(raw.get("rules", [])):
            rp = fp + ("rules", k)
            text = _config_text(self.doc, rp + ("config",), rule["config"], self.errors)
            if text is None and rule["config"] is not None:
                continue  # .inf or .nan: reported by _config_text
            if text is None or (gateway_checks.needs_map(plane) and not _is_json_object(text)):
                self.error(rp + ("config",), gateway_checks.NOT_A_MAP[plane][1])
                continue
            if f.config_schema is not None:
                self.check_config(rp + ("config",), rule, "config", f.config_schema)
            rules.append(GatewayRule(tuple(rule.get("domain", ())), tuple(rule.get("ingress", ())),
                                     tuple(rule.get("service", ())), text, tuple(rule.get("httpRoute", ()))))
        global_ = bool(raw.get("global", True))
        if not global_ and not raw.get("rules"):
            self.error(fp + ("global",), "global: false runs the filter only where a rule matches, and there are "
                       "no rules: add rules or remove the filter from this gateway")
        return GatewayFilter(f, config if global_ else None, global_, tuple(rules))

    # ------------------------------------------------------------------ gitops
    def gitops(self, raw: dict[str, Any]) -> GitOps:
        name = raw.get("name", "wasm-filters")
        path = raw.get("path")
        if path is not None:
            parts = PurePosixPath(path).parts
            if path.startswith("/") or ".." in parts or "\\" in path:
                self.error(("gitops", "path"), f"gitops.path {path!r} must be a '/'-separated path relative to "
                           "the repository root, without '..'; fix it")
            elif any(c.isspace() for c in path):
                self.error(("gitops", "path"), f"gitops.path {path!r} holds whitespace, which wasm-gitops "
                           "does not write into Argo CD or Flux paths; rename the directory")
            path = posixpath.normpath(path)
        else:
            self.path_hint()
        argocd = flux = None
        per_service: list[str] = []
        if "argocd" in raw:
            a = raw["argocd"]
            argocd = ArgoCD(a.get("mode", "Application"), a.get("namespace", "argocd"), a.get("project", "default"),
                            a.get("destinationServer", "https://kubernetes.default.svc"), a.get("automated", True),
                            tuple((a.get("maxUpdate") or {}).items()))
            if argocd.mode == "ApplicationSet":
                per_service.append("Argo CD Application")
        if "flux" in raw:
            f = raw["flux"]
            ref = f.get("sourceRef", {"name": "flux-system"})
            flux = Flux(f.get("mode", "Kustomization"), f.get("namespace", "flux-system"),
                        FluxSourceRef(ref.get("kind", "GitRepository"), ref["name"], ref.get("namespace")),
                        f.get("interval", "10m"))
            if flux.mode == "PerService":
                per_service.append("Flux Kustomization")
        if per_service:
            # Controllers label what they apply with their object's name (Argo CD's instance label,
            # Flux's kustomize.toolkit.fluxcd.io/name): a label value holds 63 characters.
            what = " and ".join(per_service)
            if len(f"{name}-base") > 63:
                self.error(("gitops", "name"), f"the {what} for base/ would be named {name}-base, more than 63 "
                           "characters; shorten gitops.name")
            for i, service in enumerate(self.doc.data.get("services", [])):
                sname = service["name"]
                if sname == "base":
                    self.error(("services", i, "name"), f"service name 'base' collides with the {what} for base/ "
                               f"({name}-base); rename the service")
                elif len(f"{name}-{sname}") > 63:
                    self.error(("services", i, "name"), f"the {what} for this service would be named "
                               f"{name}-{sname}, more than 63 characters; shorten the service name or gitops.name")
            for i, gateway in enumerate(self.doc.data.get("gateways", [])):
                if gateway["name"] == "base" or len(f"{name}-{gateway['name']}") > 63:
                    self.error(("gateways", i, "name"), f"the {what} for this gateway would be named "
                               f"{name}-{gateway['name']}, which collides with base/'s or has more than 63 "
                               "characters; rename the gateway or shorten gitops.name")
        return GitOps(name, raw.get("repoURL"), raw.get("targetRevision", "HEAD"), path, argocd, flux)

    # ------------------------------------------------------------------ clusters
    def clusters(self, raw_clusters: list[dict[str, Any]], services: list[Service],
                 gitops: GitOps | None) -> list[Cluster]:
        found: list[Cluster] = []
        by_name = {s.name: s for s in services}
        raw_services = {raw["name"]: raw for raw in self.doc.data.get("services", [])}
        top_output: OutputKind = (self.doc.data.get("output") or {}).get("kind", "EnvoyFilter")
        names: set[str] = set()
        selectors: dict[tuple[tuple[str, str], ...], str] = {}
        for i, raw in enumerate(raw_clusters):
            p: tuple[str | int, ...] = ("clusters", i)
            name = raw["name"]
            if name in names:
                self.error(p + ("name",), f"cluster name {name!r} is used twice; cluster names must be unique "
                           "(each names its directory clusters/<name>/ and its Argo CD Applications)")
                continue
            names.add(name)
            istio_text = raw.get("istio", self.doc.data["istio"])
            ipath = p + ("istio",) if "istio" in raw else ("istio",)
            version = istio_versions.parse_version(istio_text)
            if version is None or version < (1, 5) or version[0] != 1:
                self.error(ipath, f"istio: {istio_text!r} has no Wasm support this tool can render (Wasm "
                           "filters arrived in Istio 1.5); target 1.5 or later")
                continue
            labels = tuple(sorted(raw["labels"].items()))
            if not raw["labels"]["wave"]:
                self.error(p + ("labels", "wave"), f"cluster {name!r} has an empty wave; name its rollout wave "
                           "(e.g. wave: canary)")
            for key, _ in labels:
                problem = label_key_problem(key)
                if problem:
                    self.error(p + ("labels", key), f"label key {key!r} {problem}", key=True)
            if labels in selectors:
                self.error(p + ("labels",), f"cluster {name!r} has the same labels as cluster "
                           f"{selectors[labels]!r}, so Argo CD would select the same clusters for both; give "
                           "each cluster a label of its own (e.g. cluster: <name>)")
            selectors.setdefault(labels, name)
            run = raw.get("services", [s.name for s in services])
            cluster_output = (raw.get("output") or {}).get("kind", top_output)
            outputs: list[tuple[str, OutputKind]] = []
            first_error = len(self.errors)
            for j, sname in enumerate(run):
                sp = p + ("services", j)
                if sname not in by_name:
                    if sname in raw_services:
                        continue  # the service itself is refused where it is declared
                    guess = difflib.get_close_matches(sname, sorted(raw_services), n=1)
                    hint = f"did you mean {guess[0]!r}?" if guess else \
                        f"declared: {', '.join(sorted(raw_services)) or 'none'}"
                    self.error(sp, f"unknown service {sname!r} in cluster {name!r}; {hint}")
                    continue
                if sname in dict(outputs):
                    self.error(sp, f"service {sname!r} is listed twice for cluster {name!r}; list it once")
                    continue
                service_raw = raw_services[sname]
                output: OutputKind = (service_raw.get("output") or {}).get("kind", cluster_output)
                opath = p + ("output", "kind") if "output" in raw and "output" not in service_raw else ipath
                self.cluster_gates(opath, name, istio_text, version, by_name[sname], output)
                outputs.append((sname, output))
            # What the cluster's Istio cannot render is said once, however many services it stops.
            self.errors[first_error:] = list(dict.fromkeys(self.errors[first_error:]))
            found.append(Cluster(name, version, istio_text, labels, tuple(outputs)))
        if raw_clusters:
            running = {name for c in found for name in c.services}
            for i, raw_service in enumerate(self.doc.data.get("services", [])):
                if raw_service["name"] in by_name and raw_service["name"] not in running:
                    self.warn(("services", i, "name"), f"service {raw_service['name']!r} runs in no cluster, so nothing is "
                              "rendered for it; add it to a cluster's services or remove it")
        raw_gitops = self.doc.data.get("gitops") or {}
        for controller, key, why in (("argocd", "mode", "a fleet gets one RollingSync ApplicationSet"),
                                     ("argocd", "automated", "RollingSync syncs each wave itself and turns "
                                      "automated sync off"),
                                     ("flux", "mode", "a fleet gets one Kustomization per cluster")):
            if raw_clusters and key in (raw_gitops.get(controller) or {}):
                self.warn(("gitops", controller, key), f"{key} has no effect with clusters: {why} "
                          "(docs/gitops.md); remove it")
        if gitops is not None and gitops.argocd is not None:
            waves = {c.wave for c in found}
            for wave, _ in gitops.argocd.max_update:
                if raw_clusters and wave not in waves:
                    self.error(("gitops", "argocd", "maxUpdate", wave), f"no cluster is in wave {wave!r}; "
                               f"waves: {', '.join(sorted(waves)) or 'none'}", key=True)
                elif not raw_clusters:
                    self.error(("gitops", "argocd", "maxUpdate"), "maxUpdate paces the waves of clusters; "
                               "the spec has no clusters: remove it or add clusters", key=True)
        return found

    def cluster_gates(self, path: tuple[str | int, ...], cluster: str, istio_text: str,
                      version: tuple[int, int], service: Service, output: OutputKind) -> None:
        """What the cluster's Istio cannot render for a service it runs, where the cluster says it."""
        where = f"service {service.name!r} in cluster {cluster!r} (Istio {istio_text})"
        if output == "WasmPlugin" and not istio_versions.supports(version, "WasmPlugin"):
            self.error(path, f"cluster {cluster!r} (Istio {istio_text}): WasmPlugin needs Istio 1.12 or later; "
                       "use output kind EnvoyFilter for this cluster or raise its istio")
        elif output == "TrafficExtension" and not istio_versions.supports(version, "TrafficExtension"):
            self.error(path, f"cluster {cluster!r} (Istio {istio_text}): TrafficExtension needs Istio 1.30 or "
                       "later; use output kind WasmPlugin for this cluster or raise its istio")
        elif output != "EnvoyFilter":
            if service.context == "SIDECAR_OUTBOUND" and not istio_versions.supports(version, "WasmPlugin.match"):
                self.error(path, f"{where}: a WasmPlugin for SIDECAR_OUTBOUND needs match.mode CLIENT (Istio "
                           "1.16); raise its istio or use output kind EnvoyFilter for this cluster")
            if any(sf.filter.fail_open for sf in service.filters) and \
                    not istio_versions.supports(version, "WasmPlugin.failStrategy"):
                self.error(path, f"{where}: failOpen for a WasmPlugin needs failStrategy (Istio 1.19); raise "
                           "its istio or use output kind EnvoyFilter for this cluster")
        for sf in service.filters:
            f = sf.filter
            if output == "EnvoyFilter" and (f.binary.is_oci or f.delivery == "oci"):
                self.error(path, f"{where}: filter {f.name!r} is an image istio-agent pulls, which an "
                           "EnvoyFilter cannot ask for; set output kind WasmPlugin or TrafficExtension for "
                           "this cluster")
            if f.delivery == "imageVolume" and not istio_versions.supports(version, "injection.imageVolume"):
                self.error(path, f"{where}: filter {f.name!r} is mounted as an image volume, which this "
                           "Istio's injector does not know; raise its istio or use delivery oci")

    def path_hint(self) -> None:
        """Argo CD and Flux read paths from the repository root; the default assumes filters.yaml is there."""
        for parent in (self.root, *self.root.parents):
            if (parent / ".git").exists():
                if parent != self.root:
                    inner = self.root.relative_to(parent).as_posix()
                    self.warnings.append(self.doc.finding(
                        ("gitops",), f"filters.yaml is in {inner}/ of the Git repository {parent}, but gitops.path "
                        "defaults to the output directory relative to filters.yaml; set "
                        f"path: {inner} (or where --out writes, from the repository root)", key=True, severity="warning"))
                return

    # ------------------------------------------------------------------ filters
    def filters(self, raw_filters: list[dict[str, Any]], version: tuple[int, int]) -> dict[str, Filter]:
        out: dict[str, Filter] = {}
        by_path: dict[Path, str] = {}
        for i, raw in enumerate(raw_filters):
            p: tuple[str | int, ...] = ("filters", i)
            name = raw["name"]
            if name in out or name in self.broken_filters:
                self.error(p + ("name",), f"filter name {name!r} is used twice; filter names must be unique")
                continue
            delivery = raw.get("delivery", "oci" if "image" in raw else "configMap")
            binary = self.binary(p, raw, configmap=delivery == "configMap")
            if binary is None:
                self.broken_filters.add(name)  # reported once, at its wasm; not again at each use
                continue
            shared = binary.path if delivery == "configMap" else None  # only ConfigMaps are per filter
            if shared is not None and shared in by_path:
                self.warn(p + ("wasm",), f"filter {name!r} uses the same file as {by_path[shared]!r}; "
                          "it gets a ConfigMap of its own")
            if shared is not None:
                by_path.setdefault(shared, name)
            build = None
            if "build" in raw:
                try:
                    ctx = inside(self.root, raw["build"]["context"], "build context")
                    if not ctx.is_dir():
                        self.error(p + ("build", "context"), f"build context {raw['build']['context']!r} is "
                                   "not a directory; point it at the filter's source directory")
                    build = Build(ctx, raw["build"].get("image"))
                except PathProblem as e:
                    self.error(p + ("build", "context"), str(e))
            schema = self.schema_of(p, raw, binary)
            if schema is not None:
                self.check_config(p + ("config",), raw, "config", schema)
            tests = self.tests(p, raw, schema=schema)
            image = self.image(p, raw, binary, delivery, version)
            out[name] = Filter(
                name=name,
                binary=binary,
                root_id=raw.get("rootId", ""),
                vm_id=raw.get("vmId", name),
                runtime=raw.get("runtime", DEFAULT_RUNTIME),
                allow_precompiled=raw.get("allowPrecompiled", True),
                fail_open=raw.get("failOpen", False),
                config=_config_text(self.doc, p + ("config",), raw.get("config"), self.errors),
                phase=raw.get("phase"),
                priority=raw.get("priority"),
                build=build,
                tests=tests,
                delivery=delivery,
                image=image,
                config_schema=schema,
            )
        return out

    def schema_of(self, p: tuple[str | int, ...], raw: dict[str, Any],
                  binary: Binary) -> config_schema.ConfigSchema | None:
        """The schema the filter names, else the Higress spec.yaml beside its local .wasm, if any."""
        if "configSchema" in raw:
            where, relative = p + ("configSchema",), raw["configSchema"]
        elif binary.path is not None and (found := config_schema.beside(self.root, raw["wasm"])) is not None:
            where, relative = p + ("wasm",), found
        else:
            return None
        try:
            return config_schema.load(self.root, relative,
                                      what="configSchema" if "configSchema" in raw else "spec.yaml")
        except (config_schema.SchemaProblem, PathProblem) as e:
            self.error(where, str(e))
            return None

    def check_config(self, path: tuple[str | int, ...], raw: dict[str, Any], key: str,
                     schema: config_schema.ConfigSchema) -> None:
        if key not in raw or raw[key] is None:
            return
        for problem in config_schema.check(schema, raw[key]):
            self.error(path + problem.path, f"{_where(path)}: {problem.message}", key=problem.key)

    def lock(self) -> dict[str, LockEntry] | None:
        if not self._lock_read:
            from .lockfile import LockProblem, read_lock

            self._lock_read = True
            try:
                self._lock = read_lock(self.lock_file)
            except LockProblem as e:
                self._lock_broken = True
                first = next(i for i, raw in enumerate(self.raw_filters) if "image" in raw)
                self.error(("filters", first, "image"), f"{self.lock_file.name} cannot be used: {e}; restore it "
                           "from version control or run 'wasm-gitops push' again")
                self._lock = {}
        return self._lock

    def image(self, p: tuple[str | int, ...], raw: dict[str, Any], binary: Binary, delivery: str,
              version: tuple[int, int]) -> ImageRef | None:
        """The image a filter is delivered as, pinned by the digest the lock recorded at push."""
        name = raw["name"]
        dp = p + ("delivery",) if "delivery" in raw else p + ("image",)
        if "image" not in raw:
            if delivery != "configMap":
                self.error(dp, f"delivery {delivery} needs an image: add image: {{repository: REGISTRY/PATH, "
                           "tag: TAG} and run 'wasm-gitops push'")
            return None
        if binary.is_oci:
            self.error(p + ("image",), "wasm is already an oci:// reference; remove image (it is for publishing a "
                       "local .wasm) or point wasm at the local file")
            return None
        if delivery == "configMap":
            return None  # published, but this render ships the ConfigMap: the lock is not needed
        # What the cluster cannot do is said first: pushing would not help.
        failed = delivery == "imageVolume" and self.image_volume_limits(p, dp, raw, version)
        spec_image = raw["image"]
        lock = self.lock()
        if self._lock_broken:
            return None
        if lock is None:
            self.error(p + ("image",), f"there is no {self.lock_file.name} beside the spec, so the image has no "
                       f"digest to pin; run 'wasm-gitops push {name}' and commit {self.lock_file.name}")
            return None
        entry = lock.get(name)
        if entry is None:
            if self.lock_file.exists():
                self.error(p + ("image",), f"{self.lock_file.name} has no entry for filter {name!r}; run "
                           f"'wasm-gitops push {name}' and commit {self.lock_file.name}")
            return None
        problem = failed
        if entry.repository != spec_image["repository"] or entry.tag != spec_image["tag"]:
            what = "repository" if entry.repository != spec_image["repository"] else "tag"
            self.error(p + ("image", what), f"{self.lock_file.name} records {entry.repository}:{entry.tag} for "
                       f"this filter, not {spec_image['repository']}:{spec_image['tag']}; push it again "
                       f"('wasm-gitops push {name}')")
            problem = True
        if entry.module_sha256 != binary.sha256:
            self.error(p + ("wasm",), f"{raw['wasm']!r} has sha256 {binary.sha256}, but the image in "
                       f"{self.lock_file.name} holds {entry.module_sha256} (pushed as {entry.pinned}); push it "
                       f"again ('wasm-gitops push {name}')")
            problem = True
        if delivery == "imageVolume" and entry.variant != "compat":
            self.error(dp, f"the image in {self.lock_file.name} is the {entry.variant} variant, whose layers a "
                       "container runtime does not unpack; push the compat variant ('wasm-gitops push "
                       f"--variant compat {name}') for an image volume")
            problem = True
        if problem:
            return None
        return ImageRef(entry.repository, entry.tag, entry.manifest_digest, entry.variant)

    def image_volume_limits(self, p: tuple[str | int, ...], dp: tuple[str | int, ...], raw: dict[str, Any],
                            version: tuple[int, int]) -> bool:
        """What the cluster must have for an image volume: an error (True) where it cannot work."""
        failed = False
        k8s = self.kubernetes
        k8s_text = self.doc.data.get("kubernetes", f"{DEFAULT_KUBERNETES} (the default)")
        if k8s < (1, 33):
            self.error(dp, f"delivery imageVolume needs Kubernetes 1.33 or later (image volumes are beta from "
                       f"1.33, on by default from 1.35); the spec targets kubernetes {k8s_text}: raise kubernetes "
                       "or use delivery oci")
            failed = True
        elif k8s < (1, 35):
            self.warn(dp, f"image volumes are off by default before Kubernetes 1.35 (the spec targets kubernetes "
                      f"{k8s_text}): enable the ImageVolume feature gate on the API server and the kubelets, or "
                      "the volume is dropped")
        if not istio_versions.supports(version, "injection.imageVolume"):
            self.error(dp, f"Istio before 1.24 drops the image volume source while injecting the sidecar (its "
                       f"Kubernetes API types predate image volumes), so the pod would mount an empty volume; the "
                       f"spec targets istio {self.doc.data['istio']}: raise istio or use delivery oci")
            failed = True
        if len(f"wasm-{raw['name']}") > 63:
            self.error(p + ("name",), f"the image volume would be named wasm-{raw['name']}, more than 63 "
                       "characters; shorten the filter name")
            failed = True
        return failed

    def tests(self, p: tuple[str | int, ...], raw: dict[str, Any], owner: str = "filter", *,
              schema: config_schema.ConfigSchema | None = None) -> tuple[TestSpec, ...]:
        seen: set[str] = set()
        out: list[TestSpec] = []
        for j, t in enumerate(raw.get("tests", [])):
            tp = p + ("tests", j)
            if t["name"] in seen:
                self.error(tp + ("name",), f"test name {t['name']!r} is used twice in this {owner}; "
                           "make test names unique")
            seen.add(t["name"])
            expect = t.get("expect") or {}
            for k, pattern in enumerate(expect.get("logs", [])):
                try:
                    re.compile(pattern)
                except re.error as e:
                    self.error(tp + ("expect", "logs", k), f"{pattern!r} is not a regular expression ({e}); "
                               "fix it (Python re syntax)")
            if expect.get("configRejected") and len(expect) > 1:
                self.error(tp + ("expect", "configRejected"), "configRejected: true means Envoy refuses the "
                           "listener, so no request is sent and nothing else can be checked; remove the "
                           f"other expectations ({', '.join(sorted(k for k in expect if k != 'configRejected'))}) "
                           "or this one")
            # A test that expects Envoy to refuse its configuration sends a wrong one on purpose.
            if schema is not None and not expect.get("configRejected"):
                self.check_config(tp + ("config",), t, "config", schema)
            out.append(TestSpec(
                name=t["name"],
                config=_config_text(self.doc, tp + ("config",), t.get("config"), self.errors),
                request=_message(t.get("request")),
                response=_message(t.get("response")),
                expect=_expect(expect),
            ))
        return tuple(out)

    def binary(self, p: tuple[str | int, ...], raw: dict[str, Any], *, configmap: bool = True) -> Binary | None:
        ref: str = raw["wasm"]
        declared = raw.get("sha256")
        if ref.startswith("oci://"):
            if declared is None:
                self.error(p + ("wasm",), f"{ref!r} is an OCI reference; add 'sha256:' with the image's "
                           "sha256 so the binary is pinned")
                return None
            return Binary(sha256=declared, size=0, oci=ref)
        if "://" in ref:
            self.error(p + ("wasm",), f"wasm {ref!r}: only local paths and oci:// references are "
                       "supported; download the file into the repository or publish it as OCI")
            return None
        try:
            path = inside(self.root, ref, "wasm")
        except PathProblem as e:
            self.error(p + ("wasm",), str(e))
            return None
        try:
            data = read_file(os.fspath(path), CONFIGMAP_LIMIT if configmap else MODULE_LIMIT)
        except TooLarge as e:
            if configmap:
                self.error(p + ("wasm",), f"{ref!r} is {e.size:,} bytes; a ConfigMap holds at most "
                           f"{CONFIGMAP_LIMIT:,}: shrink the module (wasm-opt -Oz, strip), or deliver it as an "
                           "image (image: and delivery: oci or imageVolume)")
            else:
                self.error(p + ("wasm",), f"{ref!r} is {e.size:,} bytes, more than the {MODULE_LIMIT:,} "
                           "a module delivered as an image may have here; shrink the module")
            return None
        except NotAFile as e:
            self.error(p + ("wasm",), f"wasm {ref!r} is {e.kind}, not a file; point it at the compiled "
                       ".wasm module")
            return None
        except FileNotFoundError:
            hint = " (build it with 'make wasm-local')" if "build" in raw else ""
            self.error(p + ("wasm",), f"wasm file {ref!r} does not exist{hint}; fix the path or build it")
            return None
        except IsADirectoryError:
            self.error(p + ("wasm",), f"wasm {ref!r} is a directory; point it at the .wasm file")
            return None
        except OSError as e:
            self.error(p + ("wasm",), f"wasm file {ref!r} cannot be read ({e.strerror}); fix its "
                       "permissions")
            return None
        digest = hashlib.sha256(data).hexdigest()
        if declared is not None and declared != digest:
            self.error(p + ("sha256",), f"sha256 {declared} does not match {ref!r} ({digest}); update "
                       "one of them")
        if configmap and len(data) > CLIENT_SIDE_APPLY_LIMIT:
            self.warn(p + ("wasm",), f"{ref!r} is {len(data):,} bytes, more than {CLIENT_SIDE_APPLY_LIMIT:,}: "
                      "client-side kubectl apply cannot store it in the last-applied annotation, so its "
                      "ConfigMap is marked for server-side apply (Argo CD ServerSideApply=true)")
        if self.inspect:
            self.to_inspect.append((p, raw, ref, data))
        return Binary(sha256=digest, size=len(data), path=path, data=data)

    def inspect_binaries(self) -> parallel.Pending[list[WasmReport]] | None:
        """Start validating every binary read, in a helper process: wasmtime's import alone (~50 ms)
        is a twentieth of a check at mesh scale, and nothing but the findings waits for the answer."""
        if not self.to_inspect:
            return None
        data = tuple(entry[3] for entry in self.to_inspect)
        return parallel.submit(lambda: [inspect_wasm(d) for d in data])

    def module_findings(self, reports: list[WasmReport]) -> None:
        for (p, raw, ref, _), report in zip(self.to_inspect, reports, strict=True):
            if not report.is_wasm:
                self.error(p + ("wasm",), f"{ref!r} is not WebAssembly (no \\0asm header); point it at a "
                           "compiled .wasm module")
            elif not report.valid:
                self.error(p + ("wasm",), f"{ref!r} is not a valid WebAssembly module ({report.error}); "
                           "rebuild it")
            elif not report.is_proxy_wasm:
                self.error(p + ("wasm",), f"{ref!r} is WebAssembly but not a proxy-wasm filter (no "
                           "proxy_abi_version_* export and no proxy_on_* callbacks); build it with a "
                           "proxy-wasm SDK")
            else:
                self.module_facts(p, raw, report)

    def module_facts(self, p: tuple[str | int, ...], raw: dict[str, Any], report: Any) -> None:
        """What the binary itself says about settings next to it (what can be known without running it)."""
        callbacks = set(report.callbacks)
        if "config" in raw and "proxy_on_configure" not in callbacks:
            self.warn(p + ("config",), "the module exports no proxy_on_configure, so it never reads its "
                      "configuration; remove config or check the build")
        if report.abi_version is None:
            self.warn(p + ("wasm",), "the module exports no proxy_abi_version_* marker (a pre-2020 build); "
                      "current Envoy refuses to load it: rebuild with a current SDK")
        if "proxy_on_context_create" not in callbacks:
            self.error(p + ("wasm",), "the module exports no proxy_on_context_create, so Envoy cannot create "
                       "its root context; it is not a loadable filter")

    # ------------------------------------------------------------------ services
    def services(self, raw_services: list[dict[str, Any]], filters: dict[str, Filter],
                 version: tuple[int, int], top_output: str) -> list[Service]:
        out: list[Service] = []
        names: set[str] = set()
        workloads: dict[tuple[str, str], str] = {}
        resource_owner: dict[str, str] = {}
        self.reader.prefetch([path for raw in raw_services for res in raw["resources"]
                              if isinstance(path := self.resource_dir(res), Path)], self.meanwhile)
        for i, raw in enumerate(raw_services):
            p: tuple[str | int, ...] = ("services", i)
            name = raw["name"]
            if name in names:
                self.error(p + ("name",), f"service name {name!r} is used twice; service names must be "
                           "unique (each names an overlay)")
                continue
            names.add(name)
            namespace = raw.get("namespace", "default")
            deployment = raw["deployment"]
            key = (namespace, deployment)
            if key in workloads:
                self.error(p + ("deployment",), f"Deployment {namespace}/{deployment} is already patched by "
                           f"service {workloads[key]!r}; list all its filters in one service")
            workloads.setdefault(key, name)
            output = (raw.get("output") or {}).get("kind", top_output)
            opath = p + ("output", "kind") if "output" in raw else ("output", "kind")
            if output == "WasmPlugin" and not istio_versions.supports(version, "WasmPlugin"):
                self.error(opath, f"WasmPlugin needs Istio 1.12 or later, the spec targets "
                           f"{self.doc.data['istio']}; use output kind EnvoyFilter or raise istio")
            if output == "TrafficExtension" and not istio_versions.supports(version, "TrafficExtension"):
                self.error(opath, f"TrafficExtension needs Istio 1.30 or later, the spec targets "
                           f"{self.doc.data['istio']}; use output kind WasmPlugin or raise istio")
            service_filters = self.service_filters(p, raw, filters, output)
            if output in ("WasmPlugin", "TrafficExtension"):
                self.wasm_plugin_limits(p, raw, service_filters, version)
            selector = self.selector(p, raw, namespace, deployment, resource_owner, name)
            log_levels = tuple(sorted((raw.get("proxyLogLevel") or {}).items()))
            out.append(Service(
                name=name, namespace=namespace, deployment=deployment,
                selector=selector or (), resources=tuple(raw["resources"]),
                context=raw.get("context", "SIDECAR_INBOUND"), filters=service_filters,
                proxy_log_level=log_levels, output=output, tests=self.tests(p, raw, "service"),
            ))
        return out

    def wasm_plugin_limits(self, p: tuple[str | int, ...], raw: dict[str, Any],
                           chosen: tuple[ServiceFilter, ...], version: tuple[int, int]) -> None:
        """What a WasmPlugin of the target Istio cannot say is an error where the user said it."""
        context = raw.get("context", "SIDECAR_INBOUND")
        if context == "SIDECAR_OUTBOUND" and not istio_versions.supports(version, "WasmPlugin.match"):
            self.error(p + ("context",), "a WasmPlugin for SIDECAR_OUTBOUND needs match.mode CLIENT, which "
                       "arrived in Istio 1.16; raise istio or use output kind EnvoyFilter")
        for sf in chosen:
            f = sf.filter
            index = self.filter_index[f.name]
            fp: tuple[str | int, ...] = ("filters", index)
            if f.fail_open and not istio_versions.supports(version, "WasmPlugin.failStrategy"):
                self.error(fp + ("failOpen",), f"failOpen for a WasmPlugin needs failStrategy, which arrived "
                           f"in Istio 1.19 (the spec targets {self.doc.data['istio']}); raise istio or use "
                           "output kind EnvoyFilter")
            if sf.config is not None and not _is_json_object(sf.config):
                self.error(fp + ("config",), "a WasmPlugin's pluginConfig is a map; write config as a map "
                           "(or use output kind EnvoyFilter, which passes any string)")
            for key, default in (("vmId", f.name), ("runtime", "envoy.wasm.runtime.v8"),
                                 ("allowPrecompiled", True)):
                if key in self.raw_filters[index] and self.raw_filters[index][key] != default:
                    self.warn(fp + (key,), f"{key} has no WasmPlugin field: istio-agent chooses it; it is "
                              f"ignored for service {raw['name']!r}")

    def service_filters(self, p: tuple[str | int, ...], raw: dict[str, Any], filters: dict[str, Filter],
                        output: str) -> tuple[ServiceFilter, ...]:
        chosen: list[ServiceFilter] = []
        seen: set[str] = set()
        for j, entry in enumerate(raw["filters"]):
            fp = p + ("filters", j)
            fname = entry if isinstance(entry, str) else entry["name"]
            npath = fp if isinstance(entry, str) else fp + ("name",)
            if fname in self.broken_filters:
                continue
            if fname not in filters:
                known = sorted(filters)
                guess = difflib.get_close_matches(fname, known, n=1)
                hint = f"did you mean {guess[0]!r}?" if guess else f"declared: {', '.join(known) or 'none'}"
                self.error(npath, f"unknown filter {fname!r}; {hint}")
                continue
            if fname in seen:
                self.error(npath, f"filter {fname!r} is listed twice for this service; list it once")
                continue
            seen.add(fname)
            f = filters[fname]
            if f.binary.is_oci and output not in ("WasmPlugin", "TrafficExtension"):
                self.error(npath, f"filter {fname!r} is an oci:// image, which only WasmPlugin can load; "
                           "set output kind WasmPlugin for this service")
            elif f.delivery == "oci" and output == "EnvoyFilter":
                self.error(npath, f"filter {fname!r} is delivered as an image istio-agent pulls (delivery oci), "
                           "which an EnvoyFilter cannot ask for; set output kind WasmPlugin or TrafficExtension "
                           "for this service, or delivery imageVolume for the filter")
            if f.delivery == "imageVolume" and any(c.filter.in_configmap for c in chosen):
                self.error(npath, self._mixed(fname))
            elif f.in_configmap and any(c.filter.delivery == "imageVolume" for c in chosen):
                self.error(npath, self._mixed(fname))
            config = f.config
            if isinstance(entry, dict) and "config" in entry:
                config = _config_text(self.doc, fp + ("config",), entry["config"], self.errors)
                if f.config_schema is not None:
                    self.check_config(fp + ("config",), entry, "config", f.config_schema)
            chosen.append(ServiceFilter(f, config))
        return tuple(chosen)

    @staticmethod
    def _mixed(fname: str) -> str:
        return (f"filter {fname!r} shares this service with filters delivered the other way (ConfigMap and image "
                "volume): the ConfigMaps are mounted read-only at /var/local/lib/wasm-filters, where the kubelet "
                "cannot create the image volumes' mount points; deliver this service's filters the same way")

    def resource_dir(self, res: str) -> Path | str | None:
        """The real directory a service resource names, or what is wrong with it; None if remote."""
        if res not in self.resource_dirs:
            self.resource_dirs[res] = self._resource_dir(res)
        return self.resource_dirs[res]

    def _resource_dir(self, res: str) -> Path | str | None:
        if is_remote(res):
            return None
        try:
            path, mode = inside_stat(self.root, res, "resource")
        except PathProblem as e:
            return str(e)
        if mode is None:
            return f"resource {res!r} does not exist; fix the path (relative to filters.yaml)"
        if mode != stat.S_IFDIR:
            return (f"resource {res!r} is a file; kustomize only loads directories from outside an overlay: "
                    "point it at the directory with the kustomization.yaml")
        return path

    def generated(self, path: Path, loaded: set[str], service: str) -> str | None:
        """What is wrong with a resource that loads the output wasm-gitops writes, if it does."""
        res = os.path.relpath(path, self.root)
        own = os.path.join(self.out, "overlays", service)
        if is_within(own, str(path)):
            return (f"resource {res!r} is this service's own overlay, which wasm-gitops writes: the overlay "
                    "would include itself; point resources at the workload's own manifests")
        for f in sorted({str(path), *loaded}):
            if any(is_within(g, f) for g in self.outputs):
                what = ("this service's own overlay" if is_within(own, f) else
                        f"{os.path.relpath(f, self.root)}, which wasm-gitops writes")
                return (f"resource {res!r} includes {what}: the rendered tree would include itself; point "
                        "resources at the workload's own manifests")
        return None

    def selector(self, p: tuple[str | int, ...], raw: dict[str, Any], namespace: str, deployment: str,
                 owners: dict[str, str], service: str) -> tuple[tuple[str, str], ...] | None:
        declared = raw.get("selector")
        invalid: set[str] = set()
        for key, value in (declared or {}).items():
            problem = label_key_problem(key)
            if problem:
                self.error(p + ("selector", key), f"selector: {problem}; fix the key", key=True)
                invalid.add(key)
            problem = label_value_problem(value)
            if problem:
                self.error(p + ("selector", key), f"selector: {problem}; fix the value")
                invalid.add(key)
        local: list[Path] = []
        remote = False
        failed = False
        first_at: dict[str, int] = {}
        for j, res in enumerate(raw["resources"]):
            rp = p + ("resources", j)
            problem = _path_text_problem("resource", res)
            if problem:
                self.error(rp, problem)
                failed = True
                continue
            path = self.resource_dir(res)
            # The same directory spelt twice (apps/x, ./apps/x/, a link to it) would be loaded twice,
            # which kustomize refuses: objects with the same id.
            same = str(path) if isinstance(path, Path) else res if path is None else None
            if same is not None:
                if same in first_at:
                    k = first_at[same]
                    self.error(rp, f"resource {res!r} is the same as resources[{k}] "
                               f"{raw['resources'][k]!r}; list it once")
                    failed = True
                    continue
                first_at[same] = j
            if path is None:
                remote = True
                continue
            failed = True  # until this resource proves readable
            if isinstance(path, str):
                self.error(rp, path)
                continue
            scan = self.reader.scan(path)
            for problem in scan.problems:
                self.error(rp, f"resource {res!r}: {problem}")
            if scan.problems:
                continue
            generated = self.generated(path, scan.files, service)
            if generated:
                self.error(rp, generated)
                continue
            failed = False
            local.append(path)
            loaded = scan.files | {str(path)}
            clash = next((f for f in sorted(loaded) if owners.get(f, service) != service), None)
            if clash is not None:
                self.error(rp, f"resource {res!r} overlaps with service {owners[clash]!r} (both load "
                           f"{os.path.relpath(clash, self.root)}); the root kustomization would hold those "
                           "objects twice: give each service its own resources")
            for f in loaded:
                owners.setdefault(f, service)
        if failed:
            return tuple(sorted(declared.items())) if declared else None
        found = [w for path in local for w in self.reader.scan(path).deployments if w.name == deployment]
        if not found:
            if local and not remote:
                self.error(p + ("deployment",), f"Deployment {deployment!r} is not in the service's "
                           "resources; fix the name or the resources")
                return None
            if declared is None:
                self.error(p + ("resources",) if remote else p, "selector is required when the Deployment "
                           "is in remote resources (it cannot be read); add the pod labels under 'selector'")
            return tuple(sorted(declared.items())) if declared else None
        workload = found[0]
        if workload.namespace is not None and workload.namespace != namespace:
            self.error(p + ("namespace",) if "namespace" in raw else p + ("deployment",),
                       f"Deployment {deployment!r} is in namespace {workload.namespace!r}, the service says "
                       f"{namespace!r}; make them the same")
        pod = dict(workload.pod_labels)
        if declared is None:
            if not pod:
                self.error(p + ("deployment",), f"Deployment {deployment!r} has no pod-template labels to "
                           "select; add 'selector'")
                return None
            bad = [(k, v, problem) for k, v in workload.pod_labels
                   if (problem := label_key_problem(k) or label_value_problem(v))]
            if bad:
                label, value, problem = bad[0]
                self.error(p, f"Deployment {deployment!r} has the pod-template label {label}={value!r}: {problem}, "
                           "so no selector can name it (and Kubernetes refuses the Deployment): fix the "
                           "label in the Deployment")
                return None
            return workload.pod_labels
        wrong = [f"{k}={v}" for k, v in sorted(declared.items()) if pod.get(k) != v and k not in invalid]
        if wrong:
            have = ", ".join(f"{k}={v}" for k, v in sorted(pod.items())) or "none"
            self.error(p + ("selector",), f"selector {', '.join(wrong)} matches no pod of Deployment "
                       f"{deployment!r} (its pods have {have}); the EnvoyFilter would silently do nothing: "
                       "fix the selector")
        return tuple(sorted(declared.items()))


def parse_valid(spec_path: Path) -> Document:
    """The spec read and checked against the schema only: for commands that need its filters before
    (or without) their binaries, such as build, package and push."""
    doc = parse(spec_path)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.finding((), "the document must be a map")])
    errors = _schema_findings(doc)
    if errors:
        raise SpecError(errors)
    return doc


def load_build_targets(spec_path: Path, names: Iterable[str] = ()) -> list[BuildTarget]:
    """The filters with a build: section. Needs a valid spec, but not the binaries (not built yet)."""
    doc = parse_valid(spec_path)
    root = spec_path.parent.resolve()
    wanted = set(names)
    known = {f["name"] for f in doc.data["filters"]}
    unknown = sorted(wanted - known)
    if unknown:
        raise UsageError(f"no filter named {', '.join(unknown)} in {spec_path}")
    targets: list[BuildTarget] = []
    findings: list[Finding] = []
    for i, raw in enumerate(doc.data["filters"]):
        if "build" not in raw or (wanted and raw["name"] not in wanted):
            continue
        try:
            context = inside(root, raw["build"]["context"], "build context")
            wasm = inside(root, raw["wasm"], "wasm")
        except PathProblem as e:
            findings.append(doc.finding(("filters", i, "build"), str(e)))
            continue
        targets.append(BuildTarget(raw["name"], context, raw["build"].get("image"), wasm))
    if findings:
        raise SpecError(findings)
    return targets


def load_spec(spec_path: Path, *, display: str | None = None, inspect: bool = True,
              meanwhile: Callable[[], None] | None = None, out: Path | None = None) -> LoadedSpec:
    """Read, validate and model a spec. Raise SpecError with every problem found.

    `meanwhile` is work of the caller's to overlap with reading the workloads (it runs once, here);
    `out` the output directory, when it is not the spec's."""
    doc = parse(spec_path, display)
    if not isinstance(doc.data, dict):
        raise SpecError([doc.finding((), f"the document must be a map with apiVersion, kind, istio, filters "
                                     f"and services, not {_describe(doc.data)}")])
    schema_errors = _schema_findings(doc)
    if schema_errors:
        raise SpecError(schema_errors)
    checker = _Checker(doc, spec_path, inspect, meanwhile, out)
    model = checker.run()
    if model is None:
        raise SpecError(checker.errors)
    return LoadedSpec(model, tuple(sorted(checker.warnings)), doc)


