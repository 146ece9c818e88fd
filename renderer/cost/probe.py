"""What a chain does to a request, seen from both ends: the headers the upstream received (its echo)
and the response the client got, against the same listener without the chain."""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from dataclasses import dataclass

PROBE_PATH = "/.wasm-gitops-cost-probe"


@dataclass(frozen=True)
class Seen:
    status: int
    request: tuple[tuple[str, str], ...]  # as the upstream received them
    response: tuple[tuple[str, str], ...]  # as the client received them


@dataclass(frozen=True)
class Effect:
    """What a chain did to the probe request, against the same listener without it."""

    request_added: tuple[tuple[str, str], ...] = ()
    response_added: tuple[tuple[str, str], ...] = ()
    other: tuple[str, ...] = ()  # anything header_mutation cannot reproduce by adding headers

    @property
    def headers_only(self) -> bool:
        return not self.other and bool(self.request_added or self.response_added)

    def describe(self) -> str:
        parts = [f"adds request header {k}: {v}" for k, v in self.request_added]
        parts += [f"adds response header {k}: {v}" for k, v in self.response_added]
        return "; ".join(parts + list(self.other)) or "no visible effect"


def probe(port: int) -> Seen:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", PROBE_PATH, headers={"Host": "cost.local", "User-Agent": "wasm-gitops-cost"})
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        headers = tuple((k.lower(), v) for k, v in response.getheaders())
    finally:
        conn.close()
    request = tuple((name, value) for name, sep, value in (line.partition(": ") for line in body.splitlines()) if sep)
    return Seen(response.status, request, headers)


# Envoy's own per-request values: the second-resolution date, the upstream's time in ms, the UUID
# request id. Probes of different Envoys, taken at different moments, differ in these alone.
_PER_REQUEST = frozenset({"date", "x-envoy-upstream-service-time", "x-request-id"})


def _volatile(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]]) -> set[str]:
    """Headers whose values differ between two identical requests, and Envoy's per-request ones."""
    return {k for k, _ in set(a) ^ set(b)} | _PER_REQUEST


def effect_of(chain: Sequence[Seen], bare: Sequence[Seen]) -> Effect:
    """Compares two probes through the chain with two through the bare listener. Headers whose
    values change from one request to the next on either side are left out: they say nothing
    about the filter."""
    skip_req = _volatile(chain[0].request, chain[1].request) | _volatile(bare[0].request, bare[1].request)
    skip_resp = _volatile(chain[0].response, chain[1].response) | _volatile(bare[0].response, bare[1].response)
    # The probe's body is the echo of the request headers: its length follows what the chain added.
    skip_resp.add("content-length")

    def delta(with_: Sequence[tuple[str, str]], without: Sequence[tuple[str, str]],
              skip: set[str], side: str) -> tuple[tuple[tuple[str, str], ...], list[str]]:
        w = [h for h in with_ if h[0] not in skip]
        o = [h for h in without if h[0] not in skip]
        removed = [h for h in o if h not in w]
        added = [h for h in w if h not in o]
        other = [f"removes or changes {side} header {k}" for k, _ in removed]
        return tuple(added), other

    req_added, req_other = delta(chain[0].request, bare[0].request, skip_req, "request")
    resp_added, resp_other = delta(chain[0].response, bare[0].response, skip_resp, "response")
    other = req_other + resp_other
    if chain[0].status != bare[0].status:
        other.append(f"answers {chain[0].status} instead of {bare[0].status}")
    return Effect(req_added, resp_added, tuple(other))
