"""Wasm modules as OCI images: build them byte-reproducibly, write and read OCI image layouts, push to and
pull from a registry, and tell which of Istio's three image layouts an image is.

Istio's rules (istio/istio pkg/wasm/imagefetcher.go, PrepareFetch and the extract* functions), applied in
Istio's order:

1. a manifest whose mediaType is Docker's schema 2: its *last* layer must be
   application/vnd.docker.image.rootfs.diff.tar.gzip and hold a file named plugin.wasm; nothing else is
   tried for a Docker manifest;
2. otherwise the "compat" variant: the last layer is application/vnd.oci.image.layer.v1.tar+gzip holding
   plugin.wasm (Istio does not read the module.wasm.image/variant annotation; we write it because the
   image specification asks for it);
3. otherwise the "oci" variant: exactly two layers, one of them
   application/vnd.module.wasm.content.layer.v1+wasm, whose bytes are the module.

An image index is first resolved to its linux/amd64 entry (go-containerregistry's default platform). The
module found must start like WebAssembly; istio-agent then hands it to Envoy.

Digests: istio-agent compares a WasmPlugin's `sha256` with the *manifest* digest for oci:// URLs (pkg/wasm/
cache.go: the checksum it checks is PrepareFetch's manifest digest), not with the module's sha256.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import re
import struct
import sys
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import UsageError
from .model import Filter

Variant = Literal["compat", "oci"]
VARIANTS: tuple[Variant, ...] = ("compat", "oci")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_TGZ = "application/vnd.docker.image.rootfs.diff.tar.gzip"
WASM_LAYER = "application/vnd.module.wasm.content.layer.v1+wasm"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
ACCEPTED_MANIFESTS = (OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST)

PLUGIN_FILE = "plugin.wasm"  # the name Istio looks for in a tar layer (by base name)
VARIANT_ANNOTATION = "module.wasm.image/variant"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
# Istio reads at most ISTIO_WASM_MAX_BINARY_SIZE_BYTES (default 256 MiB, pilot/pkg/features/pilot.go) of a
# layer; reading untrusted blobs, we stop there too.
MAX_MODULE = 256 * 1024 * 1024
MAX_MANIFEST = 4 * 1024 * 1024  # the distribution registry's own manifest limit

DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPO_PATH = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one serialisation of every JSON blob we write: its bytes are its digest, so they never vary."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ------------------------------------------------------------------------------------------ building

def _plugin_tar(module: bytes) -> bytes:
    """A tar holding only plugin.wasm, with nothing that depends on the machine or the clock."""
    info = tarfile.TarInfo(PLUGIN_FILE)
    info.size = len(module)
    info.mode = 0o444  # read-only for everyone: istio-proxy runs as its own uid
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def stored_gzip(data: bytes) -> bytes:
    """gzip with deflate's stored blocks (RFC 1951 section 3.2.4), written by hand.

    Compressed output depends on the zlib build (zlib and zlib-ng, both common on Linux distributions,
    emit different streams at the same level), so a compressed layer would have a different digest on
    another machine. Stored blocks are a function of the input alone. The price is size: the layer is as
    large as the module, which neither the registry nor the proxy limits."""
    out = bytearray(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")  # no name, mtime 0, OS "unknown"
    view = memoryview(data)
    for start in range(0, max(len(data), 1), 0xFFFF):
        chunk = view[start:start + 0xFFFF]
        final = start + 0xFFFF >= len(data)
        out += bytes([1 if final else 0]) + struct.pack("<HH", len(chunk), len(chunk) ^ 0xFFFF) + chunk
    out += struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return bytes(out)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def _descriptor(media_type: str, data: bytes, title: str | None = None) -> Descriptor:
    return Descriptor(media_type, sha256_digest(data), len(data), ((TITLE, title),) if title else ())


@dataclass(frozen=True)
class Image:
    """One image in memory: the manifest bytes (whose sha256 is the digest a registry reports) and blobs."""

    manifest: bytes
    media_type: str
    blobs: Mapping[str, bytes] = field(repr=False)
    variant: Variant
    module_sha256: str

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def build_image(module: bytes, variant: Variant = "compat", abi_version: str | None = None) -> Image:
    """The image of a module, the same bytes for the same module on any machine."""
    blobs: dict[str, bytes] = {}

    def blob(desc: Descriptor, data: bytes) -> dict[str, Any]:
        blobs[desc.digest] = data
        return desc.as_dict()

    if variant == "compat":
        tar = _plugin_tar(module)
        layer = stored_gzip(tar)
        # A real image config: container runtimes (the kubelet's, for image volumes) check that the
        # layer's uncompressed digest is listed in rootfs.diff_ids, and pick images by platform.
        config = canonical_json({"architecture": "amd64", "os": "linux",
                                 "rootfs": {"type": "layers", "diff_ids": [sha256_digest(tar)]}})
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": blob(_descriptor(OCI_CONFIG, config), config),
            "layers": [blob(_descriptor(OCI_LAYER_TGZ, layer, PLUGIN_FILE), layer)],
            "annotations": {VARIANT_ANNOTATION: "compat"},
        }
    elif variant == "oci":
        runtime: dict[str, Any] = {"type": "envoy_proxy"}
        if abi_version:
            runtime["abiVersions"] = [abi_version]
        config = canonical_json(runtime)
        # Istio's oci-variant reader wants exactly two layers (the runtime configuration and the module),
        # the layout of the image specification's example; the manifest's config names the same blob.
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": blob(_descriptor(WASM_CONFIG, config), config),
            "layers": [blob(_descriptor(WASM_CONFIG, config, "runtime-config.json"), config),
                       blob(_descriptor(WASM_LAYER, module, PLUGIN_FILE), module)],
        }
    else:  # pragma: no cover - Literal, checked by callers
        raise ValueError(f"unknown variant {variant!r}")
    return Image(canonical_json(manifest), OCI_MANIFEST, blobs, variant, hashlib.sha256(module).hexdigest())


# ------------------------------------------------------------------------------------------ layouts

LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}


def layout_files(image: Image, tag: str | None) -> dict[str, bytes]:
    """The files of an OCI image layout (opencontainers/image-spec image-layout.md) holding one image."""
    entry = _descriptor(image.media_type, image.manifest).as_dict()
    if tag:
        entry["annotations"] = {REF_NAME: tag}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    files = {LAYOUT_FILE: canonical_json(LAYOUT_VERSION), "index.json": canonical_json(index)}
    for digest, data in {image.digest: image.manifest, **image.blobs}.items():
        files[f"blobs/sha256/{digest.removeprefix('sha256:')}"] = data
    return files


def write_layout(image: Image, directory: Path, tag: str | None) -> None:
    """Write the layout into `directory`, which is empty, missing, or a layout written before.

    Anything else is refused: the directory may be in a repository a pull request can change, and a
    stray file there is not ours to overwrite."""
    files = layout_files(image, tag)
    if directory.is_symlink():
        raise UsageError(f"{directory}: is a symlink; give package a real directory with --out")
    if directory.exists():
        if not directory.is_dir():
            raise UsageError(f"{directory}: exists and is not a directory; choose another --out")
        present = {p.relative_to(directory).as_posix() for p in directory.rglob("*")}
        if present and LAYOUT_FILE not in present:
            raise UsageError(f"{directory}: exists and is not an OCI image layout; move it away or choose "
                             "another --out (it is never overwritten)")
        for rel in sorted(present):
            p = directory / rel
            if p.is_symlink() or not (p.is_dir() or p.is_file()) or not (
                    rel in (LAYOUT_FILE, "index.json", "blobs", "blobs/sha256") or rel.startswith("blobs/sha256/")):
                raise UsageError(f"{p}: is not part of an image layout wasm-gitops writes; move it away")
        for rel in sorted(present):
            p = directory / rel
            if p.is_file() and rel not in files and rel.startswith("blobs/"):
                p.unlink()  # a blob of the previous image: content-addressed, so it was ours
    try:
        for rel, data in sorted(files.items()):
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    except OSError as e:
        raise UsageError(f"{directory}: cannot write the layout ({e.strerror or e})") from None


BlobReader = Callable[[str, int], bytes]


@dataclass(frozen=True)
class Fetched:
    """A manifest as found (a layout or a registry), with the way to read its blobs."""

    manifest: bytes
    read_blob: BlobReader = field(repr=False)
    where: str
    content_type: str | None = None

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


class ImageError(UsageError):
    """An image, layout or registry that cannot be read as asked: one line, exit 2."""


def _checked(data: bytes, digest: str, where: str) -> bytes:
    if sha256_digest(data) != digest:
        raise ImageError(f"{where}: blob {digest} does not match its digest (corrupt or tampered with)")
    return data


def read_layout(directory: Path, ref: str | None = None) -> Fetched:
    """The manifest of an OCI image layout (the one named `ref`, or its only one). Every path is derived
    from a checked digest and must stay inside the layout once symlinks are resolved."""
    root = directory.resolve()
    where = str(directory)

    def read(rel: str, limit: int) -> bytes:
        path = (root / rel).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ImageError(f"{where}: {rel} is missing or leaves the layout")
        size = path.stat().st_size
        if size > limit:
            raise ImageError(f"{where}: {rel} is {size:,} bytes, more than the {limit:,} read")
        return path.read_bytes()

    if not (root / LAYOUT_FILE).is_file():
        raise ImageError(f"{where}: not an OCI image layout (no {LAYOUT_FILE} file)")
    try:
        index = json.loads(read("index.json", MAX_MANIFEST))
        manifests = index["manifests"]
        if not isinstance(manifests, list):
            raise TypeError("manifests is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise ImageError(f"{where}: index.json is not an OCI image index ({e})") from None
    if ref is not None:
        manifests = [m for m in manifests if isinstance(m, dict) and (m.get("annotations") or {}).get(REF_NAME) == ref]
    if len(manifests) != 1 or not isinstance(manifests[0], dict):
        raise ImageError(f"{where}: index.json lists {len(manifests)} images{f' named {ref!r}' if ref else ''}; "
                         "expected exactly one")
    digest = manifests[0].get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ImageError(f"{where}: index.json names the manifest by {digest!r}, not a sha256 digest")

    def read_blob(d: str, limit: int) -> bytes:
        if not DIGEST.fullmatch(d):
            raise ImageError(f"{where}: {d!r} is not a sha256 digest")
        return _checked(read(f"blobs/sha256/{d.removeprefix('sha256:')}", limit), d, where)

    return Fetched(read_blob(digest, MAX_MANIFEST), read_blob, where, manifests[0].get("mediaType"))


# ------------------------------------------------------------------------------------------ Istio's rules

Layout = Literal["docker", "compat", "oci"]
LAYOUT_NAMES: dict[str, str] = {
    "docker": "Docker image (schema 2 manifest, last layer tar+gzip with plugin.wasm)",
    "compat": "OCI image, compat variant (last layer application/vnd.oci.image.layer.v1.tar+gzip with plugin.wasm)",
    "oci": "OCI image, oci variant (application/vnd.module.wasm.content.layer.v1+wasm layer)",
}


@dataclass(frozen=True)
class Verdict:
    """Which of Istio's layouts an image is (None: none), why, and the module Istio would load."""

    layout: Layout | None
    manifest_digest: str
    reasons: tuple[str, ...]  # why each rule that was tried failed
    module: bytes | None = field(default=None, repr=False)
    resolved_from: str | None = None  # the index digest, when a platform entry was chosen

    @property
    def description(self) -> str:
        if self.layout is None:
            return "none of Istio's three Wasm image layouts"
        return LAYOUT_NAMES[self.layout]


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip stream, at most `limit` bytes of output (a small blob can expand hugely)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise ValueError(f"expands past {limit:,} bytes (Istio's read limit)")
    if not inflater.eof:
        raise ValueError("the gzip stream is truncated")
    return out


