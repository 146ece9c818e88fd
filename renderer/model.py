"""The validated model of a filters.yaml: frozen, typed, and complete (every default filled in)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from .config_schema import ConfigSchema

OutputKind = Literal["EnvoyFilter", "WasmPlugin", "TrafficExtension"]
# configMap: the binary in a ConfigMap, mounted into istio-proxy. oci: istio-agent pulls the image named by
# digest (WasmPlugin, TrafficExtension). imageVolume: the kubelet mounts the image as a volume.
Delivery = Literal["configMap", "oci", "imageVolume"]
Context = Literal["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]
ArgoCDMode = Literal["Application", "ApplicationSet"]
FluxMode = Literal["Kustomization", "PerService"]
FluxSourceKind = Literal["GitRepository", "OCIRepository", "Bucket"]
Paused = Literal["request", "response", "none"]
ControlPlane = Literal["higress", "istio", "envoy-gateway"]

SCHEMA_FILE = "filters.schema.json"  # the spec's JSON Schema, packaged under renderer/schemas/
MOUNT_DIR = "/var/local/lib/wasm-filters"
IMAGE_FILE = "plugin.wasm"  # where the compat image layer puts the module, so where the volume shows it


def _default(value: Any, at: str, words: str | None = None) -> Any:
    """A default, where the schema describes it (a JSON pointer) and the words it says it in there."""
    return field(default=value, metadata={"at": at, "words": str(value) if words is None else words})


@dataclass(frozen=True)
class Defaults:
    """What filters.yaml means where it leaves a key out: the one table the spec stage fills the model from.
    The schema's descriptions state each in prose; a test reads every one there."""

    kubernetes: str = _default("1.33", "/properties/kubernetes")  # the oldest release with image volumes
    output_kind: OutputKind = _default("EnvoyFilter", "/$defs/output/properties/kind")
    runtime: str = _default("envoy.wasm.runtime.v8", "/$defs/filter/properties/runtime")
    delivery: Delivery = _default("configMap", "/$defs/filter/properties/delivery", "the default without image")
    image_delivery: Delivery = _default("oci", "/$defs/filter/properties/delivery", "the default with image")
    root_id: str = _default("", "/$defs/filter/properties/rootId", "Default: empty")
    allow_precompiled: bool = _default(True, "/$defs/filter/properties/allowPrecompiled", "Default true")
    fail_open: bool = _default(False, "/$defs/filter/properties/failOpen", "false, the default")
    paused: Paused = _default("none", "/$defs/testExpect/properties/paused", "none (default)")
    namespace: str = _default("default", "/$defs/service/properties/namespace", 'Default "default"')
    context: Context = _default("SIDECAR_INBOUND", "/$defs/service/properties/context", "SIDECAR_INBOUND (default)")
    gitops_name: str = _default("wasm-filters", "/$defs/gitops/properties/name")
    target_revision: str = _default("HEAD", "/$defs/gitops/properties/targetRevision")
    argocd_mode: ArgoCDMode = _default("Application", "/$defs/argocd/properties/mode", "Application (default)")
    argocd_namespace: str = _default("argocd", "/$defs/argocd/properties/namespace")
    argocd_project: str = _default("default", "/$defs/argocd/properties/project", "Default default")
    destination_server: str = _default("https://kubernetes.default.svc", "/$defs/argocd/properties/destinationServer")
    automated: bool = _default(True, "/$defs/argocd/properties/automated", "Default true")
    flux_mode: FluxMode = _default("Kustomization", "/$defs/flux/properties/mode", "Kustomization (default)")
    flux_namespace: str = _default("flux-system", "/$defs/flux/properties/namespace")
    source_kind: FluxSourceKind = _default("GitRepository", "/$defs/flux/properties/sourceRef/properties/kind")
    source_name: str = _default("flux-system", "/$defs/flux/properties/sourceRef", "name: flux-system")
    interval: str = _default("10m", "/$defs/flux/properties/interval", "Default 10m")
    higress_namespace: str = _default("higress-system", "/$defs/gateway/properties/namespace")
    istio_gateway_namespace: str = _default("istio-system", "/$defs/gateway/properties/namespace")
    envoy_gateway_namespace: str = _default("default", "/$defs/gateway/properties/namespace", "(default default)")
    istio_gateway_port: int = _default(80, "/$defs/gateway/properties/port")
    gateway_global: bool = _default(True, "/$defs/gatewayFilter/oneOf/1/properties/global", "Default true")
    build_image: str = _default("registry.cn-hangzhou.aliyuncs.com/acs/wasmsdk:v0.1",
                                "/$defs/filter/properties/build/properties/image")

    def gateway_namespace(self, plane: ControlPlane) -> str:
        return {"higress": self.higress_namespace, "istio": self.istio_gateway_namespace,
                "envoy-gateway": self.envoy_gateway_namespace}[plane]

    @property
    def kubernetes_version(self) -> tuple[int, int]:
        major, minor = self.kubernetes.split(".")
        return int(major), int(minor)


