"""`wasm-gitops inspect`: what a .wasm file, an OCI image layout or an oci:// reference holds."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..files import read_file
from ..wasm import MODULE_LIMIT, WasmReport, inspect_wasm


def exit_code(report: WasmReport) -> int:
    """0: a loadable proxy-wasm module; 1: valid WebAssembly, not proxy-wasm; 2: not loadable."""
    if not report.valid:
        return 2
    return 0 if report.is_proxy_wasm else 1



@dataclass(frozen=True)
class ImageReport:
    """An OCI image as istio-agent would read it: which layout it is, and the module inside, if any."""

    target: str
    layout: str | None  # docker, compat, oci; None: none of Istio's layouts
    description: str
    manifest_digest: str
    reasons: tuple[str, ...]
    module: WasmReport | None
    module_bytes: bytes = b""  # what istio-agent hands to Envoy (empty when it cannot find it)
    resolved_from: str | None = None

    @property
    def loadable(self) -> bool:
        return self.layout is not None and self.module is not None and self.module.is_wasm


def inspect_image(target: str, env: Mapping[str, str] | None = None) -> ImageReport:
    """`oci://REF` or an image layout directory, through Istio's rules (renderer.oci), then the module."""
    from .. import oci

    pulled = oci.pull(target, env)
    v = pulled.verdict
    module = inspect_wasm(v.module) if v.module is not None else None
    reasons = v.reasons
    if v.layout is not None and module is not None and not module.is_wasm:
        reasons = (*reasons, f"the {v.layout} layout holds a {oci.PLUGIN_FILE} that is not WebAssembly; "
                   "istio-agent refuses it (\"fetched Wasm binary ... is invalid\")")
    return ImageReport(target, v.layout, v.description, v.manifest_digest, reasons, module,
                       v.module or b"", v.resolved_from)


def image_exit_code(report: ImageReport) -> int:
    """As for a file, with an image Istio cannot read counted as not loadable (2)."""
    if not report.loadable or report.module is None:
        return 2
    return exit_code(report.module)



@dataclass(frozen=True)
class Inspected:
    """One inspected target: a module file (image None), or an image with the module inside it."""

    path: str
    module: WasmReport | None
    image: ImageReport | None = None

    @property
    def exit_code(self) -> int:
        if self.image is not None:
            return image_exit_code(self.image)
        assert self.module is not None  # a file always has its report
        return exit_code(self.module)


def inspect(target: str, env: Mapping[str, str]) -> Inspected:
    if target.startswith("oci://") or Path(target).is_dir():
        image = inspect_image(target, env)
        return Inspected(target, image.module, image)
    path = Path(target)
    try:
        # Never blocks on a FIFO or reads a device; the size is checked before reading.
        data = read_file(os.fspath(path), MODULE_LIMIT)
    except OSError as e:
        raise UsageError(f"{path}: cannot read it: {e.strerror}") from None
    return Inspected(str(path), inspect_wasm(data, filter_name=path.stem))