def _plugin_from_tgz(data: bytes) -> bytes:
    """Like Istio: the first tar entry whose base name is plugin.wasm, whatever its type."""
    try:
        tar_bytes = _gunzip(data, MAX_MODULE)
    except (zlib.error, ValueError) as e:
        raise ValueError(f"the layer is not tar+gzip ({e})") from None
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for member in tar:
                if posix_basename(member.name) == PLUGIN_FILE:
                    extracted = tar.extractfile(member) if member.isreg() else None
                    return extracted.read() if extracted is not None else b""
    except tarfile.TarError as e:
        raise ValueError(f"the layer is not a tar archive ({e})") from None
    raise ValueError(f"{PLUGIN_FILE} not found in the archive")


def posix_basename(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _layers(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, dict) for x in layers):
        raise ValueError("the manifest has no list of layers")
    return layers


def _blob(fetched: Fetched, desc: dict[str, Any], limit: int) -> bytes:
    digest = desc.get("digest")
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ValueError(f"a layer names its blob by {digest!r}, not a sha256 digest")
    return fetched.read_blob(digest, limit)


def _last_tgz(fetched: Fetched, manifest: dict[str, Any], want: str) -> bytes:
    layers = _layers(manifest)
    if not layers:
        raise ValueError("number of layers must be greater than zero")
    media = layers[-1].get("mediaType")
    if media != want:
        raise ValueError(f"the last layer is {media}, not {want}")
    return _plugin_from_tgz(_blob(fetched, layers[-1], MAX_MODULE))


