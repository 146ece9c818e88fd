"""The filters: each binary read and hashed (and checked for proxy-wasm in a helper process), its
image pinned by the lock, its configSchema, build and tests."""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import config_schema, istio_versions, parallel
from ..files import NotAFile, TooLarge, read_file
from ..model import DEFAULTS, Binary, Build, Filter, ImageRef
from ..wasm import CLIENT_SIDE_APPLY_LIMIT, CONFIGMAP_LIMIT, MODULE_LIMIT, WasmReport, inspect_wasm
from ..workloads import PathProblem, inside
from .context import Path_, SpecContext
from .tests import tests

if TYPE_CHECKING:  # the lock (and the OCI module under it) is imported only by specs with images
    from ..lockfile import LockEntry


@dataclass(frozen=True)
class ToInspect:
    """A binary read, waiting for the helper process to say what it is."""

    path: Path_
    raw: dict[str, Any]
    data: bytes


@dataclass
class Filters:
    """The filters modelled, and what the services and gateways that use them need to know."""

    by_name: dict[str, Filter] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # reported once, at its wasm; not again at each use
    index: dict[str, int] = field(default_factory=dict)  # where each is declared (the first, if twice)
    to_inspect: list[ToInspect] = field(default_factory=list)


class _Lock:
    """filters.lock, read once and only when a filter is delivered as an image."""

    def __init__(self, ctx: SpecContext) -> None:
        self.ctx = ctx
        self.entries: dict[str, LockEntry] | None = None
        self.read = False
        self.broken = False

    @functools.cached_property
    def file(self) -> Path:
        # Imported here: lockfile brings the OCI code, which a spec without images never needs.
        from ..lockfile import lock_path

        return lock_path(self.ctx.spec_path)

    def get(self) -> dict[str, LockEntry] | None:
        if not self.read:
            from ..lockfile import LockProblem, read_lock

            self.read = True
            try:
                self.entries = read_lock(self.file)
            except LockProblem as e:
                self.broken = True
                first = next(i for i, raw in enumerate(self.ctx.data["filters"]) if "image" in raw)
                self.ctx.error(("filters", first, "image"), f"{self.file.name} cannot be used: {e}; restore it "
                               "from version control or run 'wasm-gitops push' again")
                self.entries = {}
        return self.entries


def filters(ctx: SpecContext, version: tuple[int, int], kubernetes: tuple[int, int], *, inspect: bool) -> Filters:
    found = Filters()
    raw_filters: list[dict[str, Any]] = ctx.data.get("filters", [])
    # First declaration wins: later duplicates are reported below.
    found.index = {raw["name"]: i for i, raw in reversed(list(enumerate(raw_filters)))}
    lock = _Lock(ctx)
    by_path: dict[Path, str] = {}
    names: set[str] = set()  # modelled or broken
    for i, raw in enumerate(raw_filters):
        p: Path_ = ("filters", i)
        name = raw["name"]
        if not ctx.unique(p + ("name",), "filter", name, names):
            continue
        delivery = raw.get("delivery", DEFAULTS.image_delivery if "image" in raw else DEFAULTS.delivery)
        binary = _binary(ctx, p, raw, configmap=delivery == "configMap",
                         to_inspect=found.to_inspect if inspect else None)
        if binary is None:
            found.broken.add(name)
            continue
        shared = binary.path if delivery == "configMap" else None  # only ConfigMaps are per filter
        if shared is not None and shared in by_path:
            ctx.warn(p + ("wasm",), f"filter {name!r} uses the same file as {by_path[shared]!r}; "
                     "it gets a ConfigMap of its own")
        if shared is not None:
            by_path.setdefault(shared, name)
        build = _build(ctx, p, raw)
        schema = _schema_of(ctx, p, raw, binary)
        if schema is not None:
            ctx.check_config(p + ("config",), raw, "config", schema)
        declared_tests = tests(ctx, p, raw, schema=schema)
        image = _image(ctx, lock, p, raw, binary, delivery, (version, kubernetes))
        found.by_name[name] = Filter(
            name=name, binary=binary, root_id=raw.get("rootId", DEFAULTS.root_id), vm_id=raw.get("vmId", name),
            runtime=raw.get("runtime", DEFAULTS.runtime),
            allow_precompiled=raw.get("allowPrecompiled", DEFAULTS.allow_precompiled),
            fail_open=raw.get("failOpen", DEFAULTS.fail_open),
            config=ctx.config_text(p + ("config",), raw.get("config")), phase=raw.get("phase"),
            priority=raw.get("priority"), build=build, tests=declared_tests, delivery=delivery, image=image,
            config_schema=schema,
        )
    return found