DEFAULTS: Final = Defaults()


@dataclass(frozen=True)
class Binary:
    """A filter's .wasm, read, hashed and encoded once however many services load it."""

    sha256: str
    size: int
    path: Path | None = None  # None for an oci:// reference
    oci: str | None = None
    data: bytes = field(default=b"", compare=False, repr=False)

    @property
    def is_oci(self) -> bool:
        return self.oci is not None


@dataclass(frozen=True)
class ImageRef:
    """A filter's image as pushed and locked: always used by digest, never by the mutable tag."""

    repository: str
    tag: str
    manifest_digest: str  # sha256:<hex>
    variant: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.manifest_digest}"


@dataclass(frozen=True)
class Build:
    context: Path
    image: str | None


@dataclass(frozen=True)
class BuildTarget:
    """A filter to compile, read from a spec whose binaries need not exist yet."""

    name: str
    context: Path  # absolute directory holding the filter's sources and Makefile
    image: str | None  # the filter's own SDK image, when filters.yaml names one
    wasm: Path  # absolute path of the module the build must produce


@dataclass(frozen=True)
class HttpMessageSpec:
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    trailers: tuple[tuple[str, str], ...] = ()
    chunks: int | None = None  # the body sent in this many pieces (chunked), None: in one


@dataclass(frozen=True)
class LocalReplySpec:
    status: int
    body: str | None = None  # None accepts any body


@dataclass(frozen=True)
class TestExpect:
    """`expect:` of one test. Empty fields assert nothing, except `paused` and `local_reply`
    (absent: the stream must not stall, and no local reply may be sent)."""

    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    absent_request_headers: tuple[str, ...] = ()
    absent_response_headers: tuple[str, ...] = ()
    local_reply: LocalReplySpec | None = None
    paused: Paused = DEFAULTS.paused
    logs: tuple[str, ...] = ()  # regular expressions over "level: message" lines
    request_body: str | None = None
    response_body: str | None = None
    status: int | None = None
    config_rejected: bool = False


@dataclass(frozen=True)
class TestSpec:
    """One declared verify test: of a filter (config may replace the filter's) or of a service."""

    name: str
    config: str | None  # delivered plugin configuration for this test, None = the filter's
    request: HttpMessageSpec
    response: HttpMessageSpec
    expect: TestExpect = field(default_factory=TestExpect)


@dataclass(frozen=True)
class Filter:
    name: str
    binary: Binary
    root_id: str
    vm_id: str
    runtime: str
    allow_precompiled: bool
    fail_open: bool
    config: str | None  # the plugin configuration as delivered (JSON text), None when absent
    phase: str | None
    priority: int | None
    build: Build | None
    tests: tuple[TestSpec, ...] = ()
    delivery: Delivery = DEFAULTS.delivery
    image: ImageRef | None = None  # set when delivery is oci or imageVolume
    # What every configuration of this filter was checked against (configSchema, or a spec.yaml beside it).
    config_schema: ConfigSchema | None = field(default=None, compare=False, repr=False)

    @property
    def file_name(self) -> str:
        return f"{self.name}.wasm"

    @property
    def mounted_path(self) -> str:
        if self.delivery == "imageVolume":
            return f"{self.image_mount_dir}/{IMAGE_FILE}"
        return f"{MOUNT_DIR}/{self.file_name}"

    @property
    def image_mount_dir(self) -> str:
        return f"{MOUNT_DIR}/{self.name}"

    @property
    def in_configmap(self) -> bool:
        return not self.binary.is_oci and self.delivery == "configMap"

    @property
    def oci_url(self) -> str | None:
        """What istio-agent pulls, or None when the module is a file in the proxy's filesystem."""
        if self.binary.oci is not None:
            return self.binary.oci
        if self.delivery == "oci" and self.image is not None:
            return f"oci://{self.image.pinned}"
        return None

    @property
    def pulled_sha256(self) -> str:
        """The sha256 istio-agent checks: for an image it is the manifest digest (pkg/wasm/cache.go)."""
        if self.delivery == "oci" and self.image is not None:
            return self.image.manifest_digest.removeprefix("sha256:")
        return self.binary.sha256