def _oci_artifact(fetched: Fetched, manifest: dict[str, Any]) -> bytes:
    layers = _layers(manifest)
    if len(layers) != 2:
        raise ValueError(f"number of layers must be 2 but got {len(layers)}")
    for layer in layers:
        if layer.get("mediaType") == WASM_LAYER:
            return _blob(fetched, layer, MAX_MODULE)
    raise ValueError(f"no layer of type {WASM_LAYER}")


def _parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise ImageError(f"{where}: the manifest is not JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ImageError(f"{where}: the manifest is not a JSON object")
    return manifest


def _platform_entry(index: dict[str, Any]) -> dict[str, Any] | None:
    for entry in index.get("manifests") or []:
        platform = entry.get("platform") if isinstance(entry, dict) else None
        if isinstance(platform, dict) and platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry
    return None


def classify(fetched: Fetched, resolve: Callable[[str], Fetched] | None = None, *, nested: bool = False) -> Verdict:
    """Apply Istio's rules, in Istio's order, to an image; `resolve` reads an index entry's manifest."""
    manifest = _parse_manifest(fetched.manifest, fetched.where)
    media = manifest.get("mediaType") or fetched.content_type
    if media in (OCI_INDEX, DOCKER_LIST) or ("manifests" in manifest and "layers" not in manifest):
        if nested:
            return Verdict(None, fetched.digest, ("an index inside an index; istio-agent resolves one level",))
        entry = _platform_entry(manifest)
        if entry is None or resolve is None or not DIGEST.fullmatch(str(entry.get("digest"))):
            return Verdict(None, fetched.digest, ("an image index without a linux/amd64 entry, the platform "
                                                  "istio-agent asks for",))
        child = classify(resolve(str(entry["digest"])), nested=True)
        return Verdict(child.layout, child.manifest_digest, child.reasons, child.module, fetched.digest)
    reasons: list[str] = []
    if manifest.get("mediaType") == DOCKER_MANIFEST:
        # Istio tries nothing else for a Docker manifest.
        try:
            return Verdict("docker", fetched.digest, (), _last_tgz(fetched, manifest, DOCKER_LAYER_TGZ))
        except ValueError as e:
            return Verdict(None, fetched.digest, (f"as a Docker image: {e}",))
    for layout, attempt in (("compat", lambda: _last_tgz(fetched, manifest, OCI_LAYER_TGZ)),
                            ("oci", lambda: _oci_artifact(fetched, manifest))):
        try:
            module = attempt()
        except ValueError as e:
            reasons.append(f"as the {layout} variant: {e}")
            continue
        return Verdict(layout, fetched.digest, tuple(reasons), module)  # type: ignore[arg-type]
    return Verdict(None, fetched.digest, tuple(reasons))


# ------------------------------------------------------------------------------------------ references

@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as written
    repository: str  # the path inside the registry
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def plain_http(self) -> bool:
        """Loopback registries speak plain HTTP (as Docker treats 127.0.0.0/8 as insecure by default)."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else \
            self.registry[1:self.registry.index("]")]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def parse_repository(text: str) -> tuple[str, str] | None:
    """registry.example.com[:port]/path -> (registry, path); None when it is not that."""
    if "/" not in text:
        return None
    host, path = text.split("/", 1)
    if not _HOST.fullmatch(host) or ("." not in host and ":" not in host and host != "localhost"):
        return None
    if not _REPO_PATH.fullmatch(path):
        return None
    return host, path


def parse_reference(text: str) -> Reference:
    raw = text.removeprefix("oci://")
    digest = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise ImageError(f"{text}: {digest!r} is not a sha256 digest (sha256: and 64 hex digits)")
    tag = None
    last = raw.rsplit("/", 1)[-1]
    if ":" in last:
        raw, tag = raw.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ImageError(f"{text}: {tag!r} is not a valid tag")
    parsed = parse_repository(raw)
    if parsed is None:
        raise ImageError(f"{text}: not an image reference; write REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST] "
                         "with the registry's host name")
    return Reference(parsed[0], parsed[1], tag, digest)


# ------------------------------------------------------------------------------------------ credentials

def auth_files(env: Mapping[str, str]) -> list[Path]:
    """Where credentials are looked up, first match wins: the containers tools' REGISTRY_AUTH_FILE and
    their per-user auth.json, then Docker's config ($DOCKER_CONFIG/config.json or ~/.docker/config.json)."""
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    elif env.get("HOME"):
        files.append(Path(env["HOME"]) / ".docker" / "config.json")
    return files


@dataclass(frozen=True)
class Credentials:
    basic: str | None  # base64 of user:password, as the config files store it
    source: str | None  # the file it came from, for messages
    helper: str | None = None  # docker-credential-<helper> to ask instead


def credentials_for(registry: str, env: Mapping[str, str]) -> Credentials:
    import base64

    keys = (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")
    for path in auth_files(env):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot read the registry credentials in it ({e}); fix or remove it") from None
        if not isinstance(config, dict):
            continue
        helper = (config.get("credHelpers") or {}).get(registry)
        if isinstance(helper, str) and helper:
            return Credentials(None, str(path), helper)
        auths = config.get("auths") or {}
        for key in keys:
            entry = auths.get(key) if isinstance(auths, dict) else None
            if isinstance(entry, dict):
                if isinstance(entry.get("auth"), str) and entry["auth"]:
                    return Credentials(entry["auth"], str(path))
                if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                    pair = f"{entry['username']}:{entry['password']}".encode()
                    return Credentials(base64.b64encode(pair).decode("ascii"), str(path))
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return Credentials(None, str(path), store)
    return Credentials(None, None)


# ------------------------------------------------------------------------------------------ registry

TIMEOUT = (10, 120)  # connect, read (seconds)

Progress = Callable[[str], None]


def terminal_progress() -> Progress | None:
    """Progress lines on a terminal's stderr, nothing when it is a file or a pipe."""
    if not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


class RegistryClient:
    """The distribution-spec calls wasm-gitops needs, through oras-py (the ORAS project's Python client).

    oras-py does the blob upload protocol, the bearer-token dance and credential helpers. Two of its
    defaults do not fit a command line tool, so they are replaced here: its request wrapper retries a
    failed connection five times with sleeps of up to 83 s (minutes before "registry down" is said), and
    its manifest upload re-serialises the JSON, which changes the bytes and so the digest we locked."""

    def __init__(self, ref: Reference, env: Mapping[str, str], progress: Progress | None = None) -> None:
        import oras.provider
        import requests

        self.ref = ref
        self.progress = progress
        self.requests = requests
        self.credentials = credentials_for(ref.registry, env)
        client = self

        class _Registry(oras.provider.Registry):
            def do_request(self, url: str, method: str = "GET", data: Any = None, headers: dict[str, str] | None = None,
                           json: Any = None, stream: bool = False) -> Any:
                return client.request(self, url, method, data=data, headers=headers, json=json, stream=stream)

        self.oras = _Registry(hostname=ref.registry, insecure=ref.plain_http, auth_backend="token")
        self.container = self.oras.get_container(f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}")
        self.authorization: str | None = None
        self._basic: str | None = self.credentials.basic
        if self._basic is None and self.credentials.helper:
            self._basic = self.oras.auth._get_auth_from_creds_store(self.credentials.helper, ref.registry)
        if self._basic:
            self.oras.auth._basic_auth = self._basic

    @property
    def base(self) -> str:
        return f"{'http' if self.ref.plain_http else 'https'}://{self.ref.registry}/v2/{self.ref.repository}"

    def request(self, registry: Any, url: str, method: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers") or {})
        if self.authorization:
            headers["Authorization"] = self.authorization
        try:
            response = registry.session.request(method, url, headers=headers, verify=registry._tls_verify,
                                                timeout=TIMEOUT, allow_redirects=True, **kwargs)
            if response.status_code == 401 and self._authenticate(registry, response):
                headers["Authorization"] = self.authorization or ""
                response = registry.session.request(method, url, headers=headers, verify=registry._tls_verify,
                                                    timeout=TIMEOUT, allow_redirects=True, **kwargs)
        except self.requests.exceptions.SSLError as e:
            raise ImageError(f"{self.ref.registry}: TLS failed ({_short(e)}); check the registry's certificate") from None
        except self.requests.exceptions.ConnectionError as e:
            raise ImageError(f"{self.ref.registry}: cannot connect to the registry ({_short(e)}); check the host "
                             "name in image.repository and that the registry is up") from None
        except self.requests.exceptions.RequestException as e:
            raise ImageError(f"{self.ref.registry}: the request failed ({_short(e)})") from None
        return response

    def _authenticate(self, registry: Any, response: Any) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("basic"):
            if not self._basic:
                return False
            self.authorization = f"Basic {self._basic}"
            return True
        if challenge.lower().startswith("bearer"):
            # With credentials oras exchanges them for a token; without, it asks for an anonymous one
            # (public images on token-based registries).
            headers, changed = registry.auth.authenticate_request(response, {})
            if changed and headers.get("Authorization"):
                self.authorization = headers["Authorization"]
                return True
        return False

    def _refused(self, response: Any, what: str) -> ImageError:
        code = response.status_code
        if code == 401:
            where = (f"the credentials from {self.credentials.source} were refused" if self._basic
                     else "no credentials for it in REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or "
                     "~/.docker/config.json")
            return ImageError(f"{self.ref.registry}: {what}: 401 Unauthorized ({where}); log in (docker login / "
                              f"podman login {self.ref.registry}) and try again")
        if code == 403:
            return ImageError(f"{self.ref.registry}: {what}: 403 Forbidden; the account may not write "
                              f"{self.ref.repository}")
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors if isinstance(e, dict))
        except ValueError:
            pass
        return ImageError(f"{self.ref.registry}: {what}: HTTP {code}{f' ({detail})' if detail else ''}")

    def check(self) -> None:
        """GET /v2/: the distribution spec's version check, so a host that is no registry is said as such."""
        scheme = "http" if self.ref.plain_http else "https"
        response = self.request(self.oras, f"{scheme}://{self.ref.registry}/v2/", "GET", headers={})
        if response.status_code == 401:
            raise self._refused(response, "login")
        if response.status_code != 200 and "Docker-Distribution-Api-Version" not in response.headers:
            raise ImageError(f"{self.ref.registry}: is not an OCI registry (GET /v2/ answered HTTP "
                             f"{response.status_code}); check the host name in image.repository")

    def push(self, image: Image, tag: str) -> str:
        """Push the blobs, then the manifest under `tag`; returns the digest the registry reports."""
        self.check()
        items = sorted(image.blobs.items())
        for n, (digest, data) in enumerate(items, 1):
            head = self.request(self.oras, f"{self.base}/blobs/{digest}", "HEAD", headers={})
            if head.status_code == 200:
                self._say(f"  blob {n}/{len(items)} {digest[:19]} exists")
                continue
            if head.status_code not in (404, 401):
                raise self._refused(head, f"checking blob {digest[:19]}")
            self._say(f"  blob {n}/{len(items)} {digest[:19]} uploading {len(data):,} bytes")
            start = self.request(self.oras, f"{self.base}/blobs/uploads/", "POST",
                                 headers={"Content-Length": "0"})
            if start.status_code != 202:
                raise self._refused(start, "starting a blob upload")
            location = self.oras._get_location(start, self.container)
            sep = "&" if "?" in location else "?"
            done = self.request(self.oras, f"{location}{sep}digest={digest}", "PUT", data=data,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(len(data))})
            if done.status_code != 201:
                raise self._refused(done, f"uploading blob {digest[:19]}")
        self._say(f"  manifest {image.digest[:19]} as {tag}")
        put = self.request(self.oras, f"{self.base}/manifests/{tag}", "PUT", data=image.manifest,
                           headers={"Content-Type": image.media_type})
        if put.status_code != 201:
            raise self._refused(put, "uploading the manifest")
        reported = put.headers.get("Docker-Content-Digest", image.digest)
        if reported != image.digest:
            raise ImageError(f"{self.ref.registry}: stored the manifest as {reported}, not {image.digest}; "
                             "the registry changed it, so the lock would not match what proxies pull")
        return image.digest

    def fetch(self, reference: str) -> Fetched:
        """The manifest named by tag or digest, and a reader of its blobs (digests verified)."""
        self.check()
        response = self.request(self.oras, f"{self.base}/manifests/{reference}", "GET",
                                headers={"Accept": ", ".join(ACCEPTED_MANIFESTS)})
        if response.status_code != 200:
            raise self._refused(response, f"reading the manifest {reference}")
        body = response.content
        if len(body) > MAX_MANIFEST:
            raise ImageError(f"{self.ref.registry}: the manifest is {len(body):,} bytes; refusing it")
        if reference.startswith("sha256:"):
            _checked(body, reference, f"{self.ref}")

        def read_blob(digest: str, limit: int) -> bytes:
            if not DIGEST.fullmatch(digest):
                raise ImageError(f"{self.ref}: {digest!r} is not a sha256 digest")
            blob = self.request(self.oras, f"{self.base}/blobs/{digest}", "GET", headers={}, stream=True)
            if blob.status_code != 200:
                raise self._refused(blob, f"reading blob {digest[:19]}")
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in blob.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > limit:
                        raise ImageError(f"{self.ref}: blob {digest[:19]} is larger than {limit:,} bytes")
                    chunks.append(chunk)
            except self.requests.exceptions.RequestException as e:
                raise ImageError(f"{self.ref}: reading blob {digest[:19]} failed ({_short(e)})") from None
            return _checked(b"".join(chunks), digest, str(self.ref))

        content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or None
        return Fetched(body, read_blob, str(self.ref), content_type)

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(f"{self.ref.name}: {line.strip()}")


def _short(error: Exception) -> str:
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "Temporary failure in name resolution" in text \
            or "nodename nor servname" in text:
        return "no such host"
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200] if text else type(error).__name__