def _build(ctx: SpecContext, p: Path_, raw: dict[str, Any]) -> Build | None:
    if "build" not in raw:
        return None
    try:
        context = inside(ctx.root, raw["build"]["context"], "build context")
    except PathProblem as e:
        ctx.error(p + ("build", "context"), str(e))
        return None
    if not context.is_dir():
        ctx.error(p + ("build", "context"), f"build context {raw['build']['context']!r} is "
                  "not a directory; point it at the filter's source directory")
    return Build(context, raw["build"].get("image"))


def _schema_of(ctx: SpecContext, p: Path_, raw: dict[str, Any], binary: Binary) -> config_schema.ConfigSchema | None:
    """The schema the filter names, else the Higress spec.yaml beside its local .wasm, if any."""
    if "configSchema" in raw:
        where, relative = p + ("configSchema",), raw["configSchema"]
    elif binary.path is not None and (found := config_schema.beside(ctx.root, raw["wasm"])) is not None:
        where, relative = p + ("wasm",), found
    else:
        return None
    try:
        return config_schema.load(ctx.root, relative, what="configSchema" if "configSchema" in raw else "spec.yaml")
    except (config_schema.SchemaProblem, PathProblem) as e:
        ctx.error(where, str(e))
        return None


def _image(ctx: SpecContext, lock: _Lock, p: Path_, raw: dict[str, Any], binary: Binary, delivery: str,
           targets: tuple[tuple[int, int], tuple[int, int]]) -> ImageRef | None:
    """The image a filter is delivered as, pinned by the digest the lock recorded at push."""
    name = raw["name"]
    dp = p + ("delivery",) if "delivery" in raw else p + ("image",)
    if "image" not in raw:
        if delivery != "configMap":
            ctx.error(dp, f"delivery {delivery} needs an image: add image: {{repository: REGISTRY/PATH, "
                      "tag: TAG} and run 'wasm-gitops push'")
        return None
    if binary.is_oci:
        ctx.error(p + ("image",), "wasm is already an oci:// reference; remove image (it is for publishing a "
                  "local .wasm) or point wasm at the local file")
        return None
    if delivery == "configMap":
        return None  # published, but this render ships the ConfigMap: the lock is not needed
    # What the cluster cannot do is said first: pushing would not help.
    failed = delivery == "imageVolume" and _image_volume_limits(ctx, p, dp, raw, targets)
    entries = lock.get()
    if lock.broken:
        return None
    if entries is None:
        ctx.error(p + ("image",), f"there is no {lock.file.name} beside the spec, so the image has no "
                  f"digest to pin; run 'wasm-gitops push {name}' and commit {lock.file.name}")
        return None
    entry = entries.get(name)
    if entry is None:
        if lock.file.exists():
            ctx.error(p + ("image",), f"{lock.file.name} has no entry for filter {name!r}; run "
                      f"'wasm-gitops push {name}' and commit {lock.file.name}")
        return None
    if _lock_disagrees(ctx, lock, p, dp, raw, binary, entry) or failed:
        return None
    return ImageRef(entry.repository, entry.tag, entry.manifest_digest, entry.variant)


