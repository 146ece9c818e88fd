"""The HTTP filter chain istiod would give each service's sidecar, built from the rendered objects.

Everything here reads the rendered tree (the plan's (file, object) pairs), never the spec: a wrong
mount path, a stale ConfigMap name or a wrong order in the tree shows up as a wrong or failing chain.
Envoy configuration is built as data (dicts) and written as JSON by renderer.envoy.process.

Modelled, from istiod's source (istio/istio, pilot/pkg), one subject a module:
- renderer.envoy.wasm_plugins: WasmPlugin/TrafficExtension -> HCM filters, their order and phases;
- renderer.envoy.envoy_filters: EnvoyFilter HTTP_FILTER patches, their order and operations;
- renderer.envoy.mounts: the modules the pod mounts (ConfigMaps, image volumes, oci:// pulls);
- renderer.envoy.listeners: listeners and bootstraps shaped like istiod's.

Not modelled: mTLS and the TLS/ALPN listener filters, metadata exchange, stats and telemetry filters,
authn/authz (PeerAuthentication, AuthorizationPolicy, ext-authz), fault/cors/grpc-stats placeholders
(they do nothing without per-route config), retries, tracing, ECDS delivery itself, the original-dst
virtual listeners, port-level `match.ports`, workload selectors (an overlay's objects are taken to
select its workload), EnvoyFilter patches other than HTTP_FILTER, and the proxy's node metadata.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

from .. import objects
from ..model import DEFAULTS, Context, Filter, FilterSet, OutputKind, Service, ServiceFilter
from .chain import STRING_VALUE, TYPED_STRUCTS, WASM_TYPE, ChainError, ChainFilter, Obj, ServiceChain
from .envoy_filters import apply_patch, envoy_filter_order, matches_context
from .listeners import bootstrap, chain_bootstrap, cluster, listener
from .mounts import (
    COMPONENT_LOG_LEVEL,
    USER_VOLUME,
    USER_VOLUME_MOUNT,
    ImageFetcher,
    Modules,
    Overlay,
    image_module,
    localise,
    mounted_files,
    read_overlays,
)
from .wasm_plugins import wasm_plugin_filter, wasm_plugins_in_order

# What the verify step, the load step, the cost model and their tests use, importable from one place.
__all__ = ["STRING_VALUE", "TYPED_STRUCTS", "USER_VOLUME", "USER_VOLUME_MOUNT", "WASM_TYPE", "ChainError",
           "ChainFilter", "ImageFetcher", "ServiceChain", "bootstrap", "chain_bootstrap", "cluster",
           "filter_set_chains", "http_filter", "listener", "service_chains"]


def _chain(ov: Overlay, context: Context, configmaps: Mapping[tuple[str, str], Obj],
           modules: Modules, istio: tuple[int, int] | None, images: ImageFetcher | None = None) -> ServiceChain:
    files = mounted_files(ov, configmaps, images) if (ov.envoy_filters or ov.wasm_plugins) else {}
    levels = tuple((a, b) for a, _, b in (part.partition(":") for part in
                                           ov.annotations.get(COMPONENT_LOG_LEVEL, "").split(",")) if b)
    return ServiceChain(ov.name, ov.namespace, context, _build(ov, context, files, modules, istio, images), levels)


def _build(ov: Overlay, context: Context, files: Mapping[str, bytes | str], modules: Modules,
           istio: tuple[int, int] | None, images: ImageFetcher | None = None) -> tuple[ChainFilter, ...]:
    chain: list[ChainFilter | str] = []  # str: a filter istiod places that is not Wasm (the router)
    for path, obj in wasm_plugins_in_order(ov, context):
        meta = obj["metadata"]
        where = f"{path} ({obj['kind']} {meta.get('namespace')}/{meta.get('name')})"
        try:
            name, plugin = wasm_plugin_filter(obj, istio)
        except ChainError as e:
            raise ChainError(f"{where}: {e}") from None
        filename = plugin["vm_config"]["code"]["local"]["filename"]
        if filename.startswith("oci://"):  # istio-agent pulls it and hands Envoy a local file
            files = {**files, posixpath.normpath(filename): image_module(filename, images)}
        plugin, module_path = localise(plugin, files, modules, where)
        chain.append(ChainFilter(path, str(obj["kind"]), f"{meta.get('namespace')}/{meta.get('name')}",
                                 {"name": name, "typed_config": {"@type": WASM_TYPE, "config": plugin}}, module_path))
    chain.append(objects.ROUTER)
    for path, obj in sorted(ov.envoy_filters, key=envoy_filter_order):
        meta = obj["metadata"]
        where = f"{path} (EnvoyFilter {meta.get('namespace')}/{meta.get('name')})"
        for patch in (obj.get("spec") or {}).get("configPatches") or []:
            if patch.get("applyTo") == "HTTP_FILTER" and matches_context(patch, context):
                apply_patch(chain, patch, path, obj, where, files, modules, istio)
    _router_last(chain, context)
    return tuple(f for f in chain if isinstance(f, ChainFilter))



def _router_last(chain: Sequence[ChainFilter | str], context: Context) -> None:
    after = [f for f in chain[chain.index(objects.ROUTER) + 1:] if isinstance(f, ChainFilter)]
    if after:
        raise ChainError(f"{after[0].source} ({after[0].kind} {after[0].object_name}): the patch puts the filter "
                         f"after the router of the {context} chain, and Envoy refuses a filter after its terminal "
                         "router; insert it before envoy.filters.http.router")


def service_chains(pairs: Iterable[tuple[str, Obj]], contexts: Mapping[str, Context], module_dir: Path, *,
                   only: Collection[str] | None = None,
                   on_error: Callable[[str, ChainError], None] | None = None,
                   istio: tuple[int, int] | None = None, images: ImageFetcher | None = None) -> list[ServiceChain]:
    """The chain of each overlay's sidecar (or of those named in `only`), for the listener class its
    service declares (contexts: overlay name -> context; the spec's default context when absent). Modules are
    written to module_dir; `istio` (major, minor) picks the release's WasmPlugin translation. A tree that gives a service no loadable chain raises ChainError naming
    the file, or, with on_error, is reported there and the service left out."""
    overlays, configmaps = read_overlays(pairs)
    modules = Modules(module_dir)
    chains = []
    for name, ov in sorted(overlays.items()):
        if only is not None and name not in only:
            continue
        try:
            chains.append(_chain(ov, contexts.get(name, DEFAULTS.context), configmaps, modules, istio, images))
        except ChainError as e:
            if on_error is None:
                raise
            on_error(name, e)
    return chains


def filter_set_chains(fs: FilterSet, pairs: Iterable[tuple[str, Obj]], module_dir: Path, *,
                      only: Collection[str] | None = None,
                      on_error: Callable[[str, ChainError], None] | None = None,
                      images: ImageFetcher | None = None) -> list[ServiceChain]:
    return service_chains(pairs, {s.name: s.context for s in fs.services}, module_dir, only=only,
                          on_error=on_error, istio=fs.istio, images=images)


def http_filter(fs: FilterSet, f: Filter, config: str | None, module_dir: Path, *,
                output: OutputKind = "EnvoyFilter", context: Context = DEFAULTS.context) -> Obj:
    """The Envoy HTTP filter (name, typed_config) that the object rendered for filter f with plugin
    configuration `config` gives, its module written under module_dir. The same translation as the
    chains: one answer to "what does Envoy load for this filter"."""
    if f.binary.is_oci:
        raise ChainError(f"filter {f.name!r} is an OCI image ({f.binary.oci}): its module is not in the tree")
    service = Service(name="validate", namespace="default", deployment="validate", selector=(("app", "validate"),),
                      resources=(), context=context, filters=(ServiceFilter(f, config),), proxy_log_level=(),
                      output=output)
    sf = service.filters[0]
    build = {"WasmPlugin": objects.wasm_plugin, "TrafficExtension": objects.traffic_extension}.get(output,
                                                                                                 objects.envoy_filter)
    obj = build(fs, service, 0, sf)
    files: dict[str, bytes | str] = {f.mounted_path: f.binary.data}
    ov = Overlay("validate")
    key = f"overlays/validate/{f.name}.{output.lower()}.yaml"
    ov.envoy_filters, ov.wasm_plugins = ([(key, obj)], []) if output == "EnvoyFilter" else ([], [(key, obj)])
    # The mount is the rendered patch's by construction (objects.user_volume_mount): the module sits
    # at the filter's mounted path.
    # An image-delivered filter: the spec stage checked that the locked image holds exactly this file's
    # module, so it stands in for the pull.
    chain = _build(ov, context, files, Modules(module_dir), fs.istio, images=lambda reference: f.binary.data)
    if len(chain) != 1:
        raise ChainError(f"filter {f.name!r}: the rendered object gives {len(chain)} filters in the {context} chain")
    return chain[0].http_filter
