"""The registry round trip, for real: the CNCF distribution registry (Debian's docker-registry package)
started on 127.0.0.1 by these tests, storage in the test's directory, stopped by the fixture."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Repo, kustomize, make_repo, proxy_wasm_module
from wasm_sections import with_custom_section

from renderer import oci

REGISTRY = "/usr/bin/docker-registry"
EXAMPLE = REPO / "filters" / "example-filter" / "example-filter.wasm"


def _registry_binary() -> str:
    path = shutil.which("docker-registry") or (REGISTRY if Path(REGISTRY).exists() else None)
    if path is None:
        pytest.fail("docker-registry is not installed: the registry tests run the real CNCF distribution registry "
                    "(apt-get install -y docker-registry apache2-utils)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Registry:
    host: str
    process: subprocess.Popen[bytes]
    log: Path

    def repository(self, path: str) -> str:
        return f"{self.host}/{path}"


def _start(root: Path, htpasswd: Path | None = None) -> Registry:
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "wasm-gitops-tests"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "wasm-gitops-tests", "path": str(htpasswd)}}
    (root / "config.yml").write_text(json.dumps(config))  # JSON is YAML: the registry reads it as such
    log = root / "registry.log"
    with log.open("wb") as out:
        process = subprocess.Popen([_registry_binary(), "serve", str(root / "config.yml")], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # 401: up, and asking for credentials
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the registry did not start:\n{log.read_text()}")
            time.sleep(0.05)
    return Registry(f"127.0.0.1:{port}", process, log)


def _stop(registry: Registry) -> None:
    registry.process.terminate()
    try:
        registry.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        registry.process.kill()
        registry.process.wait()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = _start(tmp_path_factory.mktemp("registry"))
    try:
        yield reg
    finally:
        _stop(reg)


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("private-registry")
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        pytest.fail("htpasswd is not installed (apt-get install -y apache2-utils): the 401 case needs a registry "
                    "with bcrypt htpasswd logins")
    line = subprocess.run([htpasswd, "-nbB", "pusher", "s3cret"], capture_output=True, text=True, check=True).stdout
    (root / "htpasswd").write_text(line.strip() + "\n")
    reg = _start(root, root / "htpasswd")
    try:
        yield reg
    finally:
        _stop(reg)


@pytest.fixture(autouse=True)
def no_machine_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The tests see only the credentials they write, never the machine's."""
    for name in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def spec(registry_host: str, *, delivery: str = "oci", kind: str = "WasmPlugin", istio: str = "1.30",
         tests: bool = False) -> str:
    declared = """
    tests:
      - name: adds the demo header
        response: {headers: {":status": "200"}}
        expect:
          responseHeaders: {resp-header-demo: added by our filter}""" if tests else ""
    return f"""\
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "{istio}"
kubernetes: "1.35"
output: {{kind: {kind}}}
filters:
  - name: example-filter
    wasm: filters/example-filter.wasm
    rootId: my_root_id
    delivery: {delivery}
    image: {{repository: {registry_host}/mesh/example-filter, tag: "1.2.0"}}{declared}
services:
  - name: productpage
    deployment: productpage-v1
    resources: [apps/productpage]
    filters: [example-filter]
"""


@pytest.fixture
def image_repo(tmp_path: Path, registry: Registry) -> Repo:
    repo = make_repo(tmp_path / "repo")
    repo.write("filters/example-filter.wasm", EXAMPLE.read_bytes())
    repo.write("filters.yaml", spec(registry.host))
    return repo


def lock(repo: Repo) -> dict[str, dict[str, str]]:
    entries: dict[str, dict[str, str]] = json.loads((repo.root / "filters.lock").read_text())["filters"]
    return entries


# ------------------------------------------------------------------------------------------ round trip