def _lock_disagrees(ctx: SpecContext, lock: _Lock, p: Path_, dp: Path_, raw: dict[str, Any], binary: Binary,
                    entry: LockEntry) -> bool:
    """Where the pushed image is not the one the spec and its binary describe (an error: True)."""
    name, spec_image, problem = raw["name"], raw["image"], False
    if entry.repository != spec_image["repository"] or entry.tag != spec_image["tag"]:
        what = "repository" if entry.repository != spec_image["repository"] else "tag"
        ctx.error(p + ("image", what), f"{lock.file.name} records {entry.repository}:{entry.tag} for "
                  f"this filter, not {spec_image['repository']}:{spec_image['tag']}; push it again "
                  f"('wasm-gitops push {name}')")
        problem = True
    if entry.module_sha256 != binary.sha256:
        ctx.error(p + ("wasm",), f"{raw['wasm']!r} has sha256 {binary.sha256}, but the image in "
                  f"{lock.file.name} holds {entry.module_sha256} (pushed as {entry.pinned}); push it "
                  f"again ('wasm-gitops push {name}')")
        problem = True
    if raw.get("delivery") == "imageVolume" and entry.variant != "compat":
        ctx.error(dp, f"the image in {lock.file.name} is the {entry.variant} variant, whose layers a "
                  "container runtime does not unpack; push the compat variant ('wasm-gitops push "
                  f"--variant compat {name}') for an image volume")
        problem = True
    return problem


