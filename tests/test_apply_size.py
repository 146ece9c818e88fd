"""The client-side-apply size of a ConfigMap, against kubectl itself: `kubectl create --save-config
--dry-run=client` writes the same last-applied-configuration annotation `kubectl apply` does. kubectl
only needs API discovery for that, which a loopback server answers here (no cluster, nothing sent)."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import kubectl, make_repo, proxy_wasm_module

from renderer.apply_size import ANNOTATION_LIMIT, last_applied_annotations_size

DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "configmaps", "singularName": "configmap", "namespaced": True, "kind": "ConfigMap",
         "verbs": ["create", "get", "list", "patch", "update", "delete"]}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}


class _Discovery(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        body = DISCOVERY.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Discovery)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def kubectl_annotations_size(server: str, manifest: Path, tmp_path: Path) -> int:
    config = tmp_path / "kubeconfig"  # empty: nothing from the machine's own kubeconfig
    config.write_text("apiVersion: v1\nkind: Config\n")
    proc = subprocess.run([kubectl(), "--server", server, "--kubeconfig", str(config), "create", "-f",
                           str(manifest), "--dry-run=client", "--save-config", "--validate=false", "-o", "json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    annotations = json.loads(proc.stdout)["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations
    # The API server's sum (apimachinery ValidateAnnotationsSize): bytes of every key and value.
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def test_the_size_is_what_kubectl_writes_even_for_characters_go_escapes(server: str, tmp_path: Path) -> None:
    obj = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "odd", "namespace": "default",
                        "annotations": {"note": "a <b> & c, caf\u00e9 \u2028 \u2029 \"q\" \\ \t"}},
           "data": {"k": "<&>\u2028\n\u00fc\U0001f600"}, "binaryData": {"b": base64.b64encode(b"\0\1\2").decode()}}
    manifest = tmp_path / "cm.json"
    manifest.write_text(json.dumps(obj))
    assert last_applied_annotations_size(obj) == kubectl_annotations_size(server, manifest, tmp_path)


def rendered_configmap(root: Path, pad: int) -> tuple[str, Path]:
    """Render the standard repository with a module padded by `pad` bytes; its ConfigMap's sync-options,
    and the ConfigMap as client-side apply would get it unmarked (the marking changes one annotation)."""
    repo = make_repo(root)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("edge", pad=pad))
    assert repo.cli("render").exit_code == 0
    cm = yaml.safe_load((repo.root / "base/default/example-filter.configmap.yaml").read_text())
    options = cm["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    cm["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] = "PruneLast=true"
    unmarked = root / "unmarked.json"
    unmarked.write_text(json.dumps(cm))
    return options, unmarked


def test_server_side_apply_is_marked_exactly_past_the_limit(server: str, tmp_path: Path) -> None:
    start = 195_000
    _, probe = rendered_configmap(tmp_path / "probe", start)
    measured = kubectl_annotations_size(server, probe, tmp_path)
    # 3 more bytes of binary are 4 more base64 characters and nothing else (the name's hash has a
    # fixed length): land on the last size that fits, then one step over.
    fit = start + 3 * ((ANNOTATION_LIMIT - measured) // 4)
    for pad, over in ((fit, False), (fit + 3, True)):
        options, unmarked = rendered_configmap(tmp_path / f"pad{pad}", pad)
        size = kubectl_annotations_size(server, unmarked, tmp_path)
        assert (size > ANNOTATION_LIMIT) == over, (pad, size)
        assert ANNOTATION_LIMIT - 4 < size <= ANNOTATION_LIMIT + 4
        assert options == ("PruneLast=true,ServerSideApply=true" if over else "PruneLast=true"), (size, options)
