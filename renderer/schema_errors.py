"""jsonschema errors -> problems a person can act on: one driver, one table of rules per reader.

The spec's reader writes filters.yaml's words ("must be a map, not a list") at the key the user wrote;
the Kubernetes reader writes API words ("expected object, got array") under a JSON path whose odd keys
are quoted; a filter's own schema (configSchema) is the filter author's, so its errors keep jsonschema's
words and name the rule broken. All walk the errors through `Dialect.explain`: a rule per schema
keyword, and a fallback for every keyword without one (or whose rule does not apply to this error).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["KUBERNETES", "SPEC", "Dialect", "Problem", "config_dialect", "describe", "json_path", "kubernetes_message",
           "one_line", "schema_pointer", "short"]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_MESSAGE: Final = 300


def json_path(parts: Iterable[str | int], *, quoted: bool = False) -> str:
    """`$.a[0].b`. `quoted` writes a key that is not an identifier as `['app.kubernetes.io/name']`
    (how Kubernetes tools name such keys); unquoted, keys read as the user wrote them in filters.yaml."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not quoted or _IDENTIFIER.fullmatch(part):
            out += f".{part}"
        else:
            out += "['" + part.replace("\\", "\\\\").replace("'", "\\'") + "']"
    return out


def where(path: Iterable[str | int]) -> str:
    """A place in filters.yaml as a message names it: `services[0].name`, or `the document`."""
    text = json_path(path)
    return "the document" if text == "$" else text.removeprefix("$.")


def describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def short(value: object) -> str:
    # Instances can be megabytes of base64; a message must stay one readable line.
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Problem:
    path: tuple[str | int, ...]
    message: str
    key: bool = False  # the problem is the key itself (unknown, misspelt): point at it, not at its value


# A rule answers None when it does not apply to this error (its shape is not the one it explains).
Rule = Callable[[Any, "Dialect"], "Iterable[Problem] | None"]


@dataclass(frozen=True)
class Dialect:
    rules: Mapping[str, Rule]
    fallback: Rule

    def explain(self, error: Any) -> Iterator[Problem]:
        rule = self.rules.get(error.validator)
        found = rule(error, self) if rule is not None else None
        yield from found if found is not None else (self.fallback(error, self) or ())


# ------------------------------------------------------------------------------ filters.yaml's words

_TYPE_WORDS: Final = {"object": "a map", "array": "a list", "string": "a string", "integer": "a whole number",
                      "boolean": "true or false", "number": "a number", "null": "empty"}


def _at(error: Any) -> tuple[tuple[str | int, ...], str, dict[str, Any]]:
    path = tuple(error.absolute_path)
    return path, where(path), error.schema if isinstance(error.schema, dict) else {}


def _one(error: Any, message: str) -> list[Problem]:
    return [Problem(tuple(error.absolute_path), message)]


def _unknown_keys(error: Any, _: Dialect) -> Iterable[Problem] | None:
    path, here, schema = _at(error)
    if not isinstance(error.instance, dict):
        return None
    allowed = sorted(schema.get("properties", {}))
    found = []
    for key in sorted(set(error.instance) - set(allowed)):
        guess = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {guess[0]!r}?" if guess else (
            f"allowed here: {', '.join(allowed)}" if allowed else "remove it")
        found.append(Problem(path + (key,), f"unknown key {key!r} in {here}; {hint}", key=True))
    return found


def _required(error: Any, _: Dialect) -> Iterable[Problem] | None:
    path, here, _schema = _at(error)
    if not isinstance(error.instance, dict):
        return None
    return [Problem(path, f"{here} is missing the required key {key!r}; add it")
            for key in error.validator_value if key not in error.instance]


