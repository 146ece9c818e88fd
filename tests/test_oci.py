"""OCI images without a registry: reproducible layouts, Istio's three layouts, the lock, image volumes,
TrafficExtension output and its schema against Istio's CRD. The registry round trip is test_registry.py."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import GOLDEN, SHARED, UPDATE_GOLDEN, Repo, assert_golden, kustomize, proxy_wasm_module
from jsonschema import Draft7Validator, Draft202012Validator

from renderer import oci
from renderer.conformance import validate_objects
from renderer.errors import UsageError
from renderer.lockfile import LockEntry, dumps

SPECS = Path(__file__).parent / "specs" / "oci"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"

Obj = dict[str, Any]


# ------------------------------------------------------------------------------------------ helpers

def layout_tree(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def lock_for(repo: Repo, filters: dict[str, tuple[str, str, str]], variant: oci.Variant = "compat") -> None:
    """A lock as push writes it: each filter -> (wasm path, repository, tag), digests of the real image."""
    entries = {}
    for name, (wasm, repository, tag) in filters.items():
        module = (repo.root / wasm).read_bytes()
        image = oci.build_image(module, variant)
        entries[name] = LockEntry(repository, tag, image.digest, image.media_type, image.module_sha256, variant)
    repo.write("filters.lock", dumps(entries))


def manifest_of(fetched: oci.Fetched) -> Obj:
    value: Obj = json.loads(fetched.manifest)
    return value


class MemoryImage:
    """A hand-made image (any manifest, any blobs), read the way a registry or layout would serve it."""

    def __init__(self, manifest: Obj, blobs: dict[str, bytes]) -> None:
        self.manifest = oci.canonical_json(manifest)
        self.blobs = blobs

    def fetched(self) -> oci.Fetched:
        def read(digest: str, limit: int) -> bytes:
            return self.blobs[digest]
        return oci.Fetched(self.manifest, read, "memory")


def desc(media_type: str, data: bytes) -> Obj:
    return {"mediaType": media_type, "digest": oci.sha256_digest(data), "size": len(data)}


def tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MODULE = proxy_wasm_module("image")
CONFIG = b"{}"


# ------------------------------------------------------------------------------------------ building

@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_001])
def test_stored_gzip_is_a_gzip_stream_any_reader_takes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    packed = oci.stored_gzip(data)
    assert gzip.decompress(packed) == data
    assert len(packed) == 18 + len(data) + 5 * max(1, -(-len(data) // 65535))  # header, blocks, trailer


def test_compat_layer_is_a_tar_with_only_plugin_wasm_and_no_machine_facts() -> None:
    image = oci.build_image(MODULE, "compat")
    manifest = json.loads(image.manifest)
    assert manifest["annotations"] == {"module.wasm.image/variant": "compat"}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == oci.OCI_LAYER_TGZ
    blob = image.blobs[layer["digest"]]
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.mtime, member.uid, member.gid, member.uname, member.mode) == \
            ("plugin.wasm", 0, 0, 0, "", 0o444)
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == MODULE
    config = json.loads(image.blobs[manifest["config"]["digest"]])
    tar_bytes = gzip.decompress(blob)
    assert config["rootfs"]["diff_ids"] == [oci.sha256_digest(tar_bytes)]
    assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_oci_variant_has_the_two_layers_istio_requires() -> None:
    image = oci.build_image(MODULE, "oci", "0.2.1")
    manifest = json.loads(image.manifest)
    assert [x["mediaType"] for x in manifest["layers"]] == [oci.WASM_CONFIG, oci.WASM_LAYER]
    assert manifest["config"]["mediaType"] == oci.WASM_CONFIG
    assert image.blobs[manifest["layers"][1]["digest"]] == MODULE
    assert json.loads(image.blobs[manifest["config"]["digest"]]) == {"type": "envoy_proxy", "abiVersions": ["0.2.1"]}


def _checkout(tmp: Path, name: str, module: bytes, umask: int) -> Repo:
    repo = Repo(tmp / name)
    repo.write("filters/f.wasm", module)
    repo.write("filters.yaml", "apiVersion: wasm-gitops/v1\nkind: FilterSet\nistio: \"1.22\"\nfilters:\n"
               "  - name: f\n    wasm: filters/f.wasm\n    image: {repository: registry.example.com/mesh/f, tag: \"1\"}\n")
    os.utime(repo.root / "filters/f.wasm", (1_000_000 * len(name), 1_000_000 * len(name)))
    old = os.umask(umask)
    try:
        for variant in oci.VARIANTS:
            result = repo.cli("package", "--variant", variant, "--out", str(repo.root / "build" / variant))
            assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    return repo


def test_package_twice_on_two_checkouts_gives_the_same_bytes(tmp_path: Path) -> None:
    a = _checkout(tmp_path, "one", MODULE, 0o022)
    b = _checkout(tmp_path / "deeper" / "path", "second-checkout", MODULE, 0o077)
    for variant in oci.VARIANTS:
        tree_a, tree_b = layout_tree(a.root / f"build/{variant}/f"), layout_tree(b.root / f"build/{variant}/f")
        assert tree_a == tree_b
        index = json.loads(tree_a["index.json"])
        (entry,) = index["manifests"]
        assert entry["annotations"] == {"org.opencontainers.image.ref.name": "1"}
        assert f"packaged f: {a.root}/build/{variant}/f {entry['digest']} ({variant})" in \
            a.cli("package", "--variant", variant, "--out", str(a.root / "build" / variant)).output
    other = _checkout(tmp_path, "changed", proxy_wasm_module("image-v2"), 0o022)
    assert layout_tree(other.root / "build/compat/f")["index.json"] != layout_tree(a.root / "build/compat/f")["index.json"]


@pytest.mark.parametrize("variant", oci.VARIANTS)
def test_layout_golden(tmp_path: Path, variant: oci.Variant) -> None:
    """The bytes of a layout are a contract: the same module must give these files on any machine."""
    golden = GOLDEN / f"oci-layout-{variant}"
    module = (GOLDEN / "oci-layout-input.wasm").read_bytes()
    oci.write_layout(oci.build_image(module, variant, "0.2.1"), tmp_path / "out", "1.2.0")
    got = layout_tree(tmp_path / "out")
    if UPDATE_GOLDEN:
        for rel, data in got.items():
            (golden / rel).parent.mkdir(parents=True, exist_ok=True)
            (golden / rel).write_bytes(data)
    assert got == layout_tree(golden)
    for rel, data in got.items():  # and the layout is self-consistent
        if rel.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == rel.rsplit("/", 1)[1]


def test_write_layout_replaces_an_old_layout_and_refuses_anything_else(tmp_path: Path) -> None:
    target = tmp_path / "layout"
    oci.write_layout(oci.build_image(MODULE), target, "1")
    old_blobs = {p.name for p in (target / "blobs/sha256").iterdir()}
    new = oci.build_image(proxy_wasm_module("next"))
    oci.write_layout(new, target, "2")
    assert {p.name for p in (target / "blobs/sha256").iterdir()} == {d.removeprefix("sha256:") for d in
                                                                   [new.digest, *new.blobs]}
    assert old_blobs - {p.name for p in (target / "blobs/sha256").iterdir()}
    mine = tmp_path / "mine"
    (mine / "notes.txt").parent.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(UsageError, match="not an OCI image layout"):
        oci.write_layout(new, mine, "1")
    assert (mine / "notes.txt").read_text() == "keep"
    (target / "README").write_text("stray")
    with pytest.raises(UsageError, match="not part of an image layout"):
        oci.write_layout(new, target, "1")


def test_read_layout_verifies_digests_and_stays_inside(tmp_path: Path) -> None:
    target = tmp_path / "layout"
    image = oci.build_image(MODULE)
    oci.write_layout(image, target, "1")
    assert oci.read_layout(target).digest == image.digest
    layer = json.loads(image.manifest)["layers"][0]["digest"].removeprefix("sha256:")
    (target / "blobs/sha256" / layer).write_bytes(b"tampered")
    with pytest.raises(oci.ImageError, match="does not match its digest"):
        oci.classify(oci.read_layout(target))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    (target / "blobs/sha256" / layer).unlink()
    (target / "blobs/sha256" / layer).symlink_to(outside)
    with pytest.raises(oci.ImageError, match="leaves the layout"):
        oci.classify(oci.read_layout(target))
    index = json.loads((target / "index.json").read_text())
    index["manifests"][0]["digest"] = "../../outside.bin"
    (target / "index.json").write_text(json.dumps(index))
    with pytest.raises(oci.ImageError, match="not a sha256 digest"):
        oci.read_layout(target)


# ------------------------------------------------------------------------------------------ Istio's rules

def test_our_images_are_the_layouts_they_claim() -> None:
    for variant in oci.VARIANTS:
        image = oci.build_image(MODULE, variant)
        verdict = oci.classify(oci.Fetched(image.manifest, lambda d, n, i=image: i.blobs[d], "memory"))
        assert (verdict.layout, verdict.module, verdict.manifest_digest) == (variant, MODULE, image.digest)


def test_single_layer_application_wasm_is_none_of_them_with_istios_reasons() -> None:
    # What `oras push registry/x:1 plugin.wasm:application/wasm` makes: an artifact with one layer.
    empty = b"{}"
    image = MemoryImage({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                         "config": desc("application/vnd.oci.empty.v1+json", empty),
                         "layers": [desc("application/wasm", MODULE)]},
                        {oci.sha256_digest(empty): empty, oci.sha256_digest(MODULE): MODULE})
    verdict = oci.classify(image.fetched())
    assert verdict.layout is None and verdict.module is None
    assert verdict.reasons == (
        f"as the compat variant: the last layer is application/wasm, not {oci.OCI_LAYER_TGZ}",
        "as the oci variant: number of layers must be 2 but got 1",
    )


def test_docker_manifest_uses_the_docker_rule_only() -> None:
    layer = tgz({"./plugin.wasm": MODULE})
    blobs = {oci.sha256_digest(layer): layer, oci.sha256_digest(CONFIG): CONFIG}
    good = MemoryImage({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
                        "config": desc("application/vnd.docker.container.image.v1+json", CONFIG),
                        "layers": [desc(oci.DOCKER_LAYER_TGZ, layer)]}, blobs)
    verdict = oci.classify(good.fetched())
    assert (verdict.layout, verdict.module) == ("docker", MODULE)
    # A Docker manifest with an OCI layer would pass the compat rule, but Istio never tries it.
    wrong = MemoryImage({"schemaVersion": 2, "mediaType": oci.DOCKER_MANIFEST,
                         "config": desc("application/vnd.docker.container.image.v1+json", CONFIG),
                         "layers": [desc(oci.OCI_LAYER_TGZ, layer)]}, blobs)
    verdict = oci.classify(wrong.fetched())
    assert verdict.layout is None
    assert verdict.reasons == (f"as a Docker image: the last layer is {oci.OCI_LAYER_TGZ}, not {oci.DOCKER_LAYER_TGZ}",)


def test_compat_takes_the_last_layer_and_needs_plugin_wasm() -> None:
    base = tgz({"etc/other": b"x"})
    last = tgz({"plugin.wasm": MODULE})
    blobs = {oci.sha256_digest(b): b for b in (base, last, CONFIG)}
    layered = MemoryImage({"schemaVersion": 2, "config": desc(oci.OCI_CONFIG, CONFIG),
                           "layers": [desc(oci.OCI_LAYER_TGZ, base), desc(oci.OCI_LAYER_TGZ, last)]}, blobs)
    assert oci.classify(layered.fetched()).layout == "compat"
    reversed_ = MemoryImage({"schemaVersion": 2, "config": desc(oci.OCI_CONFIG, CONFIG),
                             "layers": [desc(oci.OCI_LAYER_TGZ, last), desc(oci.OCI_LAYER_TGZ, base)]}, blobs)
    verdict = oci.classify(reversed_.fetched())
    assert verdict.layout is None
    assert verdict.reasons[0] == "as the compat variant: plugin.wasm not found in the archive"


def test_an_index_is_resolved_to_its_linux_amd64_entry() -> None:
    image = oci.build_image(MODULE)
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [
        {**desc(oci.OCI_MANIFEST, image.manifest), "platform": {"os": "linux", "architecture": "arm64"}},
        {**desc(oci.OCI_MANIFEST, image.manifest), "platform": {"os": "linux", "architecture": "amd64"}}]}
    fetched = oci.Fetched(oci.canonical_json(index), lambda d, n: image.blobs[d], "memory")
    verdict = oci.classify(fetched, lambda d: oci.Fetched(image.manifest, lambda x, n: image.blobs[x], "memory"))
    assert (verdict.layout, verdict.manifest_digest, verdict.resolved_from) == ("compat", image.digest, fetched.digest)
    index["manifests"] = index["manifests"][:1]
    arm_only = oci.Fetched(oci.canonical_json(index), lambda d, n: image.blobs[d], "memory")
    assert oci.classify(arm_only, lambda d: fetched).layout is None


def test_a_gzip_bomb_stops_at_istios_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(oci.istio_rules, "MAX_MODULE", 1 << 20)
    bomb = gzip.compress(bytes(8 << 20))
    image = MemoryImage({"schemaVersion": 2, "config": desc(oci.OCI_CONFIG, CONFIG),
                         "layers": [desc(oci.OCI_LAYER_TGZ, bomb)]},
                        {oci.sha256_digest(bomb): bomb, oci.sha256_digest(CONFIG): CONFIG})
    verdict = oci.classify(image.fetched())
    assert verdict.layout is None and "expands past 1,048,576 bytes" in verdict.reasons[0]


def test_inspect_names_the_layout_of_a_layout_directory(repo: Repo, tmp_path: Path) -> None:
    for variant in oci.VARIANTS:
        oci.write_layout(oci.build_image(MODULE, variant), tmp_path / variant, None)
        result = repo.run("inspect", str(tmp_path / variant), "--format", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["layout"] == variant
        assert report["module"]["sha256"] == hashlib.sha256(MODULE).hexdigest()
        assert report["module"]["verdict"] == "proxy-wasm module, ABI 0.2.1"


def test_reference_parsing() -> None:
    ref = oci.parse_reference("oci://registry.example.com:5000/mesh/f:1.2.0@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == ("registry.example.com:5000", "mesh/f", "1.2.0",
                                                                    "sha256:" + "a" * 64)
    assert oci.parse_reference("127.0.0.1:5000/f").plain_http and oci.parse_reference("localhost:1/f").plain_http
    assert not oci.parse_reference("registry.example.com/f").plain_http
    for bad in ("f", "mesh/f:1", "registry.example.com/UPPER", "registry.example.com/f@sha256:abc"):
        with pytest.raises(oci.ImageError):
            oci.parse_reference(bad)


def test_credentials_order(tmp_path: Path) -> None:
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"r.example.com": {"auth": "dXNlcjpwYXNz"}}}))
    docker = tmp_path / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {"https://r.example.com": {"auth": "b3RoZXI6eA=="},
                                                              "s.example.com": {"username": "u", "password": "p"}}}))
    env = {"REGISTRY_AUTH_FILE": str(auth), "DOCKER_CONFIG": str(docker)}
    assert oci.credentials_for("r.example.com", env) == oci.Credentials("dXNlcjpwYXNz", str(auth))
    assert oci.credentials_for("s.example.com", env).basic == "dTpw"
    assert oci.credentials_for("t.example.com", env) == oci.Credentials(None, None)
    assert oci.credentials_for("r.example.com", {"DOCKER_CONFIG": str(docker)}).basic == "b3RoZXI6eA=="


# ------------------------------------------------------------------------------------------ the spec

IMAGE_SPEC = """\
apiVersion: wasm-gitops/v1
kind: FilterSet
istio: "{istio}"
kubernetes: "{kubernetes}"
output: {{kind: {kind}}}
filters:
  - name: example-filter
    wasm: filters/example-filter.wasm
    delivery: {delivery}
    image: {{repository: registry.example.com/mesh/example-filter, tag: "1.2.0"}}
  - name: other-filter
    wasm: filters/other-filter.wasm