def test_push_pull_inspect_round_trip(image_repo: Repo, registry: Registry, tmp_path: Path) -> None:
    result = image_repo.cli("push")
    assert result.exit_code == 0, result.output
    entry = lock(image_repo)["example-filter"]
    module = EXAMPLE.read_bytes()
    # The digest in the registry is the digest of the same image built locally, on this or any machine.
    assert image_repo.cli("package", "--out", str(tmp_path / "layouts")).exit_code == 0
    local = oci.read_layout(tmp_path / "layouts" / "example-filter")
    assert entry["manifestDigest"] == local.digest
    assert f"pushed example-filter: {registry.host}/mesh/example-filter:1.2.0 {local.digest} (compat" in result.output
    for reference in (f"oci://{registry.host}/mesh/example-filter:1.2.0",
                      f"oci://{registry.host}/mesh/example-filter@{entry['manifestDigest']}"):
        pulled = oci.pull(reference, {})
        assert (pulled.verdict.layout, pulled.verdict.manifest_digest, pulled.module) == \
            ("compat", entry["manifestDigest"], module)
    assert entry["moduleSha256"] == oci.build_image(module).module_sha256
    inspected = image_repo.run("inspect", f"oci://{registry.host}/mesh/example-filter:1.2.0")
    assert inspected.exit_code == 0, inspected.output
    assert "OCI image, compat variant" in inspected.output
    assert "proxy-wasm module, ABI 0.2.1" in inspected.output


def test_a_second_push_of_the_same_bytes_gives_the_same_digest(image_repo: Repo) -> None:
    assert image_repo.cli("push").exit_code == 0
    before = (image_repo.root / "filters.lock").read_bytes()
    again = image_repo.cli("push")
    assert again.exit_code == 0, again.output
    assert "filters.lock: unchanged" in again.output
    assert (image_repo.root / "filters.lock").read_bytes() == before
    image_repo.write("filters/example-filter.wasm", proxy_wasm_module("changed"))
    assert image_repo.cli("push").exit_code == 0
    assert lock(image_repo)["example-filter"]["manifestDigest"] != json.loads(before)["filters"]["example-filter"][
        "manifestDigest"]


def test_the_oci_variant_round_trip(image_repo: Repo, registry: Registry) -> None:
    assert image_repo.cli("push", "--variant", "oci").exit_code == 0
    entry = lock(image_repo)["example-filter"]
    assert entry["variant"] == "oci"
    pulled = oci.pull(f"oci://{registry.host}/mesh/example-filter@{entry['manifestDigest']}", {})
    assert (pulled.verdict.layout, pulled.module) == ("oci", EXAMPLE.read_bytes())


def test_render_with_the_lock_and_verify_the_pulled_module(image_repo: Repo, registry: Registry) -> None:
    image_repo.write("filters.yaml", spec(registry.host, tests=True))
    assert image_repo.cli("push").exit_code == 0
    digest = lock(image_repo)["example-filter"]["manifestDigest"]
    for kind in ("WasmPlugin", "TrafficExtension"):
        image_repo.write("filters.yaml", spec(registry.host, kind=kind, tests=True))
        assert image_repo.cli("render").exit_code == 0
        obj = image_repo.load(f"overlays/productpage/example-filter.{kind.lower()}.yaml")
        wasm = obj["spec"]["wasm"] if kind == "TrafficExtension" else obj["spec"]
        assert wasm["url"] == f"oci://{registry.host}/mesh/example-filter@{digest}"
        assert wasm["sha256"] == digest.removeprefix("sha256:")
        # What istio-agent pulls from that URL is exactly the module the filter's tests pass with.
        pulled = oci.pull(wasm["url"], {})
        assert pulled.verdict.manifest_digest.removeprefix("sha256:") == wasm["sha256"]
        module = oci.pull_pinned(wasm["url"], lock(image_repo)["example-filter"]["moduleSha256"], {})
        assert module == pulled.module == EXAMPLE.read_bytes()
        with pytest.raises(oci.ImageError, match="holds a module with sha256"):
            oci.pull_pinned(wasm["url"], "0" * 64, {})
        image_repo.write("pulled/example-filter.wasm", module)
        image_repo.write("pulled.yaml", image_repo.spec.read_text().replace(
            "wasm: filters/example-filter.wasm", "wasm: pulled/example-filter.wasm").replace(
            "delivery: oci", "delivery: configMap"))
        verified = image_repo.run("verify", "-f", str(image_repo.root / "pulled.yaml"))
        assert verified.exit_code == 0, verified.output
    image_repo.write("filters.yaml", spec(registry.host, delivery="imageVolume", kind="EnvoyFilter"))
    assert image_repo.cli("render").exit_code == 0
    built = kustomize(image_repo.root / "overlays" / "productpage")
    (deployment,) = [o for o in built if o["kind"] == "Deployment"]
    volumes = json.loads(deployment["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/userVolume"])
    assert volumes == {"wasm-example-filter": {"image": {
        "reference": f"{registry.host}/mesh/example-filter@{digest}", "pullPolicy": "IfNotPresent"}}}