def _type(error: Any, _: Dialect) -> Iterable[Problem]:
    want, inst = error.validator_value, error.instance
    words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in (want if isinstance(want, list) else [want]))
    hint = ""
    if want == "string" and isinstance(inst, (int, float)) and not isinstance(inst, bool):
        hint = f"; quote it: \"{inst}\""
    elif want == "string" and isinstance(inst, bool):
        hint = "; quote it"
    return _one(error, f"{where(error.absolute_path)} must be {words}, not {describe(inst)}{hint}")


def _enum(error: Any, _: Dialect) -> Iterable[Problem]:
    options = ", ".join(str(v) for v in error.validator_value)
    return _one(error, f"{where(error.absolute_path)}: {error.instance!r} is not allowed; use one of: {options}")


def _const(error: Any, _: Dialect) -> Iterable[Problem]:
    return _one(error, f"{where(error.absolute_path)} must be {error.validator_value!r}, not {error.instance!r}")


def _hinted(error: Any, _: Dialect) -> Iterable[Problem] | None:
    """A pattern or length the schema explains in words (x-hint): say those words."""
    _path, here, schema = _at(error)
    if "x-hint" in schema:
        return _one(error, f"{here}: {error.instance!r} is not {schema['x-hint']}; fix the value")
    if error.validator == "minLength":
        return _one(error, f"{here} must not be empty")
    return None


def _min_items(error: Any, _: Dialect) -> Iterable[Problem]:
    n = error.validator_value
    return _one(error, f"{where(error.absolute_path)} must list at least {n} item{'s' if n != 1 else ''}")


def _min_properties(error: Any, _: Dialect) -> Iterable[Problem]:
    return _one(error, f"{where(error.absolute_path)} must not be empty; remove it or add entries")


def _property_names(error: Any, _: Dialect) -> Iterable[Problem] | None:
    path, here, _schema = _at(error)
    if not isinstance(error.instance, dict):
        return None
    return [Problem(path + (sub.instance,), f"{sub.instance!r} is not a valid key in {here}; use a Kubernetes "
                    "label key (prefix/name) or a component name", key=True)
            for sub in error.context or [] if isinstance(sub.instance, str)]


def _one_of(error: Any, dialect: Dialect) -> Iterable[Problem]:
    # The two shapes of a service's filter entry: explain against the branch the user meant.
    inst = error.instance
    branch = 0 if isinstance(inst, str) else 1
    subs = [s for s in error.context or [] if s.relative_schema_path and s.relative_schema_path[0] == branch]
    if isinstance(inst, (str, dict)) and subs:
        return [problem for sub in subs for problem in dialect.explain(sub)]
    return _one(error, f"{where(error.absolute_path)} must be a filter name or a map with 'name' (and "
                f"'config'), not {describe(inst)}")


def _range(error: Any, _: Dialect) -> Iterable[Problem]:
    return _one(error, f"{where(error.absolute_path)}: {error.instance} is out of range "
                f"({error.validator} {error.validator_value})")


def _any_of(error: Any, _: Dialect) -> Iterable[Problem] | None:
    _path, here, schema = _at(error)
    return _one(error, f"{here}: {schema['x-message']}") if "x-message" in schema else None


def _dependent_required(error: Any, _: Dialect) -> Iterable[Problem] | None:
    path, here, _schema = _at(error)
    inst = error.instance
    if not isinstance(inst, dict):
        return None
    return [Problem(path + (key,), f"{here}.{key} needs {need!r} in {here}; add it", key=True)
            for key, needs in error.validator_value.items() if key in inst for need in needs if need not in inst]


def _spec_fallback(error: Any, _: Dialect) -> Iterable[Problem]:
    return _one(error, f"{where(error.absolute_path)}: {error.message}")


SPEC: Final = Dialect({
    "additionalProperties": _unknown_keys,
    "required": _required,
    "type": _type,
    "enum": _enum,
    "const": _const,
    "pattern": _hinted,
    "maxLength": _hinted,
    "minLength": _hinted,
    "minItems": _min_items,
    "minProperties": _min_properties,
    "propertyNames": _property_names,
    "oneOf": _one_of,
    "minimum": _range,
    "maximum": _range,
    "anyOf": _any_of,
    "dependentRequired": _dependent_required,
}, _spec_fallback)


