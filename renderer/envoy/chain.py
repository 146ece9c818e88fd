"""What the chains are made of: the Wasm HTTP filters a sidecar or gateway loads, per service, and the
error a tree that gives no loadable chain raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import objects
from ..model import Context

Obj = dict[str, Any]

WASM_TYPE = objects.WASM_TYPE
STRING_VALUE = objects.STRING_VALUE
TYPED_STRUCTS = ("type.googleapis.com/udpa.type.v1.TypedStruct", "type.googleapis.com/xds.type.v3.TypedStruct")


class ChainError(Exception):
    """The rendered tree does not give a service a loadable chain: a message naming what and where."""


@dataclass(frozen=True)
class ChainFilter:
    """One Wasm HTTP filter of a chain, as Envoy loads it."""

    source: str  # the rendered file the object came from
    kind: str  # EnvoyFilter | WasmPlugin
    object_name: str  # <namespace>/<name> of the object
    http_filter: Obj  # {name, typed_config}: the module at a local file
    module_path: str  # the filename the rendered object names (in the pod)
    translated: str = ""  # what was changed for current Envoy, "" when nothing

    @property
    def plugin(self) -> Obj:
        typed = self.http_filter["typed_config"]
        plugin: Obj = typed["value"]["config"] if typed.get("@type") in TYPED_STRUCTS else typed["config"]
        return plugin


@dataclass(frozen=True)
class ServiceChain:
    service: str
    namespace: str
    context: Context
    filters: tuple[ChainFilter, ...]
    component_log_level: tuple[tuple[str, str], ...] = ()  # from sidecar.istio.io/componentLogLevel
