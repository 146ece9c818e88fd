"""EnvoyFilter HTTP_FILTER patches, applied to a chain as istiod applies them (istio/istio, pilot/pkg).

- Order: `priority`, then creation time, then name (model/push_context.go sortEnvoyFilters,
  sortConfigByCreationTime). A tree applied in one sync creates its objects within the same second
  (CreationTimestamp has a resolution of a second), so creation time is taken as equal and equal
  priorities fall back to the name.
- Patches of the service's context (or ANY), as patchHTTPFilters applies them
  (networking/core/envoyfilter/listener_patch.go): INSERT_BEFORE / INSERT_AFTER the matched
  sub-filter (without a sub-filter: first / last), INSERT_FIRST, ADD (appended: after the router,
  which Envoy refuses, so it is an error here). A patch whose sub-filter matches nothing is skipped
  by istiod; here it is an error, since the filter would silently be missing. Matched names as the
  target release knows them: only the deprecated ones up to 1.6, both through 1.18 (an alias table),
  only the canonical ones from 1.19.
- The shape current Envoy cannot load is translated: the Istio 1.5/1.6 `config:` Struct (JSON
  names, a plain string configuration; Envoy 1.40 refuses the field) becomes a typed Wasm config with
  a StringValue configuration. The Istio 1.7 udpa TypedStruct stays as it is: Envoy 1.40 loads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import objects
from ..model import Context
from .chain import STRING_VALUE, TYPED_STRUCTS, WASM_TYPE, ChainError, ChainFilter, Obj
from .mounts import Modules, localise

# The deprecated names Istio <= 1.6 generated and 1.7-1.18 still matched through an alias table.
_ALIASES = {objects.LEGACY_HCM: objects.HCM, objects.LEGACY_ROUTER: objects.ROUTER}
# Proto JSON names of the Istio 1.5/1.6 Struct shape -> proto field names (Envoy reads both, but one
# spelling keeps the rewrite of the filename in one place).
_LEGACY_KEYS = {"rootId": "root_id", "vmConfig": "vm_config", "vmId": "vm_id",
                "allowPrecompiled": "allow_precompiled", "failOpen": "fail_open",
                "nackOnCacheMiss": "nack_on_cache_miss", "environmentVariables": "environment_variables"}



def patch_plugin_config(value: Obj) -> tuple[Obj, str]:
    """An EnvoyFilter patch value -> (PluginConfig with proto field names, what was translated)."""
    typed = value.get("typed_config")
    if typed is None and "config" in value:
        legacy = value.get("config") or {}
        plugin = _snake(legacy.get("config") or {})
        if isinstance(plugin.get("configuration"), str):
            plugin["configuration"] = {"@type": STRING_VALUE, "value": plugin["configuration"]}
        return plugin, "the Istio 1.5/1.6 `config:` Struct as a typed Wasm config (StringValue configuration)"
    if not isinstance(typed, dict):
        raise ChainError("the patch value has neither typed_config nor config")
    if typed.get("@type") in TYPED_STRUCTS:
        if typed.get("type_url") != WASM_TYPE:
            raise ChainError(f"TypedStruct of {typed.get('type_url')!r}, not the Wasm filter")
        return json.loads(json.dumps((typed.get("value") or {}).get("config") or {})), ""
    if typed.get("@type") != WASM_TYPE:
        raise ChainError(f"an HTTP filter of type {typed.get('@type')!r}, not the Wasm filter")
    return json.loads(json.dumps(typed.get("config") or {})), ""


def _snake(plugin: Obj) -> Obj:
    out: Obj = {}
    for key, value in plugin.items():
        if isinstance(value, dict) and key in ("vmConfig", "vm_config", "code", "local"):
            value = _snake(value)
        out[_LEGACY_KEYS.get(key, key)] = value
    return out



def matches_context(patch: Obj, context: Context) -> bool:
    wanted = (patch.get("match") or {}).get("context", "ANY")
    return wanted in ("ANY", context)


def canonical(name: Any) -> str:
    return _ALIASES.get(str(name), str(name))


def known_as(name: Any, istio: tuple[int, int] | None) -> str | None:
    """The filter a patch's match name finds in the target release's listeners, None when it finds
    none there: Istio <= 1.6 generated only the deprecated names, 1.7-1.18 matched both through an
    alias table, 1.19 dropped the alias (renderer.istio_versions: filter_names.*). An unknown
    release matches both."""
    name, version = str(name), istio or (1, 18)
    if name in _ALIASES:
        return _ALIASES[name] if version <= (1, 18) else None
    if name in _ALIASES.values() and version <= (1, 6):
        return None
    return name


def release_name(istio: tuple[int, int] | None) -> str:
    return f"Istio {istio[0]}.{istio[1]}" if istio else "this Istio"


def envoy_filter_order(item: tuple[str, Obj]) -> tuple[int, str]:
    _, obj = item
    meta = obj.get("metadata") or {}
    # Equal creation times (one sync) fall back to "<name>.<namespace>", as istiod compares them.
    return int((obj.get("spec") or {}).get("priority", 0)), f"{meta.get('name')}.{meta.get('namespace')}"



def apply_patch(chain: list[ChainFilter | str], patch: Obj, path: str, obj: Obj, where: str,
           files: Mapping[str, bytes | str], modules: Modules, istio: tuple[int, int] | None) -> None:
    listener = (patch.get("match") or {}).get("listener") or {}
    network = ((listener.get("filterChain") or {}).get("filter")) or {}
    if network.get("name") is not None and known_as(network["name"], istio) != objects.HCM:
        raise ChainError(f"{where}: the patch matches network filter {network['name']!r}, which is not the HTTP "
                         f"connection manager's name in {release_name(istio)}'s listeners: istiod adds no HTTP filter")
    sub = (network.get("subFilter") or {}).get("name")
    value = (patch.get("patch") or {}).get("value") or {}
    operation = (patch.get("patch") or {}).get("operation")
    try:
        plugin, translated = patch_plugin_config(value)
    except ChainError as e:
        raise ChainError(f"{where}: {e}") from None
    plugin, module_path = localise(plugin, files, modules, where)
    meta = obj["metadata"]
    typed_config: Obj = {"@type": WASM_TYPE, "config": plugin}
    original = value.get("typed_config") or {}
    if original.get("@type") in TYPED_STRUCTS:  # Envoy reads it as is: only the module path changes
        typed_config = {**original, "value": {**(original.get("value") or {}), "config": plugin}}
    item = ChainFilter(path, "EnvoyFilter", f"{meta.get('namespace')}/{meta.get('name')}",
                       {"name": str(value.get("name", objects.WASM_FILTER)), "typed_config": typed_config},
                       module_path, translated)
    names = [canonical(f.http_filter["name"]) if isinstance(f, ChainFilter) else f for f in chain]
    if operation == "INSERT_FIRST" or (operation == "INSERT_BEFORE" and sub is None):
        chain.insert(0, item)
    elif operation == "ADD" or (operation == "INSERT_AFTER" and sub is None):
        chain.append(item)
    elif operation in ("INSERT_BEFORE", "INSERT_AFTER"):
        known = known_as(sub, istio)
        if known is None or known not in names:
            raise ChainError(f"{where}: {operation} {sub!r}, which is not in the "
                             f"{(patch.get('match') or {}).get('context', 'ANY')} chain of {release_name(istio)} "
                             f"({', '.join(names)}): istiod skips the patch and the filter is missing")
        at = names.index(known)
        chain.insert(at if operation == "INSERT_BEFORE" else at + 1, item)
    else:
        raise ChainError(f"{where}: patch operation {operation!r} on an HTTP filter is not modelled")