@dataclass(frozen=True)
class ServiceFilter:
    filter: Filter
    config: str | None  # effective configuration for this service (override or the filter's)
    own_config: bool = False  # the service's entry sets its own config (else the filter's applies)


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    deployment: str
    selector: tuple[tuple[str, str], ...]
    resources: tuple[str, ...]  # as written: local paths are relative to the spec directory
    context: Context
    filters: tuple[ServiceFilter, ...]
    proxy_log_level: tuple[tuple[str, str], ...]
    output: OutputKind
    tests: tuple[TestSpec, ...] = ()  # through the whole chain of this service

    @property
    def mounts_configmaps(self) -> bool:
        return any(sf.filter.in_configmap for sf in self.filters)

    @property
    def image_volumes(self) -> tuple[Filter, ...]:
        return tuple(sf.filter for sf in self.filters if sf.filter.delivery == "imageVolume")


@dataclass(frozen=True)
class ArgoCD:
    mode: ArgoCDMode
    namespace: str  # where the Application / ApplicationSet objects live (Argo CD's namespace)
    project: str
    destination_server: str
    automated: bool
    # With clusters: (wave, how many of its Applications sync at once), for the waves that ask.
    max_update: tuple[tuple[str, int | str], ...] = ()


@dataclass(frozen=True)
class FluxSourceRef:
    kind: FluxSourceKind
    name: str
    namespace: str | None  # None: the Kustomization's own namespace


@dataclass(frozen=True)
class Flux:
    mode: FluxMode
    namespace: str
    source_ref: FluxSourceRef
    interval: str


@dataclass(frozen=True)
class GitOps:
    """How Argo CD and/or Flux find the rendered tree: the objects written under gitops/."""

    name: str
    repo_url: str | None  # required with argocd; Flux reads the repository through its sourceRef
    target_revision: str
    path: str | None  # inside the repository, normalised; None: the output dir relative to the spec dir
    argocd: ArgoCD | None
    flux: Flux | None


# An Istio gateway's pods when the spec names no selector (the istio/gateway Helm chart's and istioctl's
# default ingress gateway labels; the schema's selector description says so). A map, so not in DEFAULTS.
ISTIO_GATEWAY_SELECTOR: Final = (("istio", "ingressgateway"),)
# The label Istio puts on the pods of a gateway it deploys for a Gateway API Gateway.
GATEWAY_API_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True)
class GatewayRule:
    """Where a scoped configuration applies (Higress matchRules: any of domain, ingress, service; Istio:
    domain; Envoy Gateway: httpRoute)."""

    domain: tuple[str, ...]
    ingress: tuple[str, ...]
    service: tuple[str, ...]
    config: str  # JSON text of a map
    http_route: tuple[str, ...] = ()


@dataclass(frozen=True)
class GatewayFilter:
    filter: Filter
    config: str | None  # the configuration where no rule matches, JSON text of a map
    global_: bool  # False: only where a rule matches
    rules: tuple[GatewayRule, ...] = ()


@dataclass(frozen=True)
class HttpRoute:
    """An HTTPRoute of an Envoy Gateway Gateway, as it routes: what verify builds its route from."""

    name: str
    hostnames: tuple[str, ...]
    path_prefix: str = "/"


@dataclass(frozen=True)
class Gateway:
    name: str
    control_plane: ControlPlane
    namespace: str
    filters: tuple[GatewayFilter, ...]
    selector: tuple[tuple[str, str], ...] = ()  # istio: the gateway Deployment's pod labels
    gateway_ref: str | None = None  # the Gateway API Gateway the objects attach to (targetRefs)
    port: int = 80  # istio: the Gateway server's port, in istiod's route and virtual host names
    http_routes: tuple[HttpRoute, ...] = ()
    tests: tuple[TestSpec, ...] = ()
    output: OutputKind = "WasmPlugin"  # istio, without rules: WasmPlugin or TrafficExtension

    @property
    def target_gateway(self) -> str:
        return self.gateway_ref or self.name


@dataclass(frozen=True)
class Cluster:
    """One target of the rollout: its Istio, and what each service it runs is rendered as there."""

    name: str
    istio: tuple[int, int]
    istio_text: str
    labels: tuple[tuple[str, str], ...]  # sorted; the Argo CD cluster generator selects by all of them
    outputs: tuple[tuple[str, OutputKind], ...]  # (service, output kind) for every service it runs

    @property
    def wave(self) -> str:
        return dict(self.labels)["wave"]  # the schema requires it

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.outputs)


@dataclass(frozen=True)
class FilterSet:
    spec_path: Path
    root: Path  # the spec's directory: every local path must stay inside it
    istio: tuple[int, int]
    istio_text: str
    filters: tuple[Filter, ...]
    services: tuple[Service, ...]
    gitops: GitOps | None = None
    kubernetes: tuple[int, int] = DEFAULTS.kubernetes_version
    gateways: tuple[Gateway, ...] = ()
    clusters: tuple[Cluster, ...] = ()

    def waves(self) -> tuple[str, ...]:
        """The clusters' waves in the order they first appear: the rollout order."""
        return tuple(dict.fromkeys(c.wave for c in self.clusters))
