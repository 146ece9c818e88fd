"""One Wasm module as an OCI image in memory, byte-reproducible, and as an OCI image layout on disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import UsageError

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


def checked_digest(data: bytes, digest: str, where: str) -> bytes:
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
        return checked_digest(read(f"blobs/sha256/{d.removeprefix('sha256:')}", limit), d, where)

    return Fetched(read_blob(digest, MAX_MANIFEST), read_blob, where, manifests[0].get("mediaType"))


def iter_blobs(image: Image) -> Iterator[tuple[str, int]]:
    for digest, data in sorted(image.blobs.items()):
        yield digest, len(data)