services:
  - name: productpage
    deployment: productpage-v1
    resources: [apps/productpage]
    filters: [example-filter]
  - name: details
    deployment: details-v1
    resources: [apps/details]
    filters: [other-filter]
"""


def image_repo(repo: Repo, *, istio: str = "1.30", kubernetes: str = "1.35", kind: str = "WasmPlugin",
               delivery: str = "oci", lock: bool = True) -> Repo:
    repo.write("filters.yaml", IMAGE_SPEC.format(istio=istio, kubernetes=kubernetes, kind=kind, delivery=delivery))
    if lock:
        lock_for(repo, {"example-filter": ("filters/example-filter.wasm", "registry.example.com/mesh/example-filter",
                                           "1.2.0")})
    return repo


def errors(repo: Repo, *args: str) -> list[str]:
    result = repo.cli("validate", *args)
    assert result.exit_code == 2, result.output
    return [line for line in result.output.splitlines() if line]


def line_of(repo: Repo, text: str) -> int:
    return next(i for i, line in enumerate(repo.spec.read_text().splitlines(), 1) if text in line)


def test_render_pins_the_image_by_digest_with_the_manifest_digest_as_sha256(repo: Repo) -> None:
    image_repo(repo)
    assert repo.cli("render").exit_code == 0
    wp = repo.load("overlays/productpage/example-filter.wasmplugin.yaml")
    lock = json.loads((repo.root / "filters.lock").read_text())["filters"]["example-filter"]
    assert wp["spec"]["url"] == f"oci://registry.example.com/mesh/example-filter@{lock['manifestDigest']}"
    assert wp["spec"]["sha256"] == lock["manifestDigest"].removeprefix("sha256:") != lock["moduleSha256"]
    assert "1.2.0" not in json.dumps(wp)
    assert not (repo.root / "overlays/productpage/deployment-patch.yaml").exists()
    assert not list((repo.root / "base").rglob("example-filter.configmap.yaml"))


def test_a_module_that_differs_from_the_lock_is_an_error_at_wasm(repo: Repo) -> None:
    image_repo(repo)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("rebuilt"))
    (line,) = errors(repo)
    assert line.startswith(f"filters.yaml:{line_of(repo, 'wasm: filters/example-filter.wasm')}:11: ")
    assert "push it again ('wasm-gitops push example-filter')" in line
    assert not (repo.root / "overlays").exists()


def test_lock_problems_are_errors_at_the_image(repo: Repo) -> None:
    image_repo(repo, lock=False)
    image_line = line_of(repo, "image: {repository")
    (line,) = errors(repo)
    assert line.startswith(f"filters.yaml:{image_line}:12: there is no filters.lock beside the spec")
    lock_for(repo, {"other-filter": ("filters/other-filter.wasm", "registry.example.com/mesh/o", "1")})
    (line,) = errors(repo)
    assert "filters.lock has no entry for filter 'example-filter'" in line
    lock_for(repo, {"example-filter": ("filters/example-filter.wasm", "registry.example.com/mesh/moved", "1.2.0")})
    (line,) = errors(repo)
    assert line.startswith(f"filters.yaml:{image_line}:25: filters.lock records registry.example.com/mesh/moved:1.2.0")
    doc = json.loads((repo.root / "filters.lock").read_text())
    doc["filters"]["example-filter"]["manifestDigest"] = "sha256:../../etc"
    repo.write("filters.lock", json.dumps(doc))
    (line,) = errors(repo)
    assert "filters.lock cannot be used: the entry for 'example-filter' has manifestDigest" in line
    repo.write("filters.lock", "{not json")
    (line,) = errors(repo)
    assert "filters.lock cannot be used: it is not JSON" in line


def test_delivery_needs_an_image(repo: Repo) -> None:
    image_repo(repo)
    repo.write("filters.yaml", repo.spec.read_text().replace(
        "    image: {repository: registry.example.com/mesh/example-filter, tag: \"1.2.0\"}\n", ""))
    (line,) = errors(repo)
    assert line.startswith(f"filters.yaml:{line_of(repo, 'delivery: oci')}:15: delivery oci needs an image")


def test_oci_delivery_cannot_be_an_envoyfilter(repo: Repo) -> None:
    image_repo(repo, kind="EnvoyFilter")
    (line,) = errors(repo)
    assert "delivery oci), which an EnvoyFilter cannot ask for" in line


def test_image_volume_gates_at_the_delivery_line(repo: Repo) -> None:
    image_repo(repo, kubernetes="1.32", delivery="imageVolume")
    delivery = line_of(repo, "delivery: imageVolume")
    (line,) = errors(repo)
    assert line == (f"filters.yaml:{delivery}:15: delivery imageVolume needs Kubernetes 1.33 or later (image volumes "
                    "are beta from 1.33, on by default from 1.35); the spec targets kubernetes 1.32: raise kubernetes "
                    "or use delivery oci")
    image_repo(repo, kubernetes="1.34", delivery="imageVolume")
    result = repo.cli("validate")
    assert result.exit_code == 0
    assert f"filters.yaml:{delivery}:15: warning: image volumes are off by default before Kubernetes 1.35" in result.output
    image_repo(repo, istio="1.23", delivery="imageVolume")
    (line,) = errors(repo)
    assert "Istio before 1.24 drops the image volume source" in line
    image_repo(repo, delivery="imageVolume")
    lock_for(repo, {"example-filter": ("filters/example-filter.wasm", "registry.example.com/mesh/example-filter",
                                       "1.2.0")}, variant="oci")
    (line,) = errors(repo)
    assert "is the oci variant, whose layers a container runtime does not unpack" in line


def test_the_kubernetes_default_is_1_33(repo: Repo) -> None:
    image_repo(repo, delivery="imageVolume")
    repo.write("filters.yaml", repo.spec.read_text().replace('kubernetes: "1.35"\n', ""))
    result = repo.cli("validate")
    assert result.exit_code == 0
    assert "the spec targets kubernetes 1.33 (the default)" in result.output


def test_a_service_cannot_mix_configmaps_and_image_volumes(repo: Repo) -> None:
    image_repo(repo, delivery="imageVolume")
    repo.write("filters.yaml", repo.spec.read_text().replace("filters: [example-filter]",
                                                             "filters: [other-filter, example-filter]"))
    (line,) = errors(repo)
    assert "shares this service with filters delivered the other way" in line


def test_image_volume_render_and_the_volume_is_a_kubernetes_image_volume(repo: Repo) -> None:
    image_repo(repo, delivery="imageVolume", kind="EnvoyFilter")
    assert repo.cli("render").exit_code == 0
    lock = json.loads((repo.root / "filters.lock").read_text())["filters"]["example-filter"]
    patch = repo.load("overlays/productpage/deployment-patch.yaml")
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["sidecar.istio.io/userVolume"]) == {"wasm-example-filter": {"image": {
        "reference": f"registry.example.com/mesh/example-filter@{lock['manifestDigest']}", "pullPolicy": "IfNotPresent"}}}
    assert json.loads(annotations["sidecar.istio.io/userVolumeMount"]) == {"wasm-example-filter": {
        "mountPath": "/var/local/lib/wasm-filters/example-filter", "readOnly": True}}
    ef = repo.load("overlays/productpage/example-filter.envoyfilter.yaml")
    vm = ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]["vm_config"]
    assert vm["code"]["local"]["filename"] == "/var/local/lib/wasm-filters/example-filter/plugin.wasm"
    built = kustomize(repo.root / "overlays" / "productpage")
    assert {o["kind"] for o in built} == {"Deployment", "EnvoyFilter"}
    # The annotation's volume is validated as a Kubernetes 1.37 Volume: a broken one is caught.
    broken = copy.deepcopy(patch)
    bad = {"wasm-example-filter": {"image": {"reference": "x", "pullPolicy": 1}}}
    broken["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/userVolume"] = json.dumps(bad)
    problems = validate_objects([("overlays/productpage/deployment-patch.yaml", broken)])
    assert problems and "pullPolicy" in problems[0].json_path + problems[0].message


def test_a_big_module_goes_by_image_but_not_by_configmap(repo: Repo) -> None:
    big = proxy_wasm_module("big", pad=2_500_000)
    repo.write("filters/example-filter.wasm", big)
    image_repo(repo, delivery="configMap")
    (line,) = errors(repo)
    assert "a ConfigMap holds at most 1,048,576" in line
    for delivery in ("oci", "imageVolume"):
        image_repo(repo, delivery=delivery)
        result = repo.cli("render")
        assert result.exit_code == 0, result.output


# ------------------------------------------------------------------------------------------ TrafficExtension

def test_traffic_extension_needs_istio_1_30_at_its_line(repo: Repo) -> None:
    image_repo(repo, istio="1.29", kind="TrafficExtension", delivery="configMap", lock=False)
    (line,) = errors(repo)
    assert line == (f"filters.yaml:{line_of(repo, 'output: {kind: TrafficExtension}')}:16: TrafficExtension needs "
                    "Istio 1.30 or later, the spec targets 1.29; use output kind WasmPlugin or raise istio")
    spec = repo.spec.read_text().replace("output: {kind: TrafficExtension}\n", "")
    repo.write("filters.yaml", spec.replace("    deployment: details-v1\n",
                                            "    deployment: details-v1\n    output: {kind: TrafficExtension}\n"))
    (line,) = errors(repo)
    assert line.startswith(f"filters.yaml:{line_of(repo, '    output: {kind: TrafficExtension}')}:20: TrafficExtension")


GOLDEN_CASES = sorted(p.stem for p in SPECS.glob("*.yaml"))


@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_tree(repo: Repo, case: str) -> None:
    repo.write("filters.yaml", (SPECS / f"{case}.yaml").read_text())
    locked = {"example-filter": ("filters/example-filter.wasm", "registry.example.com/mesh/example-filter", "1.2.0"),
              "other-filter": ("filters/other-filter.wasm", "registry.example.com/mesh/other-filter", "2.0.0")}
    lock_for(repo, locked)
    result = repo.cli("render")
    assert result.exit_code == 0, result.output
    assert_golden({k: v for k, v in repo.outputs().items() if k != "filters.lock"}, GOLDEN / case)
    for service in ("productpage", "details", "reviews"):
        if (repo.root / "overlays" / service).is_dir():
            kustomize(repo.root / "overlays" / service)
    assert repo.cli("check").exit_code == 0


def test_traffic_extension_shape(repo: Repo) -> None:
    repo.write("filters.yaml", (SPECS / "trafficextension.yaml").read_text())
    assert repo.cli("render").exit_code == 0
    te = repo.load("overlays/productpage/other-filter.trafficextension.yaml")
    assert te["apiVersion"] == "extensions.istio.io/v1alpha1"
    assert te["spec"]["wasm"]["url"] == "file:///var/local/lib/wasm-filters/other-filter.wasm"
    assert te["spec"]["wasm"]["pluginConfig"] == {"mode": "relaxed"}
    assert te["spec"]["selector"] == {"matchLabels": {"app": "productpage", "version": "v1"}}
    first = repo.load("overlays/productpage/example-filter.trafficextension.yaml")
    assert first["spec"]["priority"] > te["spec"]["priority"]  # higher runs first: the listed order


# ------------------------------------------------------------------------------------------ schema vs the CRD

CRD = SHARED / "istio-crds" / "trafficextension.v1alpha1.schema.json"
needs_crd = pytest.mark.skipif(not CRD.is_file(), reason=f"Istio CRD schema not found: {CRD}")


def _ours() -> Obj:
    value: Obj = json.loads((SCHEMAS / "trafficextension.schema.json").read_text())
    return value


def _crd() -> Obj:
    value: Obj = json.loads(CRD.read_text())
    return value


def _enums(node: Any, root: Obj, path: str) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    if not isinstance(node, dict):
        return out
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        out.update(_enums(target, root, path))
    if "enum" in node:
        out[path] = out.get(path, frozenset()) | frozenset(node["enum"])
    for key, sub in node.get("properties", {}).items():
        out.update(_enums(sub, root, f"{path}.{key}" if path else key))
    if "items" in node:
        out.update(_enums(node["items"], root, path + "[]"))
    return out


@needs_crd
def test_schema_enums_are_subsets_of_the_crd() -> None:
    ours = {k: v for k, v in _enums(_ours(), _ours(), "").items() if k.startswith("spec.")}
    theirs = {k: v for k, v in _enums(_crd(), _crd(), "").items() if k.startswith("spec.") and ".lua" not in k}
    assert sorted(ours) == sorted(theirs)
    assert {k: set(v - theirs[k]) for k, v in ours.items() if v - theirs[k]} == {}
    assert {k: set(theirs[k] - v) for k, v in ours.items() if theirs[k] - v} == {
        "spec.phase": {"UNSPECIFIED"}, "spec.match[].mode": {"UNDEFINED"},
        "spec.wasm.imagePullPolicy": {"UNSPECIFIED_POLICY"}, "spec.wasm.type": {"UNSPECIFIED_PLUGIN_TYPE"}}


@needs_crd
def test_what_we_render_the_crd_accepts_and_what_it_refuses_we_refuse(repo: Repo) -> None:
    repo.write("filters.yaml", (SPECS / "trafficextension.yaml").read_text())
    assert repo.cli("render").exit_code == 0
    crd, ours = Draft7Validator(_crd()), Draft202012Validator(_ours())
    rendered = sorted((repo.root / "overlays").rglob("*.trafficextension.yaml"))
    assert len(rendered) >= 2
    for path in rendered:
        obj = repo.load(str(path.relative_to(repo.root)))
        assert list(ours.iter_errors(obj)) == []
        assert [e.message for e in crd.iter_errors({"spec": obj["spec"]})] == []
        for mutate in (lambda s: s["wasm"].__setitem__("failStrategy", "FAIL_LATER"),
                       lambda s: s.__setitem__("phase", "LATE"),
                       lambda s: s.__setitem__("lua", {"inlineCode": "x"})):
            bad = copy.deepcopy(obj)
            mutate(bad["spec"])
            assert list(ours.iter_errors(bad)) and list(crd.iter_errors({"spec": bad["spec"]}))


def test_schema_is_documented_and_closed() -> None:
    schema = _ours()
    Draft202012Validator.check_schema(schema)

    def walk(node: Any, where: str) -> list[str]:
        missing: list[str] = []
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                if not (isinstance(sub, dict) and sub.get("description")):
                    missing.append(f"{where}.{name}")
            if node.get("type") == "object" and "properties" in node and node.get("additionalProperties") is not False:
                missing.append(f"{where} (open)")
            for key, sub in node.items():
                missing += walk(sub, f"{where}/{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                missing += walk(sub, f"{where}[{i}]")
        return missing

    assert walk(schema, "#") == []


def test_package_will_not_follow_a_committed_link_out_of_the_repository(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo.root / "build").symlink_to(elsewhere)
    result = repo.cli("package")
    assert result.exit_code == 2
    assert "outside the repository; remove the link or pass --out" in result.output
    assert list(elsewhere.iterdir()) == []


def _skopeo() -> str:
    import shutil

    path = shutil.which("skopeo")
    if path is None:
        pytest.fail("skopeo is not installed (apt-get install -y skopeo): the layouts are cross-checked with "
                    "containers/image, the image library of CRI-O, podman and skopeo")
    return path


@pytest.mark.parametrize("variant", oci.VARIANTS)
def test_an_independent_implementation_reads_our_layouts_unchanged(tmp_path: Path, variant: oci.Variant) -> None:
    import subprocess

    image = oci.build_image(MODULE, variant)
    oci.write_layout(image, tmp_path / "layout", "1.0")
    raw = subprocess.run([_skopeo(), "inspect", "--raw", f"oci:{tmp_path / 'layout'}:1.0"], capture_output=True,
                         check=True, timeout=60).stdout
    assert raw == image.manifest
    copied = tmp_path / "copied"
    subprocess.run([_skopeo(), "copy", "--quiet", f"oci:{tmp_path / 'layout'}:1.0", f"dir:{copied}"],
                   capture_output=True, check=True, timeout=60)
    assert (copied / "manifest.json").read_bytes() == image.manifest  # verified, not rewritten
    for digest, data in image.blobs.items():
        assert (copied / digest.removeprefix("sha256:")).read_bytes() == data
    if variant == "compat":
        config = json.loads(subprocess.run([_skopeo(), "inspect", f"oci:{tmp_path / 'layout'}:1.0"],
                                           capture_output=True, check=True, timeout=60).stdout)
        assert (config["Digest"], config["Os"], config["Architecture"]) == (image.digest, "linux", "amd64")


def test_a_new_push_is_drift_until_rendered(repo: Repo) -> None:
    image_repo(repo, delivery="imageVolume")
    assert repo.cli("render").exit_code == 0
    assert repo.cli("check").exit_code == 0
    repo.write("filters/example-filter.wasm", proxy_wasm_module("v2"))
    lock_for(repo, {"example-filter": ("filters/example-filter.wasm", "registry.example.com/mesh/example-filter",
                                       "1.2.0")})
    drift = repo.cli("check")
    assert drift.exit_code == 1
    assert "overlays/productpage/deployment-patch.yaml" in drift.output  # a new digest rolls the pods
    diff = repo.cli("diff")
    assert diff.exit_code == 1 and "productpage-v1" in diff.output


def test_the_lock_is_a_plain_file(repo: Repo, tmp_path: Path) -> None:
    image_repo(repo)
    real = tmp_path / "elsewhere.lock"
    real.write_bytes((repo.root / "filters.lock").read_bytes())
    (repo.root / "filters.lock").unlink()
    (repo.root / "filters.lock").symlink_to(real)
    (line,) = errors(repo)
    assert "filters.lock cannot be used: it is a symbolic link" in line
    from renderer.lockfile import read_lock, write_lock

    with pytest.raises(UsageError, match="is not a plain file"):
        write_lock(repo.root / "filters.lock", {})
    assert real.read_bytes() != b"" and (repo.root / "filters.lock").is_symlink()
    (repo.root / "filters.lock").unlink()
    entries = {"f": LockEntry("registry.example.com/a/f", "1", "sha256:" + "a" * 64, oci.OCI_MANIFEST, "b" * 64,
                              "compat")}
    assert write_lock(repo.root / "filters.lock", entries) is True
    assert write_lock(repo.root / "filters.lock", entries) is False  # unchanged: not rewritten
    assert read_lock(repo.root / "filters.lock") == entries
    assert [p.name for p in repo.root.iterdir() if p.name.startswith(".filters.lock")] == []