def test_a_2_5_mb_filter_goes_through_the_registry(image_repo: Repo, registry: Registry) -> None:
    big = proxy_wasm_module("go-sized", pad=2_500_000)
    image_repo.write("filters/example-filter.wasm", big)
    assert image_repo.cli("push").exit_code == 0
    entry = lock(image_repo)["example-filter"]
    assert oci.pull(f"oci://{registry.host}/mesh/example-filter@{entry['manifestDigest']}", {}).module == big
    for delivery, kind in (("oci", "WasmPlugin"), ("imageVolume", "EnvoyFilter"), ("imageVolume", "TrafficExtension")):
        image_repo.write("filters.yaml", spec(registry.host, delivery=delivery, kind=kind))
        result = image_repo.cli("render")
        assert result.exit_code == 0, result.output
    image_repo.write("filters.yaml", spec(registry.host, delivery="configMap", kind="EnvoyFilter"))
    refused = image_repo.cli("render")
    assert refused.exit_code == 2 and "a ConfigMap holds at most 1,048,576" in refused.output


# ------------------------------------------------------------------------------------------ refusals

def _refused(repo: Repo, *args: str) -> str:
    before = (repo.root / "filters.lock").read_bytes()
    started = time.monotonic()
    result = repo.cli("push", *args)
    assert result.exit_code == 2, result.output
    assert time.monotonic() - started < 20, "a refused push must not retry for minutes"
    assert (repo.root / "filters.lock").read_bytes() == before
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wasm-gitops: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_a_registry_that_asks_for_a_login(image_repo: Repo, registry: Registry, private_registry: Registry,
                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert image_repo.cli("push").exit_code == 0  # a lock from an earlier push, which must survive
    image_repo.write("filters.yaml", spec(private_registry.host))
    line = _refused(image_repo)
    assert line.startswith(f"wasm-gitops: {private_registry.host}: login: 401 Unauthorized (no credentials for it")
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {private_registry.host: {"username": "pusher", "password": "wrong"}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    assert f"the credentials from {auth} were refused" in _refused(image_repo)
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {private_registry.host: {"auth": "cHVzaGVyOnMzY3JldA=="}}}))
    monkeypatch.delenv("REGISTRY_AUTH_FILE")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    result = image_repo.cli("push")
    assert result.exit_code == 0, result.output
    entry = lock(image_repo)["example-filter"]
    assert entry["repository"] == f"{private_registry.host}/mesh/example-filter"
    assert oci.pull(f"oci://{private_registry.host}/mesh/example-filter:1.2.0", {"DOCKER_CONFIG": str(docker)}).module \
        == EXAMPLE.read_bytes()


def test_a_registry_that_is_down(image_repo: Repo) -> None:
    assert image_repo.cli("push").exit_code == 0
    port = _free_port()
    image_repo.write("filters.yaml", spec(f"127.0.0.1:{port}"))
    line = _refused(image_repo)
    assert line == (f"wasm-gitops: 127.0.0.1:{port}: cannot connect to the registry (connection refused); check the "
                    "host name in image.repository and that the registry is up")


