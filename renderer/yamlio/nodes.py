"""Reading composed nodes (a workload manifest's) without building the whole document."""

from __future__ import annotations

import yaml


def node_get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def node_text(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def node_strings(node: yaml.Node | None) -> list[str]:
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [n.value for n in node.value if isinstance(n, yaml.ScalarNode)]


def node_string_map(node: yaml.Node | None) -> dict[str, str]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: v.value for k, v in node.value
            if isinstance(k, yaml.ScalarNode) and isinstance(v, yaml.ScalarNode)}
