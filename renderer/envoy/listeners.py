"""Listeners, clusters and bootstraps shaped like istiod's (istio/istio pilot/pkg: networking/core/
listener_inbound.go, listener.go, gateway.go, util/proxy_headers.go, route/route.go): HCM codec AUTO,
`server_name` istio-envoy on inbound and gateway listeners (outbound keeps Envoy's "envoy"), server
header OVERWRITE, XFCC APPEND_FORWARD inbound and SANITIZE_SET on gateways, `use_remote_address` false
on sidecars and true on gateways, path normalisation, escaped slashes kept, websocket upgrades, the UUID
request-id extension, and a catch-all route without a timeout (inbound) to one cluster. Built as data;
renderer.envoy.process writes it as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import objects
from ..model import Context
from .chain import Obj, ServiceChain

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UUID_TYPE = "type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"


def _hcm(context: Context, stat_prefix: str, route: Obj, http_filters: Sequence[Obj], *,
         stream_idle_timeout: str) -> Obj:
    hcm: Obj = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "normalize_path": True,
        "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        # istiod sets 0s (no idle timeout); callers that must detect a stalled stream pass their own.
        "stream_idle_timeout": stream_idle_timeout,
        "request_id_extension": {"typed_config": {"@type": UUID_TYPE}},
        "route_config": route,
        "http_filters": [*http_filters, {"name": objects.ROUTER, "typed_config": {"@type": ROUTER_TYPE}}],
    }
    if context == "SIDECAR_INBOUND":
        hcm.update({"server_name": "istio-envoy", "server_header_transformation": "OVERWRITE",
                    "use_remote_address": False, "forward_client_cert_details": "APPEND_FORWARD",
                    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True}})
    elif context == "SIDECAR_OUTBOUND":
        hcm.update({"server_header_transformation": "OVERWRITE", "use_remote_address": False})
    else:
        hcm.update({"server_name": "istio-envoy", "server_header_transformation": "OVERWRITE",
                    "use_remote_address": True, "xff_num_trusted_hops": 0,
                    "forward_client_cert_details": "SANITIZE_SET",
                    "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True}})
    return hcm


ACCESS_LOG_FIELDS = {
    "peer": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%",  # the socket, never an x-forwarded-for
    "code": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "upstream": "%UPSTREAM_HOST%",
}


def access_log(path: str, listener: str = "") -> Obj:
    """A JSON line per stream: its client port (which case), status, response flags and details."""
    fields = {**ACCESS_LOG_FIELDS, "listener": listener}
    return {"name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG_TYPE, "path": path, "log_format": {"json_format": fields}}}


def listener(name: str, context: Context, http_filters: Sequence[Obj], cluster: str, *,
             service_host: str = "service.default.svc.cluster.local", port: int = 8080,
             stream_idle_timeout: str = "0s", access_log_path: str | None = None,
             virtual_hosts: Sequence[Obj] = ()) -> Obj:
    """One listener on 127.0.0.1 (port 0: Envoy picks) shaped like istiod's for that context, whose
    chain is http_filters then the router, routing everything to `cluster` (or by `virtual_hosts`, a
    gateway's route table, when given)."""
    vhost: Obj
    if context == "SIDECAR_INBOUND":
        vhost = {"name": f"inbound|http|{port}", "domains": ["*"],
                 "routes": [{"name": "default", "match": {"prefix": "/"},
                             "decorator": {"operation": f"{service_host}:{port}/*"},
                             "route": {"cluster": cluster, "timeout": "0s",
                                       "max_stream_duration": {"max_stream_duration": "0s",
                                                               "grpc_timeout_header_max": "0s"}}}]}
        prefix = f"inbound_0.0.0.0_{port}"
    else:
        vhost = {"name": f"{service_host}:{port}", "domains": ["*"], "include_request_attempt_count": True,
                 "routes": [{"name": "default", "match": {"prefix": "/"},
                             "decorator": {"operation": f"{service_host}:{port}/*"},
                             "route": {"cluster": cluster, "timeout": "0s"}}]}
        prefix = f"outbound_0.0.0.0_{port}" if context == "SIDECAR_OUTBOUND" else f"outbound_{port}_gateway"
    route = {"name": name, "virtual_hosts": list(virtual_hosts) or [vhost], "validate_clusters": False}
    hcm = _hcm(context, prefix, route, http_filters, stream_idle_timeout=stream_idle_timeout)
    if access_log_path is not None:
        hcm["access_log"] = [access_log(access_log_path, name)]
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
            "filter_chains": [{"filters": [{"name": objects.HCM, "typed_config": hcm}]}]}


def cluster(name: str, port: int) -> Obj:
    """A plain HTTP/1.1 upstream on 127.0.0.1."""
    return {"name": name, "type": "STATIC", "connect_timeout": "2s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def bootstrap(listeners: Sequence[Obj], clusters: Sequence[Obj], *, node_id: str = "sidecar~127.0.0.1~wasm-gitops~default",
              node_cluster: str = "wasm-gitops") -> Obj:
    """A static bootstrap: the listeners, the clusters they route to, an admin on 127.0.0.1 (port 0)."""
    return {
        "node": {"id": node_id, "cluster": node_cluster},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": list(listeners), "clusters": list(clusters)},
    }


def chain_bootstrap(chains: Sequence[ServiceChain], upstream_port: int = 9, **kwargs: Any) -> Obj:
    """N chains -> N listeners (named after their service) routing to one upstream cluster."""
    name = "upstream"
    return bootstrap([listener(c.service, c.context, [f.http_filter for f in c.filters], name,
                               service_host=f"{c.service}.{c.namespace}.svc.cluster.local", **kwargs)
                      for c in chains], [cluster(name, upstream_port)])
