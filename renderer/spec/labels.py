"""Kubernetes' label syntax and the path text our output refuses, as the API server and kustomize see them."""

from __future__ import annotations

import posixpath
import re

# Kubernetes' own label syntax (apimachinery validation.IsQualifiedName / IsValidLabelValue): what the
# API server refuses in a workloadSelector or matchLabels, refused here where the label comes from.
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE_RULE = ("at most 63 characters, alphanumeric, '-', '_' or '.', starting and ending with an "
                     "alphanumeric character, or empty")


def label_value_problem(value: str) -> str | None:
    if len(value) > 63 or (value and not _LABEL_NAME.fullmatch(value)):
        return f"{value!r} is not a valid Kubernetes label value ({_LABEL_VALUE_RULE})"
    return None


def label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return f"{key!r} is not a valid Kubernetes label key (its prefix must be a DNS subdomain)"
    if not name or len(name) > 63 or not _LABEL_NAME.fullmatch(name):
        return (f"{key!r} is not a valid Kubernetes label key (the name after any prefix/ is 1 to 63 "
                "characters, alphanumeric, '-', '_' or '.', starting and ending with an alphanumeric)")
    return None


def path_text_problem(what: str, text: str) -> str | None:
    """Whitespace a path can hold on disk but that our output refuses to carry (leading or trailing
    whitespace is invisible in a review; a tab or newline in a path is a typo, not a directory)."""
    if "\\" in text:
        return (f"{what} {text!r} holds a backslash; separate directories with '/' (kustomize reads a "
                "backslash as part of a name, and Windows checkouts as a separator)")
    norm = posixpath.normpath(text)  # as the overlay names it: "apps/x /" ends in a space there
    if text != text.strip() or norm != norm.strip() or any(c in text for c in "\t\n\r\f\v"):
        return (f"{what} {text!r} has leading, trailing or non-space whitespace; remove it (rename the "
                "directory if it really has such a name)")
    return None