def _image_volume_limits(ctx: SpecContext, p: Path_, dp: Path_, raw: dict[str, Any],
                         targets: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    """What the cluster must have for an image volume: an error (True) where it cannot work."""
    version, k8s = targets
    failed = False
    k8s_text = ctx.data.get("kubernetes", f"{DEFAULTS.kubernetes} (the default)")
    if k8s < (1, 33):
        ctx.error(dp, f"delivery imageVolume needs Kubernetes 1.33 or later (image volumes are beta from "
                  f"1.33, on by default from 1.35); the spec targets kubernetes {k8s_text}: raise kubernetes "
                  "or use delivery oci")
        failed = True
    elif k8s < (1, 35):
        ctx.warn(dp, f"image volumes are off by default before Kubernetes 1.35 (the spec targets kubernetes "
                 f"{k8s_text}): enable the ImageVolume feature gate on the API server and the kubelets, or "
                 "the volume is dropped")
    if not istio_versions.supports(version, "injection.imageVolume"):
        ctx.error(dp, f"Istio before 1.24 drops the image volume source while injecting the sidecar (its "
                  f"Kubernetes API types predate image volumes), so the pod would mount an empty volume; the "
                  f"spec targets istio {ctx.data['istio']}: raise istio or use delivery oci")
        failed = True
    if len(f"wasm-{raw['name']}") > 63:
        ctx.error(p + ("name",), f"the image volume would be named wasm-{raw['name']}, more than 63 "
                  "characters; shorten the filter name")
        failed = True
    return failed


def _read_binary(ctx: SpecContext, p: Path_, raw: dict[str, Any], *, configmap: bool) -> tuple[Path, bytes] | None:
    """The local .wasm and its bytes, or None where it is missing, unreadable or too large (reported)."""
    ref: str = raw["wasm"]
    try:
        path = inside(ctx.root, ref, "wasm")
    except PathProblem as e:
        ctx.error(p + ("wasm",), str(e))
        return None
    try:
        return path, read_file(os.fspath(path), CONFIGMAP_LIMIT if configmap else MODULE_LIMIT)
    except TooLarge as e:
        if configmap:
            ctx.error(p + ("wasm",), f"{ref!r} is {e.size:,} bytes; a ConfigMap holds at most "
                      f"{CONFIGMAP_LIMIT:,}: shrink the module (wasm-opt -Oz, strip), or deliver it as an "
                      "image (image: and delivery: oci or imageVolume)")
        else:
            ctx.error(p + ("wasm",), f"{ref!r} is {e.size:,} bytes, more than the {MODULE_LIMIT:,} "
                      "a module delivered as an image may have here; shrink the module")
    except NotAFile as e:
        ctx.error(p + ("wasm",), f"wasm {ref!r} is {e.kind}, not a file; point it at the compiled .wasm module")
    except FileNotFoundError:
        hint = " (build it with 'make wasm-local')" if "build" in raw else ""
        ctx.error(p + ("wasm",), f"wasm file {ref!r} does not exist{hint}; fix the path or build it")
    except IsADirectoryError:
        ctx.error(p + ("wasm",), f"wasm {ref!r} is a directory; point it at the .wasm file")
    except OSError as e:
        ctx.error(p + ("wasm",), f"wasm file {ref!r} cannot be read ({e.strerror}); fix its permissions")
    return None


def _binary(ctx: SpecContext, p: Path_, raw: dict[str, Any], *, configmap: bool,
            to_inspect: list[ToInspect] | None) -> Binary | None:
    ref: str = raw["wasm"]
    declared = raw.get("sha256")
    if ref.startswith("oci://"):
        if declared is None:
            ctx.error(p + ("wasm",), f"{ref!r} is an OCI reference; add 'sha256:' with the image's "
                      "sha256 so the binary is pinned")
            return None
        return Binary(sha256=declared, size=0, oci=ref)
    if "://" in ref:
        ctx.error(p + ("wasm",), f"wasm {ref!r}: only local paths and oci:// references are "
                  "supported; download the file into the repository or publish it as OCI")
        return None
    read = _read_binary(ctx, p, raw, configmap=configmap)
    if read is None:
        return None
    path, data = read
    digest = hashlib.sha256(data).hexdigest()
    if declared is not None and declared != digest:
        ctx.error(p + ("sha256",), f"sha256 {declared} does not match {ref!r} ({digest}); update one of them")
    if configmap and len(data) > CLIENT_SIDE_APPLY_LIMIT:
        ctx.warn(p + ("wasm",), f"{ref!r} is {len(data):,} bytes, more than {CLIENT_SIDE_APPLY_LIMIT:,}: "
                 "client-side kubectl apply cannot store it in the last-applied annotation, so its "
                 "ConfigMap is marked for server-side apply (Argo CD ServerSideApply=true)")
    if to_inspect is not None:
        to_inspect.append(ToInspect(p, raw, data))
    return Binary(sha256=digest, size=len(data), path=path, data=data)


def inspect_binaries(to_inspect: list[ToInspect]) -> parallel.Pending[list[WasmReport]] | None:
    """Start validating every binary read, in a helper process: wasmtime's import alone (~50 ms)
    is a twentieth of a check at mesh scale, and nothing but the findings waits for the answer."""
    if not to_inspect:
        return None
    data = tuple(entry.data for entry in to_inspect)
    return parallel.submit(lambda: [inspect_wasm(d) for d in data])


def module_findings(ctx: SpecContext, to_inspect: list[ToInspect], reports: list[WasmReport]) -> None:
    for entry, report in zip(to_inspect, reports, strict=True):
        p, ref = entry.path, entry.raw["wasm"]
        if not report.is_wasm:
            ctx.error(p + ("wasm",), f"{ref!r} is not WebAssembly (no \\0asm header); point it at a "
                      "compiled .wasm module")
        elif not report.valid:
            ctx.error(p + ("wasm",), f"{ref!r} is not a valid WebAssembly module ({report.error}); rebuild it")
        elif not report.is_proxy_wasm:
            ctx.error(p + ("wasm",), f"{ref!r} is WebAssembly but not a proxy-wasm filter (no "
                      "proxy_abi_version_* export and no proxy_on_* callbacks); build it with a "
                      "proxy-wasm SDK")
        else:
            _module_facts(ctx, p, entry.raw, report)


def _module_facts(ctx: SpecContext, p: Path_, raw: dict[str, Any], report: WasmReport) -> None:
    """What the binary itself says about settings next to it (what can be known without running it)."""
    callbacks = set(report.callbacks)
    if "config" in raw and "proxy_on_configure" not in callbacks:
        ctx.warn(p + ("config",), "the module exports no proxy_on_configure, so it never reads its "
                 "configuration; remove config or check the build")
    if report.abi_version is None:
        ctx.warn(p + ("wasm",), "the module exports no proxy_abi_version_* marker (a pre-2020 build); "
                 "current Envoy refuses to load it: rebuild with a current SDK")
    if "proxy_on_context_create" not in callbacks:
        ctx.error(p + ("wasm",), "the module exports no proxy_on_context_create, so Envoy cannot create "
                  "its root context; it is not a loadable filter")
