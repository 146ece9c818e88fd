"""Which of Istio's three Wasm image layouts an image is, and the module istio-agent takes from it.

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

import io
import json
import tarfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .image import (
    DIGEST,
    DOCKER_LAYER_TGZ,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_MODULE,
    OCI_INDEX,
    OCI_LAYER_TGZ,
    PLUGIN_FILE,
    WASM_LAYER,
    Fetched,
    ImageError,
)

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
    attempts: tuple[tuple[Layout, Callable[[], bytes]], ...] = (
        ("compat", lambda: _last_tgz(fetched, manifest, OCI_LAYER_TGZ)), ("oci", lambda: _oci_artifact(fetched, manifest)))
    for layout, attempt in attempts:
        try:
            module = attempt()
        except ValueError as e:
            reasons.append(f"as the {layout} variant: {e}")
            continue
        return Verdict(layout, fetched.digest, tuple(reasons), module)
    return Verdict(None, fetched.digest, tuple(reasons))