# ------------------------------------------------------------------------------------------ pulling

@dataclass(frozen=True)
class Pulled:
    """An image read back (from a registry or a layout): its verdict and, if Istio could load it, the module."""

    where: str
    verdict: Verdict

    @property
    def module(self) -> bytes | None:
        return self.verdict.module


def open_image(target: str, env: Mapping[str, str]) -> tuple[Fetched, Callable[[str], Fetched]]:
    """A manifest from `oci://REF` / `REGISTRY/REPO[:TAG|@DIGEST]`, or from an image layout directory."""
    path = Path(target)
    if not target.startswith("oci://") and path.is_dir():
        fetched = read_layout(path)

        def resolve_local(digest: str) -> Fetched:
            return Fetched(fetched.read_blob(digest, MAX_MANIFEST), fetched.read_blob, fetched.where)

        return fetched, resolve_local
    ref = parse_reference(target)
    client = RegistryClient(ref, env)
    fetched = client.fetch(ref.digest or ref.tag or "latest")

    def resolve_remote(digest: str) -> Fetched:
        return client.fetch(digest)

    return fetched, resolve_remote


def pull(target: str, env: Mapping[str, str] | None = None) -> Pulled:
    """Read an image and apply Istio's rules; `.module` holds the bytes istio-agent would hand to Envoy."""
    fetched, resolve = open_image(target, os.environ if env is None else env)
    return Pulled(fetched.where, classify(fetched, resolve))


