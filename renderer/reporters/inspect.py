"""inspect's report: what a .wasm module is (and, for an image, which of Istio's layouts holds it), as
aligned text or JSON."""

from __future__ import annotations

from ..commands.inspect import ImageReport, Inspected, exit_code, image_exit_code
from ..wasm import ANNOTATION_LIMIT, APPLY_NAMESPACE, CLIENT_SIDE_APPLY_LIMIT, CONFIGMAP_LIMIT, WasmReport
from .base import document, reporter


def verdict(report: WasmReport) -> str:
    """One sentence a person can act on."""
    if not report.is_wasm:
        return "not WebAssembly"
    if not report.valid:
        return "invalid WebAssembly"
    if report.legacy:
        return "proxy-wasm module, ABI version unknown (legacy)"
    if report.is_proxy_wasm:
        return f"proxy-wasm module, ABI {report.abi_version}"
    return "valid WebAssembly, but not a proxy-wasm module (no proxy_abi_version_* export, no proxy_on_* callback)"



def _human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size} bytes ({size / 1024:.1f} KiB)" if size < 1024 * 1024 else f"{size} bytes ({size / 1048576:.2f} MiB)"


def _list(items: tuple[str, ...]) -> str:
    return ", ".join(items) if items else "none"


def _apply_verdict(report: WasmReport) -> str:
    if report.apply_size is None:
        if report.fits_client_side_apply:
            return "fits"
        return f"too large (limit {CLIENT_SIDE_APPLY_LIMIT} bytes); use kubectl apply --server-side"
    measured = (f"last-applied-configuration takes the annotations of its ConfigMap (filter "
                f"{report.apply_filter!r}, namespace {APPLY_NAMESPACE}) to {report.apply_size:,} of "
                f"{ANNOTATION_LIMIT:,} bytes")
    if report.fits_client_side_apply:
        return f"fits ({measured})"
    return f"too large ({measured}); render marks it ServerSideApply=true for Argo CD; use kubectl apply --server-side"


@reporter("module", "json")
def json_module(report: WasmReport, path: str) -> str:
    return document({"path": path, "exit_code": exit_code(report), "verdict": verdict(report), **report.as_dict()})


@reporter("module", "text")
def text_module(report: WasmReport, path: str) -> str:
    rows: list[tuple[str, str]] = [
        ("file", path),
        ("verdict", verdict(report)),
        ("size", _human_size(report.size)),
        ("sha256", report.sha256),
    ]
    if not report.valid:
        rows.append(("error", report.error or ""))
    else:
        if report.legacy:
            abi = "unknown (legacy)"
        else:
            abi = report.abi_version or "none"
        rows += [
            ("abi version", abi),
            ("callbacks", _list(report.callbacks)),
            ("import modules", _list(report.import_modules)),
            ("start", report.start or "none"),
            ("exported functions", _list(report.exported_functions)),
            (
                "configmap",
                "fits" if report.fits_configmap else f"too large (limit {CONFIGMAP_LIMIT} bytes); serve it over HTTP(S) or OCI instead",
            ),
            ("client-side apply", _apply_verdict(report)),
        ]
    width = max(len(label) for label, _ in rows) + 1
    return "".join(f"{label + ':':<{width}} {value}\n" for label, value in rows)


@reporter("image", "json")
def json_image(report: ImageReport) -> str:
    return document({"image": report.target, "exit_code": image_exit_code(report), "layout": report.layout,
                     "layout_description": report.description, "manifest_digest": report.manifest_digest,
                     "resolved_from_index": report.resolved_from, "reasons": list(report.reasons),
                     "module": None if report.module is None else
                     {"verdict": verdict(report.module), **report.module.as_dict()}})


@reporter("image", "text")
def text_image(report: ImageReport) -> str:
    rows = [("image", report.target), ("layout", report.description), ("manifest digest", report.manifest_digest)]
    if report.resolved_from:
        rows.append(("from index", f"{report.resolved_from} (its linux/amd64 entry)"))
    if report.layout is None:
        rows += [("istio", "istio-agent cannot load it: " + "; ".join(report.reasons))]
    head = "".join(f"{label + ':':<17} {value}\n" for label, value in rows)
    if report.module is None:
        return head
    return head + text_module(report.module, f"{report.target} ({'plugin.wasm' if report.layout != 'oci' else 'wasm layer'})")


@reporter("inspect", "text")
def text_inspected(found: Inspected) -> str:
    if found.image is not None:
        return text_image(found.image)
    assert found.module is not None  # a file always has its report
    return text_module(found.module, found.path)


@reporter("inspect", "json")
def json_inspected(found: Inspected) -> str:
    if found.image is not None:
        return json_image(found.image)
    assert found.module is not None
    return json_module(found.module, found.path)
