"""What a sidecar's pod mounts, read from the rendered tree: each overlay's objects and annotations,
the files its `sidecar.istio.io/userVolume` / `userVolumeMount` annotations mount, and the module
bytes at each, written once per content into a local directory that the chains point at.

The filename in a Wasm config must be a file the Deployment patch mounts (a projected or plain
configMap volume: ConfigMap name, item key -> path, mount path; or an image volume, the module at
plugin.wasm), the ConfigMap must be in the tree in the workload's namespace with that key in
`binaryData`; its bytes are written to a local file and the filename rewritten to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .chain import ChainError, Obj

USER_VOLUME = "sidecar.istio.io/userVolume"
USER_VOLUME_MOUNT = "sidecar.istio.io/userVolumeMount"
COMPONENT_LOG_LEVEL = "sidecar.istio.io/componentLogLevel"


@dataclass
class Overlay:
    name: str
    namespace: str = "default"
    envoy_filters: list[tuple[str, Obj]] = field(default_factory=list)
    wasm_plugins: list[tuple[str, Obj]] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


def read_overlays(pairs: Iterable[tuple[str, Obj]]) -> tuple[dict[str, Overlay], dict[tuple[str, str], Obj]]:
    overlays: dict[str, Overlay] = {}
    configmaps: dict[tuple[str, str], Obj] = {}
    for path, obj in pairs:
        kind = obj.get("kind")
        meta = obj.get("metadata") or {}
        if kind == "ConfigMap":
            configmaps[(str(meta.get("namespace", "default")), str(meta.get("name")))] = obj
            continue
        parts = path.split("/")
        if len(parts) != 3 or parts[0] != "overlays":
            continue
        ov = overlays.setdefault(parts[1], Overlay(parts[1]))
        if kind == "Kustomization" and obj.get("namespace"):
            ov.namespace = str(obj["namespace"])
        elif kind == "EnvoyFilter":
            ov.envoy_filters.append((path, obj))
        elif kind in ("WasmPlugin", "TrafficExtension"):  # one translation: istiod turns the first into the second
            ov.wasm_plugins.append((path, obj))
        elif kind == "Deployment":
            tmpl = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
            ov.annotations.update({str(k): str(v) for k, v in (tmpl.get("annotations") or {}).items()})
    return overlays, configmaps


class Modules:
    """Module bytes written once per content into a directory; the chains point at those files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, Path] = {}

    def file_for(self, data: bytes, name: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._written.get(digest)
        if path is None:
            path = self.directory / f"{digest[:16]}-{posixpath.basename(name) or 'module.wasm'}"
            path.write_bytes(data)
            self._written[digest] = path
        return str(path)


# How a chain gets the module of an image (REPOSITORY@sha256:DIGEST or oci://...): pulled from its
# registry by the caller, as the kubelet (image volume) or istio-agent (oci:// URL) would pull it.
ImageFetcher = Callable[[str], bytes]
IMAGE_MODULE = "plugin.wasm"  # where Istio's compat image layout keeps the module (pkg/wasm/imagefetcher.go)


def image_module(reference: str, images: ImageFetcher | None) -> bytes | str:
    if images is None:
        return f"the image {reference} is not pulled here (no registry access was given)"
    try:
        return images(reference)
    except Exception as e:  # noqa: BLE001 - whatever the registry client raised is this chain's failure
        return f"the image {reference} could not be pulled: {e}"


def mounted_files(ov: Overlay, configmaps: Mapping[tuple[str, str], Obj],
                   images: ImageFetcher | None = None) -> dict[str, bytes | str]:
    """Path in the sidecar -> the module bytes, or why that path cannot be read (an error message)."""
    volumes = _json_map(ov, USER_VOLUME)
    mounts = _json_map(ov, USER_VOLUME_MOUNT)
    files: dict[str, bytes | str] = {}
    for volume_name, mount in sorted(mounts.items()):
        if not isinstance(mount, dict) or not isinstance(mount.get("mountPath"), str):
            raise ChainError(f"overlays/{ov.name}: {USER_VOLUME_MOUNT} entry {volume_name!r} has no mountPath")
        if volume_name not in volumes:
            raise ChainError(f"overlays/{ov.name}: {USER_VOLUME_MOUNT} mounts volume {volume_name!r}, which "
                             f"{USER_VOLUME} does not define: the pod would not be created")
        source = volumes[volume_name] or {}
        image = source.get("image") if isinstance(source, dict) else None
        if isinstance(image, dict) and isinstance(image.get("reference"), str):
            # An image volume: the image's files under the mount path, the module at plugin.wasm.
            target = posixpath.normpath(posixpath.join(mount["mountPath"], IMAGE_MODULE))
            files[target] = image_module(image["reference"], images)
            continue
        sources = [source] if "configMap" in source else list((source.get("projected") or {}).get("sources") or [])
        for src in sources:
            cm = src.get("configMap") if isinstance(src, dict) else None
            if not cm:
                continue
            name = str(cm.get("name"))
            obj = configmaps.get((ov.namespace, name))
            if obj is None:
                if cm.get("optional"):
                    continue
                have = sorted(n for ns, n in configmaps if ns == ov.namespace)
                raise ChainError(f"overlays/{ov.name}: {USER_VOLUME} mounts ConfigMap {name!r}, which the "
                                 f"tree does not have in namespace {ov.namespace!r} (it has: "
                                 f"{', '.join(have) or 'none'}): the pod would not start")
            binary = obj.get("binaryData") or {}
            items = cm.get("items") or [{"key": k, "path": k} for k in sorted(binary)]
            for item in items:
                key, rel = str(item.get("key")), str(item.get("path"))
                target = posixpath.normpath(posixpath.join(mount["mountPath"], rel))
                if key not in binary:
                    files[target] = (f"ConfigMap {ov.namespace}/{name} has no binaryData key {key!r} "
                                     f"(keys: {', '.join(sorted(binary)) or 'none'})")
                    continue
                try:
                    files[target] = base64.b64decode(binary[key], validate=True)
                except (binascii.Error, ValueError):
                    files[target] = f"ConfigMap {ov.namespace}/{name} key {key!r} is not base64"
    return files


def _json_map(ov: Overlay, annotation: str) -> dict[str, Any]:
    text = ov.annotations.get(annotation)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ChainError(f"overlays/{ov.name}: annotation {annotation} is not JSON ({e})") from None
    if isinstance(value, list):  # the list form: [{"name": ..., <volume source>}]
        return {str(v.get("name")): {k: x for k, x in v.items() if k != "name"} for v in value if isinstance(v, dict)}
    if not isinstance(value, dict):
        raise ChainError(f"overlays/{ov.name}: annotation {annotation} is neither a JSON map nor a list")
    return value



def localise(plugin: Obj, files: Mapping[str, bytes | str], modules: Modules, where: str) -> tuple[Obj, str]:
    """Point the plugin's module at a local copy of the mounted file; fail when nothing is mounted there."""
    vm = plugin.get("vm_config") or {}
    local = (vm.get("code") or {}).get("local") or {}
    filename = local.get("filename")
    if not isinstance(filename, str):
        raise ChainError(f"{where}: the Wasm config loads no local file (vm_config.code.local.filename)")
    found = files.get(posixpath.normpath(filename))
    if found is None:
        mounted = ", ".join(sorted(files)) or "nothing"
        raise ChainError(f"{where}: loads {filename}, which the pod's {USER_VOLUME_MOUNT} does not mount "
                         f"(mounted: {mounted})")
    if isinstance(found, str):
        raise ChainError(f"{where}: loads {filename}: {found}")
    local["filename"] = modules.file_for(found, filename)
    return plugin, filename