def pull_pinned(pinned: str, module_sha256: str | None = None, env: Mapping[str, str] | None = None) -> bytes:
    """The module istio-agent (or the kubelet) gets for REPOSITORY@sha256:DIGEST, checked like the lock:
    for running a rendered filter in a real proxy with the very bytes the cluster would load."""
    pulled = pull(pinned if pinned.startswith("oci://") else f"oci://{pinned}", env)
    if pulled.module is None:
        raise ImageError(f"{pinned}: istio-agent cannot load it: {'; '.join(pulled.verdict.reasons)}")
    if module_sha256 is not None and hashlib.sha256(pulled.module).hexdigest() != module_sha256:
        raise ImageError(f"{pinned}: holds a module with sha256 {hashlib.sha256(pulled.module).hexdigest()}, not "
                         f"{module_sha256}")
    return pulled.module


def delivered_module(f: Filter, env: Mapping[str, str] | None = None) -> bytes:
    """The bytes a proxy ends up running for filter `f` as rendered: the file's for a ConfigMap, the pinned
    image's (pulled, the lock's module sha256 checked) for delivery oci and imageVolume."""
    if f.image is None or f.delivery == "configMap":
        return f.binary.data
    return pull_pinned(f.image.pinned, f.binary.sha256, env)


def iter_blobs(image: Image) -> Iterator[tuple[str, int]]:
    for digest, data in sorted(image.blobs.items()):
        yield digest, len(data)
