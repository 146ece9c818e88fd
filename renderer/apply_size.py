"""What the Kubernetes API server and client-side `kubectl apply` let one object be: the ConfigMap limit,
the annotations limit, and the size of the annotation client-side apply adds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# The API server refuses a ConfigMap whose data totals more than corev1.MaxSecretSize, 1 MiB
# (ValidateConfigMap).
CONFIGMAP_LIMIT = 1_048_576
# Client-side `kubectl apply` copies the whole object into the
# kubectl.kubernetes.io/last-applied-configuration annotation, and the API server refuses an object
# whose annotations (every key and value, in bytes) total more than 262,144
# (apimachinery pkg/api/validation/objectmeta.go, TotalAnnotationSizeLimitB).
ANNOTATION_LIMIT = 262_144
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# binaryData is base64, 4/3 larger: past 196,608 raw bytes the annotation cannot fit whatever the rest
# of the object is. Below it, whether it fits is computed per object (last_applied_annotations_size).
CLIENT_SIDE_APPLY_LIMIT = 196_608


def _go_json_size(value: Any) -> int:
    """Bytes of `value` as Go's encoding/json Encoder writes it: compact, map keys sorted, non-ASCII
    as UTF-8, and <, >, &, U+2028 and U+2029 escaped as \\uXXXX (Encoder's default SetEscapeHTML)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    # Each of the five becomes six ASCII bytes: one byte for <>&, three (UTF-8) for the two separators.
    return (len(text.encode("utf-8")) + 5 * (text.count("<") + text.count(">") + text.count("&"))
            + 3 * (text.count("\u2028") + text.count("\u2029")))


def last_applied_annotations_size(obj: dict[str, Any]) -> int:
    """What client-side `kubectl apply` makes the object's annotations total, in bytes.

    kubectl (pkg/util/apply.go, GetModifiedConfiguration) encodes the object without the
    last-applied annotation with unstructured.UnstructuredJSONScheme, which is Go's json.Encoder
    (one trailing newline), and stores that as the annotation; the API server then sums len(key) +
    len(value) over all annotations. binaryData's base64 needs no escaping, so each value is counted
    by its length instead of being serialised again (a 1 MiB ConfigMap costs nothing extra)."""
    meta = obj.get("metadata") or {}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    binary = obj.get("binaryData") or {}
    light = {**obj, "metadata": {**meta, "annotations": annotations} if annotations else
             {k: v for k, v in meta.items() if k != "annotations"},
             **({"binaryData": {k: "" for k in binary}} if binary else {})}
    encoded = _go_json_size(light) + sum(len(str(v)) for v in binary.values()) + 1  # + Encoder's newline
    others = sum(len(k.encode("utf-8")) + len(str(v).encode("utf-8")) for k, v in annotations.items())
    return others + len(LAST_APPLIED) + encoded


APPLY_NAMESPACE = "default"


def client_side_apply_size(data: bytes, filter_name: str, namespace: str = APPLY_NAMESPACE) -> int:
    """last_applied_annotations_size of the very ConfigMap render writes for this binary."""
    from . import objects  # objects imports this module (through wasm.py): resolved at call time
    from .model import DEFAULTS, Binary, Filter

    f = Filter(name=filter_name, binary=Binary(hashlib.sha256(data).hexdigest(), len(data)), root_id="",
               vm_id=filter_name, runtime=DEFAULTS.runtime, allow_precompiled=True, fail_open=False,
               config=None, phase=None, priority=None, build=None)
    cm = objects.configmap(f, namespace, objects.encode(data))
    cm["metadata"]["annotations"][objects.SYNC_OPTIONS] = "PruneLast=true"  # as measured before marking
    return last_applied_annotations_size(cm)
