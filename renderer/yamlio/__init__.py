"""All YAML in one place: a position-keeping, hostile-input-safe loader and the one emitter.

Loading composes the node tree with libyaml (PyYAML's C composer keeps line/column marks and is ~20x
faster than ruamel.yaml's round-trip loader on a 1,000-service spec), then builds plain Python data
ourselves so that we control every rule: YAML 1.2 core scalars (``on``/``no`` stay strings), duplicate
keys and non-string keys refused, only core tags allowed (never ``!!python/...``), aliases bounded by
the number of nodes they expand to, nesting bounded by depth.

text.py turns bytes into text and says what is wrong with text no YAML document may hold; load.py
composes and builds a document with positions; nodes.py reads composed nodes (workload manifests);
emit.py writes every generated YAML file; scalars.py holds the core schema's scalar forms both of
them follow.
"""

from __future__ import annotations

from .emit import GENERATED_HEADER, dump
from .load import (
    MAX_SPEC_BYTES,
    Document,
    Position,
    compose_all,
    json_path,
    load_document,
)
from .nodes import node_get, node_string_map, node_strings, node_text
from .text import SpecSyntaxError, decode_utf8

__all__ = [
    "Document",
    "GENERATED_HEADER",
    "MAX_SPEC_BYTES",
    "Position",
    "SpecSyntaxError",
    "compose_all",
    "decode_utf8",
    "dump",
    "json_path",
    "load_document",
    "node_get",
    "node_string_map",
    "node_strings",
    "node_text",
]
