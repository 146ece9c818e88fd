"""Which Istio minor release introduced (or dropped) each API feature the renderer may emit.

One table, one row per feature, each row with the public source it was researched from
(docs/istio-versions.md has the same table in prose). The renderer uses it to pick the
EnvoyFilter shape (legacy Struct `config` up to 1.6, typed_config from 1.7), to decide whether
WasmPlugin may be used at all (1.12+) and which WasmPlugin fields exist in the target release.

`since` and `until` are inclusive minor versions: a feature with until=(1, 6) works in 1.6 and
not in 1.7. "Works" means the control plane of that release accepts the field and acts on it;
where the API accepted a field earlier than Istio honoured it, `since` is the release that
honours it and `note` says so, because rendering a silently ignored field is the bug we guard
against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FEATURES", "Feature", "parse_version", "supports"]


@dataclass(frozen=True)
class Feature:
    """One Istio API feature and the minor releases that support it."""

    name: str
    since: tuple[int, int]
    until: tuple[int, int] | None
    source: str
    note: str


FEATURES: tuple[Feature, ...] = (
    # ---- EnvoyFilter -------------------------------------------------------------------
    Feature(
        name="EnvoyFilter.configPatches",
        since=(1, 3),
        until=None,
        source="istio.io/v1.2 vs istio.io/v1.3 docs/reference/config/networking/v1alpha3/envoy-filter",
        note="1.1/1.2 had the older workloadLabels/filters API; configPatches + workloadSelector replaced it in 1.3.",
    ),
    Feature(
        name="EnvoyFilter.workloadSelector",
        since=(1, 3),
        until=None,
        source="istio.io/v1.2 vs istio.io/v1.3 docs/reference/config/networking/v1alpha3/envoy-filter",
        note="Before 1.3 the selector was spec.workloadLabels (a plain map).",
    ),
    Feature(
        name="EnvoyFilter.priority",
        since=(1, 11),
        until=None,
        source="istio/api PR #1975 (priority field, reviewed 2021-06) + istio/istio PR #32581; absent from istio.io/v1.8..v1.10 reference",
        note="Inferred from dates: the API PR landed after 1.10.0 (2021-05-18) and before 1.11.0 (2021-08-12). "
        "Cross-namespace ordering by priority was fixed only in 1.22 (istio/istio #49555).",
    ),
    Feature(
        name="legacy_config",
        since=(1, 3),
        until=(1, 6),
        source="istio/istio.io content/en/news/releases/1.7.x/announcing-1.7/upgrade-notes/index.md",
        note="Untyped `config:` (google.protobuf.Struct) in patch.value must be migrated to typed_config in 1.7.",
    ),
    Feature(
        name="typed_config",
        since=(1, 7),
        until=None,
        source="istio/istio.io content/en/news/releases/1.7.x/announcing-1.7/upgrade-notes/index.md; istio/istio PR #20156",
        note="The shape switch: typed_config (proto field names, canonical filter names, Any configuration) from 1.7, "
        "when untyped config stopped working. istiod could already resolve typed_config type URLs in 1.5/1.6 "
        "(PR #20156), but the Wasm filter of those proxies still took a string configuration. Since 1.19 every "
        "extension must carry its typed_config type URL (1.19 upgrade notes).",
    ),
    Feature(
        name="wasm.legacy_value",
        since=(1, 5),
        until=(1, 6),
        source="istio/istio issue #25217 (1.6 example); solo-io/wasm tools/wasme/cli/pkg/deploy/istio/istio_provider.go isOlderIstio",
        note="value: {name: envoy.filters.http.wasm, config: {config: {name, rootId, vmConfig{vmId, runtime, "
        "code.local.filename, allowPrecompiled}, configuration: <string>}}}. User Wasm modules arrived with 1.5.",
    ),
    Feature(
        name="wasm.configuration_string",
        since=(1, 5),
        until=(1, 6),
        source="solo-io/wasm tools/wasme/cli/pkg/deploy/filter/envoy_filter.go MakeIstioWasmFilter; envoyproxy/envoy-wasm PR #510",
        note="PluginConfig.configuration was a plain string in the Envoy of Istio <= 1.6; envoy-wasm PR #510 "
        "(2020-05-06) turned it into google.protobuf.Any.",
    ),
    Feature(
        name="wasm.configuration_any",
        since=(1, 7),
        until=None,
        source="istio/istio manifests/charts/istio-control/istio-discovery/templates/telemetryv2_1.7.yaml; solo-io/wasm issue #250",
        note="configuration: {\"@type\": type.googleapis.com/google.protobuf.StringValue, value: <string>}; "
        "Istio's own 1.7 proxies get StringValue configuration plus allow_precompiled.",
    ),
    Feature(
        name="wasm.typed_struct",
        since=(1, 7),
        until=None,
        source="istio/istio telemetryv2_1.7.yaml .. telemetryv2_1.9.yaml; solo-io/wasm envoy_filter.go MakeTypedIstioWasmFilter",
        note="typed_config: {\"@type\": type.googleapis.com/udpa.type.v1.TypedStruct, type_url: "
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm, value: {config: ...}}; Envoy decodes it, "
        "istiod does not need the Wasm proto. The form Istio's own charts used in 1.7-1.9.",
    ),
    Feature(
        name="wasm.typed_config_direct",
        since=(1, 8),
        until=None,
        source="envoyproxy/envoy PR #12159 (Wasm protos upstreamed 2020-07); istio/api PR #1652 (EXTENSION_CONFIG, 2020-09) "
        "whose example uses the direct type; istio/istio issue #32415",
        note="Inferred: istiod resolves typed_config against the Envoy protos compiled into it, and the Wasm filter "
        "proto reached go-control-plane only around the 1.7 branch cut. For exactly 1.7 render the TypedStruct "
        "form instead; not verified on a 1.7 control plane.",
    ),
    Feature(
        name="filter_names.deprecated",
        since=(1, 3),
        until=(1, 18),
        source="istio/istio PR #45675; istio/istio.io 1.19 upgrade-notes and change-notes",
        note="envoy.http_connection_manager / envoy.router etc. in match: the only names Istio <= 1.6 generated; "
        "1.7-1.18 matched them via an alias table (with a warning from 1.9, istio/istio PR #28931); 1.19 removed it.",
    ),
    Feature(
        name="filter_names.canonical",
        since=(1, 7),
        until=None,
        source="istio/istio PR #25966 (go-control-plane update, canonical names generated); 1.9 upgrade notes",
        note="envoy.filters.network.http_connection_manager / envoy.filters.http.router. Istio <= 1.6 generated the "
        "deprecated names, so a match on canonical names finds nothing there.",
    ),
    Feature(
        name="xds_v2_type_urls",
        since=(1, 3),
        until=(1, 8),
        source="istio/istio.io content/en/news/releases/1.9.x/announcing-1.9/upgrade-notes/index.md; 1.19 change notes",
        note="envoy.config.filter.*.v2 type URLs: rejected by the 1.9 proxy, rejected by istiod validation from 1.19.",
    ),
    # ---- WasmPlugin ----------------------------------------------------------------------
    Feature(
        name="WasmPlugin",
        since=(1, 12),
        until=None,
        source="istio/istio.io content/en/news/releases/1.12.x/announcing-1.12/_index.md; istio/api PR #1940",
        note="extensions.istio.io/v1alpha1 WasmPlugin (alpha).",
    ),
    Feature(
        name="WasmPlugin.selector",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 1); docs.rs istio-api-rs src/v1_12_0/extensions/v1alpha1/wasm_plugin.rs",
        note="selector.matchLabels.",
    ),
    Feature(
        name="WasmPlugin.url",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 2)",
        note="file://, oci:// and http(s)://; a scheme-less URL means oci://.",
    ),
    Feature(
        name="WasmPlugin.sha256",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 3)",
        note="Pattern (^$|^[a-f0-9]{64}$) in the CRD.",
    ),
    Feature(
        name="WasmPlugin.imagePullPolicy",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 4); istio/istio.io 1.15 change notes",
        note="OCI URLs since 1.12; also applied to http(s) URLs since 1.15.",
    ),
    Feature(
        name="WasmPlugin.imagePullSecret",
        since=(1, 14),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 5); istio/istio.io content/en/news/releases/1.14.x/announcing-1.14/change-notes/index.md",
        note="In the API since 1.12, but pulling from a private registry with it was implemented in 1.14.",
    ),
    Feature(
        name="WasmPlugin.pluginConfig",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 7)",
        note="google.protobuf.Struct.",
    ),
    Feature(
        name="WasmPlugin.pluginName",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 8)",
        note="Formerly rootID.",
    ),
    Feature(
        name="WasmPlugin.phase",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 9); istio-api-rs src/v1_12_0/.../wasm_plugin.rs",
        note="AUTHN, AUTHZ, STATS (UNSPECIFIED_PHASE = default).",
    ),
    Feature(
        name="WasmPlugin.priority",
        since=(1, 12),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto (field 10)",
        note="Int32Value; higher runs first within a phase.",
    ),
    Feature(
        name="WasmPlugin.vmConfig",
        since=(1, 14),
        until=None,
        source="istio/api PR #2227; istio/istio PR #37227; istio/istio.io 1.14 change notes",
        note="vmConfig.env (INLINE / HOST).",
    ),
    Feature(
        name="WasmPlugin.match",
        since=(1, 16),
        until=None,
        source="istio/api PR #2412; istio/istio PR #40862; istio/istio.io content/en/news/releases/1.16.x/announcing-1.16/change-notes/index.md",
        note="match: [{mode: CLIENT|SERVER|CLIENT_AND_SERVER, ports: [{number}]}]; hidden in the 1.15 API, implemented in 1.16.",
    ),
    Feature(
        name="WasmPlugin.failStrategy",
        since=(1, 19),
        until=None,
        source="istio/api PR #2799; istio/istio.io content/en/news/releases/1.19.x/announcing-1.19/change-notes/index.md",
        note="FAIL_CLOSE (default) / FAIL_OPEN.",
    ),
    Feature(
        name="WasmPlugin.failStrategy.FAIL_RELOAD",
        since=(1, 27),
        until=None,
        source="istio/api PR #3471; istio/istio PR #55604; istio/istio.io 1.27 change notes",
        note="Reload a failed VM on new requests.",
    ),
    Feature(
        name="WasmPlugin.type",
        since=(1, 20),
        until=None,
        source="istio/api PR #2904; istio/istio.io content/en/news/releases/1.20.x/announcing-1.20/change-notes/index.md",
        note="HTTP (default) / NETWORK.",
    ),
    Feature(
        name="WasmPlugin.targetRef",
        since=(1, 20),
        until=None,
        source="istio/istio.io 1.20 change notes (attach WasmPlugin to Gateway via targetRef)",
        note="Single reference; hidden from docs once targetRefs arrived.",
    ),
    Feature(
        name="WasmPlugin.targetRefs",
        since=(1, 22),
        until=None,
        source="istio/api extensions/v1alpha1/wasm.proto targetRefs comment (\"Istio versions prior to 1.22\")",
        note="List of references; mutually exclusive with selector.",
    ),
    # ---- TrafficExtension ------------------------------------------------------------------
    Feature(
        name="TrafficExtension",
        since=(1, 30),
        until=None,
        source="istio/istio commit 9a028a975ce (PR #59052, \"First-class Lua and WASM support via new TrafficExtension "
        "API\", 2026-04-08): in tag 1.30.0, not in 1.29.x; pilot/pkg/model/extensions.go TrafficExtensionWrapper",
        note="extensions.istio.io/v1alpha1 TrafficExtension: selector/targetRefs, phase, priority and match at the top, "
        "the Wasm settings (url, sha256, pluginName, pluginConfig, failStrategy, ...) under wasm (or lua instead).",
    ),
    # ---- sidecar injection -------------------------------------------------------------------
    Feature(
        name="injection.imageVolume",
        since=(1, 24),
        until=None,
        source="istio/istio pkg/kube/inject/webhook.go applyOverlayYAML (the injected template is unmarshalled into "
        "corev1.Pod); go.mod k8s.io/api v0.30.1 in 1.23.0, v0.31.1 in 1.24.0",
        note="The userVolume annotation's volumes pass through the injection template unchanged (toYaml of the JSON "
        "value), but the result is decoded into the corev1.Pod of the k8s.io/api Istio is built with. "
        "ImageVolumeSource arrived in k8s.io/api v0.31; older Istio drops the image field silently and the pod "
        "gets a volume without a source (an emptyDir once defaulted).",
    ),
)

_BY_NAME: dict[str, Feature] = {feature.name: feature for feature in FEATURES}
# A duplicated name would make supports() silently pick one row; fail at import instead.
if len(_BY_NAME) != len(FEATURES):
    raise AssertionError("duplicate feature names in FEATURES")

# "1.22", "1.22.3", "v1.22.3", "1.22.0-beta.1": Istio tags carry an optional "v" and pre-release suffix.
_VERSION = re.compile(r"v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:\.(0|[1-9][0-9]*)(?:-[0-9A-Za-z.-]+)?)?")


def parse_version(s: str) -> tuple[int, int] | None:
    """Return (major, minor) of an Istio version string, or None if it is not one."""
    match = _VERSION.fullmatch(s.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def supports(version: tuple[int, int], feature_name: str) -> bool:
    """True if Istio `version` (major, minor) supports the feature.

    Raises KeyError for an unknown feature name, because a typo must not read as "unsupported".
    """
    try:
        feature = _BY_NAME[feature_name]
    except KeyError:
        raise KeyError(f"unknown Istio feature {feature_name!r}; known: {', '.join(sorted(_BY_NAME))}") from None
    if version < feature.since:
        return False
    return feature.until is None or version <= feature.until