# ------------------------------------------------------------------------------ the Kubernetes API's words

_JSON_TYPES: Final = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
                      float: "number", type(None): "null"}


def _described(error: Any, _: Dialect) -> Iterable[Problem] | None:
    # Combinators' default messages dump the whole instance and subschema; the schema author's
    # description says what the rule means.
    schema = error.schema if isinstance(error.schema, dict) else {}
    return _one(error, f"violates: {schema['description']}") if "description" in schema else None


def _kubernetes_rule(message: Callable[[Any], str]) -> Rule:
    return lambda error, _: _one(error, message(error))


def _format(error: Any) -> str:
    what = "base64 (format byte)" if error.validator_value == "byte" else f"{error.validator_value} value"
    return f"{short(error.instance)} is not valid {what}"


KUBERNETES: Final = Dialect({
    "not": _described,
    "anyOf": _described,
    "oneOf": _described,
    "type": _kubernetes_rule(lambda e: f"expected {e.validator_value}, got "
                             f"{_JSON_TYPES.get(type(e.instance), type(e.instance).__name__)}"),
    "enum": _kubernetes_rule(lambda e: f"{short(e.instance)} is not one of {', '.join(map(str, e.validator_value))}"),
    "const": _kubernetes_rule(lambda e: f"{short(e.instance)} must be {e.validator_value!r}"),
    "pattern": _kubernetes_rule(lambda e: f"{short(e.instance)} does not match {e.validator_value}"),
    "format": _kubernetes_rule(_format),
}, _kubernetes_rule(lambda e: str(e.message)))


def kubernetes_message(error: Any) -> str:
    """One error of a rendered object, in one line of at most 300 characters."""
    message = next(KUBERNETES.explain(error)).message
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


# ------------------------------------------------------------------------------ a filter's own schema

def schema_pointer(parts: Iterable[Any]) -> str:
    """A JSON pointer into a schema (`/properties/header/type`), or `/` for its root."""
    return "".join(f"/{p}" for p in parts) or "/"


def one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 1] + "…"


def _as_json(message: str, instance: Any) -> str:
    """The validator's messages start with Python's repr of the value (True, None, 'x'); the user
    wrote YAML or JSON, so show it as JSON."""
    prefix = repr(instance)
    if message.startswith(prefix):
        try:
            text = json.dumps(instance, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError, RecursionError):
            return message
        return text + message[len(prefix):]
    return message


def config_dialect(source: str, inside_string: bool) -> Dialect:
    """The reader of one configuration against the schema in `source`. A configuration written as a JSON
    string has no YAML positions inside it: its problems sit at the string (path ())."""

    def rule(error: Any) -> str:
        return f"{source}, {schema_pointer(error.absolute_schema_path)}"

    def unknown_keys(error: Any, _: Dialect) -> Iterable[Problem] | None:
        if not isinstance(error.instance, dict) or inside_string:
            return None
        inner = tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [k for k in error.instance if k not in allowed and not any(re.search(p, k) for p in patterns)]
        found = []
        for key in sorted(extra):
            guess = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {guess[0]!r}?" if guess else (
                f"the schema allows: {', '.join(allowed)}" if allowed else "remove it")
            found.append(Problem(inner + (key,), f"at {json_path(inner + (key,))}: unknown key {key!r} "
                                 f"({rule(error)}); {hint}", key=True))
        return found

    def fallback(error: Any, _: Dialect) -> Iterable[Problem]:
        inner = tuple(error.absolute_path)
        return [Problem(() if inside_string else inner,
                        f"at {json_path(inner)}: {one_line(_as_json(error.message, error.instance))} "
                        f"({rule(error)}); make the configuration match the filter's schema")]

    return Dialect({"additionalProperties": unknown_keys}, fallback)
