"""The scalars of YAML 1.2's core schema: what the loader resolves them to, and what the emitter must quote."""

from __future__ import annotations

import re

TAG = "tag:yaml.org,2002:"

# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
