"""`wasm-gitops cost`: what a service's Wasm chain costs each request, measured in a real Envoy.

Per distinct chain, Envoys on 127.0.0.1 serve the same listener (renderer.envoy.istio's shape for the
service's context): with the rendered chain (`wasm`), with the chain minus its Wasm filters (`none`),
when the chain's only effect on a request is adding headers, with Envoy's own `header_mutation` adding
them instead (`native`), and `none` once more in an Envoy of its own (`control`). All proxy to one
upstream Envoy that answers directly. `wrk` drives each variant at a paced rate (latency) and at
saturation (throughput, and Envoy's CPU time per request), in interleaved rounds; a comparison is
reported only when its effect is larger than its spread over the rounds and than what the control
differs from `none` by. docs/cost.md says why each choice was made and how to read the result.

chains (what is measured) -> measure (the Envoys and the rounds, with load: wrk, readings: /proc and
Envoy, probe: what a chain does) -> report (stats: what may be printed; JSON and text).
"""