def test_a_host_that_is_no_registry(image_repo: Repo) -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert image_repo.cli("push").exit_code == 0
        host = f"127.0.0.1:{server.server_address[1]}"
        image_repo.write("filters.yaml", spec(host))
        assert _refused(image_repo) == (f"wasm-gitops: {host}: is not an OCI registry (GET /v2/ answered HTTP 404); "
                                        "check the host name in image.repository")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# ------------------------------------------------------------------------------------------ foreign images

def _push_raw(registry: Registry, path: str, manifest: dict[str, object], blobs: dict[str, bytes],
              media_type: str = oci.OCI_MANIFEST) -> str:
    image = oci.Image(oci.canonical_json(manifest), media_type, blobs, "compat", "")
    ref = oci.parse_reference(f"{registry.host}/{path}:1")
    return oci.RegistryClient(ref, {}).push(image, "1")


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": oci.sha256_digest(data), "size": len(data)}


def test_inspect_refuses_a_single_layer_wasm_image_with_istios_reason(registry: Registry, repo: Repo) -> None:
    module = EXAMPLE.read_bytes()
    empty = b"{}"
    _push_raw(registry, "vendor/single-layer", {
        "schemaVersion": 2, "mediaType": oci.OCI_MANIFEST, "artifactType": "application/wasm",
        "config": _desc("application/vnd.oci.empty.v1+json", empty), "layers": [_desc("application/wasm", module)]},
        {oci.sha256_digest(empty): empty, oci.sha256_digest(module): module})
    with pytest.raises(oci.ImageError, match="istio-agent cannot load it: as the compat variant"):
        oci.pull_pinned(f"{registry.host}/vendor/single-layer:1", None, {})
    result = repo.run("inspect", f"oci://{registry.host}/vendor/single-layer:1")
    assert result.exit_code == 2, result.output
    assert "none of Istio's three Wasm image layouts" in result.output
    assert ("istio-agent cannot load it: as the compat variant: the last layer is application/wasm, not "
            "application/vnd.oci.image.layer.v1.tar+gzip; as the oci variant: number of layers must be 2 but got 1"
            in result.output)
    as_json = json.loads(repo.run("inspect", f"oci://{registry.host}/vendor/single-layer:1", "--format", "json").output)
    assert as_json["layout"] is None and as_json["module"] is None and as_json["exit_code"] == 2


def test_inspect_names_a_docker_image(registry: Registry, repo: Repo, tmp_path: Path) -> None:
    import io
    import tarfile

    module = EXAMPLE.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(module)
        tar.addfile(info, io.BytesIO(module))
    layer, config = buf.getvalue(), b'{"architecture":"amd64","os":"linux"}'
    _push_raw(registry, "vendor/docker", {
        "schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
        "config": _desc("application/vnd.docker.container.image.v1+json", config),
        "layers": [_desc(oci.DOCKER_LAYER_TGZ, layer)]},
        {oci.sha256_digest(layer): layer, oci.sha256_digest(config): config}, oci.DOCKER_MANIFEST)
    result = repo.run("inspect", f"oci://{registry.host}/vendor/docker:1")
    assert result.exit_code == 0, result.output
    assert "Docker image (schema 2 manifest" in result.output


def test_progress_goes_to_a_terminal_only(image_repo: Repo, registry: Registry) -> None:
    from renderer import publish

    quiet = image_repo.cli("push")  # CliRunner's stderr is no terminal
    assert quiet.exit_code == 0 and "blob" not in quiet.output
    lines: list[str] = []
    image_repo.write("filters/example-filter.wasm", proxy_wasm_module("progress"))
    publish.push(image_repo.spec, (), "compat", {}, lines.append)
    name = f"{registry.host}/mesh/example-filter"
    assert lines[0] == f"pushing example-filter to {name}:1.2.0"
    assert [line.split(" ", 2)[1] for line in lines[1:]] == ["blob", "blob", "manifest"]
    assert all(line.startswith(f"{name}: ") for line in lines[1:])


def test_a_layout_copied_by_skopeo_keeps_its_digest_in_the_registry(image_repo: Repo, registry: Registry,
                                                                    tmp_path: Path) -> None:
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.fail("skopeo is not installed (apt-get install -y skopeo)")
    assert image_repo.cli("package", "--out", str(tmp_path / "layouts")).exit_code == 0
    layout = tmp_path / "layouts" / "example-filter"
    digest = oci.read_layout(layout).digest
    subprocess.run([skopeo, "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:1.2.0",
                    f"docker://{registry.host}/mesh/by-skopeo:1"], capture_output=True, check=True, timeout=120,
                   env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    pulled = oci.pull(f"oci://{registry.host}/mesh/by-skopeo:1", {})
    assert (pulled.verdict.manifest_digest, pulled.verdict.layout, pulled.module) == \
        (digest, "compat", EXAMPLE.read_bytes())


def test_the_delivered_module_of_each_rendered_filter(image_repo: Repo, registry: Registry) -> None:
    from renderer.spec import load_spec

    assert image_repo.cli("push").exit_code == 0
    for delivery, kind in (("oci", "WasmPlugin"), ("imageVolume", "TrafficExtension"), ("configMap", "EnvoyFilter")):
        image_repo.write("filters.yaml", spec(registry.host, delivery=delivery, kind=kind))
        (f,) = load_spec(image_repo.spec).filter_set.filters
        assert oci.delivered_module(f, {}) == EXAMPLE.read_bytes()
    image_repo.write("filters.yaml", spec(registry.host, delivery="oci"))
    (f,) = load_spec(image_repo.spec).filter_set.filters
    # Moving the tag to another image changes nothing that is delivered: the rendered output names the digest.
    other = oci.build_image(proxy_wasm_module("replaced"))
    oci.RegistryClient(oci.parse_reference(f"{registry.host}/mesh/example-filter:1.2.0"), {}).push(other, "1.2.0")
    assert oci.pull(f"oci://{registry.host}/mesh/example-filter:1.2.0", {}).module != EXAMPLE.read_bytes()
    assert oci.delivered_module(f, {}) == EXAMPLE.read_bytes()


SERVICE_TEST = """\
    tests:
      - name: the sidecar answers with the demo header
        request: {headers: {":method": GET, ":path": /productpage, ":authority": productpage}}
        response: {headers: {":status": "200"}}
        expect:
          status: 200
          responseHeaders: {resp-header-demo: added by our filter}
"""


def test_a_2_5_mb_filter_verifies_in_envoy_through_each_image_delivery(tmp_path: Path) -> None:
    # A registry of this test's own: it is stopped halfway through.
    own = _start(tmp_path / "registry")
    try:
        repo = make_repo(tmp_path / "repo")
        # The example filter grown to Go-filter size by a custom section: the same code, 2.5 MB to ship.
        big = with_custom_section(EXAMPLE.read_bytes(), "padding", b"\0" * 2_500_000)
        repo.write("filters/example-filter.wasm", big)
        repo.write("filters.yaml", spec(own.host))
        assert repo.cli("push").exit_code == 0
        for delivery, kind in (("oci", "WasmPlugin"), ("oci", "TrafficExtension"), ("imageVolume", "EnvoyFilter"),
                               ("imageVolume", "TrafficExtension")):
            repo.write("filters.yaml", spec(own.host, delivery=delivery, kind=kind) + SERVICE_TEST)
            assert repo.cli("render").exit_code == 0, (delivery, kind)
            # The chain is built from the rendered objects; its module is pulled from the registry (the
            # image volume's plugin.wasm, or the oci:// URL istio-agent would fetch).
            verified = repo.cli("verify", "productpage")
            assert verified.exit_code == 0, (delivery, kind, verified.output)
            assert "PASS service:productpage/the sidecar answers with the demo header" in verified.output
    finally:
        _stop(own)
    # The registry is gone: the case fails with the pull's reason, not a traceback.
    failed = repo.cli("verify", "productpage")
    assert failed.exit_code == 1, failed.output
    assert "could not be pulled" in failed.output
