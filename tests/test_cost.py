"""`wasm-gitops cost`: a tiny real run (Envoy, wrk) on the repository's spec, every figure present and
plausible; the statistics that decide what may be printed; what a chain does, seen from both ends."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import wasmtime
from click.testing import CliRunner
from conftest import REPO, Repo

from renderer.cli import main
from renderer.cost.chains import HEADER_MUTATION, WASM_TYPE, chains_of, header_mutation, with_native, without_wasm
from renderer.cost.load import MIN_REQUESTS, Settings, find_wrk, paced
from renderer.cost.measure import _native_for, _upstream
from renderer.cost.probe import Effect, Seen, effect_of
from renderer.cost.readings import CpuSample, cpu_sample, listener_load_ms, process_cpu_ns, rss_bytes
from renderer.cost.report import SCHEMA_VERSION
from renderer.cost.stats import REASONS, Comparison, compare_difference, compare_ratio, iqr, ratio_of_effects
from renderer.envoy.binary import find_envoy
from renderer.errors import UsageError
from renderer.reporters.cost import _fmt, format_json, format_text

COMPARISONS = ("p50AddedUs", "p99AddedUs", "cpuAddedUsPerRequest", "throughputRatio", "loadAddedMs")


# ---------------------------------------------------------------------------- a tiny real run


@pytest.fixture(scope="module")
def tiny() -> tuple[dict[str, Any], float]:
    began = time.monotonic()
    result = CliRunner().invoke(main, ["cost", "-f", str(REPO / "filters.yaml"), "--rounds", "2", "--seconds", "1",
                                       "--filter", "example-filter", "--json", "details", "productpage"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), time.monotonic() - began


def _assert_summary(summary: dict[str, Any], *, positive: bool = True) -> None:
    assert len(summary["runs"]) >= 2
    assert min(summary["runs"]) <= summary["median"] <= max(summary["runs"])
    assert summary["spread"] >= 0
    if positive:
        assert summary["median"] > 0


def _assert_comparison(c: dict[str, Any], name: str) -> None:
    assert set(c) >= {"value", "effect", "spread", "floor", "resolved"}
    if not c["resolved"]:
        assert c["value"] is None and c["reason"] in REASONS, f"{name}: unresolved without a reason: {c}"
        return
    # A resolved cost is a cost: never zero, never negative, and larger than its spread.
    assert c["effect"] > 0, f"{name}: the chain was reported as free or cheaper: {c}"
    assert c["effect"] > c["spread"], f"{name}: printed although the spread is larger than the effect: {c}"
    if c["floor"] is not None:
        assert c["effect"] > c["floor"], f"{name}: printed although two identical listeners differ as much: {c}"
    if name == "throughputRatio":
        assert 0 < c["value"] < 1, f"{name}: {c}"
    else:
        assert c["value"] > 0, f"{name}: {c}"


def test_every_figure_of_a_tiny_run_is_present_and_plausible(tiny: tuple[dict[str, Any], float]) -> None:
    report, _ = tiny
    jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / "cost-report.schema.json").read_text())).validate(report)
    assert report["schemaVersion"] == SCHEMA_VERSION == 1
    assert report["kind"] == "wasm-gitops-cost"
    m = report["machine"]
    assert m["cores"] == len(os.sched_getaffinity(0)) and m["envoyConcurrency"] == 1
    assert m["envoyVersion"] == find_envoy().version and m["loadGenerator"].startswith("wrk ")
    assert 0 <= report["run"]["stealPercent"] <= 100
    assert report["settings"] == {"rounds": 2, "seconds": 1, "rate": 1000, "connections": 16, "starts": 3}

    assert report["skipped"] == []
    # The filter alone, with its spec configuration, is the chain both services have: measured with them.
    (alone,) = report["filters"]
    assert alone["filter"] == "example-filter" and alone["measuredAs"] == "details"
    by_name = {s["service"]: s for s in report["services"]}
    assert sorted(by_name) == ["details", "productpage"]
    # One chain (the same module and configuration): measured once, reported for both.
    assert {s["measuredAs"] for s in by_name.values()} == {"details"}
    for svc in by_name.values():
        assert svc["filters"] == ["example-filter"]
        assert svc["effect"] == "adds response header resp-header-demo: added by our filter"
        assert svc["native"] == {"filter": "envoy.filters.http.header_mutation",
                                 "does": "adds response header resp-header-demo: added by our filter"}
        assert set(svc["variants"]) == {"none", "wasm", "native", "control"}
        for name, v in svc["variants"].items():
            for figure in ("rps", "p50Us", "p99Us"):
                _assert_summary(v["paced"][figure])
                _assert_summary(v["saturation"][figure])
            _assert_summary(v["saturation"]["cpuUsPerRequest"])
            _assert_summary(v["readyMs"])
            _assert_summary(v["listenerLoadMs"], positive=False)
            # Building the listeners is part of becoming ready.
            assert v["listenerLoadMs"]["median"] < v["readyMs"]["median"], v
            assert v["paced"]["p99Us"]["median"] >= v["paced"]["p50Us"]["median"]
            # Paced: never above the asked rate (wrk waits between a response and the next request),
            # and never so few requests that a p99 means nothing.
            assert MIN_REQUESTS <= min(v["paced"]["rps"]["runs"]) <= max(v["paced"]["rps"]["runs"]) <= 1000 * 1.05
            assert v["memory"]["rssBytes"] > 10 * 2**20 and v["memory"]["allocatedBytes"] > 0
            vms = v["memory"]["wasmVmsActive"]
            # With one worker: at least the main thread's VM and the worker's; none without Wasm.
            assert vms >= 2 if name == "wasm" else vms == 0, (name, v["memory"])
        for side in ("wasm", "nativeCost"):
            for name in COMPARISONS:
                _assert_comparison(svc[side][name], f"{side}.{name}")
        wasm = svc["wasm"]
        # The VMs are resident memory that only the chain has: the chain is never measured as free.
        assert wasm["rssAddedBytes"] > 2**20, wasm
        assert wasm["rssPerWasmVmBytes"] == wasm["rssAddedBytes"] // svc["variants"]["wasm"]["memory"]["wasmVmsActive"]
        # A worker's own VM is a fraction of what the engine and the compiled module cost once.
        assert abs(wasm["rssPerExtraWorkerBytes"]) < wasm["rssAddedBytes"], wasm
        assert svc["nativeCost"]["rssPerExtraWorkerBytes"] is None
        wn = svc["wasmVsNative"]
        _assert_comparison(wn["throughputRatio"], "throughputRatio")
        if wn["cpuAddedRatio"]["resolved"]:
            assert wn["cpuAddedRatio"]["value"] > 0
        else:
            assert not (wasm["cpuAddedUsPerRequest"]["resolved"] and svc["nativeCost"]["cpuAddedUsPerRequest"]["resolved"])


def test_a_tiny_run_runs_every_round_of_every_variant(tiny: tuple[dict[str, Any], float]) -> None:
    report, elapsed = tiny
    # Two rounds of four variants, each paced and saturated: every run is in the report, none skipped,
    # and the run's own clock agrees with the caller's.
    for entry in report["services"]:
        for variant in entry["variants"].values():
            if variant is not None:
                assert len(variant["paced"]["p50Us"]["runs"]) == len(variant["saturation"]["rps"]["runs"]) == 2
    assert 0 < report["run"]["wallSeconds"] <= elapsed + 0.1


def test_the_text_report_names_every_figure(tiny: tuple[dict[str, Any], float]) -> None:
    report, _ = tiny
    text = format_text(report)
    assert text.startswith(f"machine: {report['machine']['cores']} cores")
    assert f"Envoy {report['machine']['envoyVersion']} with --concurrency 1" in text
    for needle in ("CPU steal", "default/details: example-filter",
                   "default/productpage: example-filter: the same chain as details, measured once",
                   "filter example-filter alone: the same chain as details, measured once",
                   "wasm against none:", "latency p50", "Envoy CPU per request", "throughput at saturation",
                   "each on average; each further Envoy worker ", "module load/compile", "native (envoy.filters.http.header_mutation, adds response "
                   "header resp-header-demo: added by our filter) against none:", "wasm against native:"):
        assert needle in text, needle
    rows = [ln.split() for ln in text.splitlines() if re.match(r"  (none|wasm|native|control) +\d", ln)]
    assert [r[0] for r in rows] == ["none", "wasm", "native", "control"] and all(len(r) == 10 for r in rows), rows
    for row in rows:
        assert all(float(x) >= 0 for x in row[1:]), row
    # The JSON is strict (no NaN) and stable.
    assert format_json(report) == format_json(json.loads(format_json(report)))


# ---------------------------------------------------------------------------- what may be printed


def test_a_clear_cost_is_resolved_with_its_spread() -> None:
    c = compare_difference([110, 113, 111, 112, 110], [100, 100, 100, 100, 100])
    assert c.value == c.effect == 11 and c.spread == 2 and c.reason == ""


def test_a_difference_inside_the_noise_is_not_printed() -> None:
    c = compare_difference([100, 130, 90, 125, 95], [105, 95, 120, 100, 110])
    assert c.value is None and abs(c.effect) <= c.spread and c.reason == "noise"
    text = _fmt(c.as_json(), " µs")
    assert text.startswith("not resolved (the spread, ") and "is not smaller than the effect" in text


def test_a_difference_two_identical_listeners_also_show_is_not_printed() -> None:
    wasm, none = [110, 113, 111, 112, 110], [100, 100, 100, 100, 100]
    quiet = compare_difference(wasm, none, ([101, 99, 100, 100, 101], none))
    assert quiet.value == 11 and quiet.floor == pytest.approx(0 + 1)
    # The control Envoy, serving the very same listener, comes out 11 higher: 11 is not a cost.
    biased = compare_difference(wasm, none, ([111, 110, 112, 111, 111], none))
    assert biased.floor == pytest.approx(11 + 0) and biased.value is None and biased.reason == "noise"
    assert "two identical listeners differ by 11.0 µs" in _fmt(biased.as_json(), " µs")
    ratio = compare_ratio([80, 81, 79], [100, 100, 100], ([75, 76, 74], [100, 100, 100]))
    assert ratio.value is None and ratio.floor == pytest.approx(0.25 + 0.01)


def test_a_chain_measured_as_cheaper_is_refused_not_reported_as_free() -> None:
    c = compare_difference([90, 91, 90, 92, 91], [100, 101, 100, 102, 101])
    assert c.effect < 0 and abs(c.effect) > c.spread
    assert c.value is None and c.reason == "negative"
    assert Comparison(0.0, 0.0, None, "").as_json()["resolved"] is False


def test_throughput_ratio_is_a_cost_only_below_one() -> None:
    lower = compare_ratio([800, 810, 790], [1000, 1000, 1000])
    assert lower.value == pytest.approx(0.8) and lower.effect == pytest.approx(0.2)
    higher = compare_ratio([1200, 1210, 1190], [1000, 1000, 1000])
    assert higher.value is None and higher.reason == "negative"
    assert _fmt(lower.as_json(3), " x none", ratio=True).startswith("0.8 x none (-20.0 %")


def test_wasm_over_native_needs_both_costs() -> None:
    wasm = compare_difference([30, 31, 30], [10, 10, 10])
    native = compare_difference([12, 12, 12], [10, 10, 10])
    assert ratio_of_effects(wasm, native).value == pytest.approx(10.0)
    noisy = compare_difference([10, 14, 6], [10, 10, 10])
    both = ratio_of_effects(wasm, noisy)
    assert both.value is None and math.isnan(both.effect)
    assert ratio_of_effects(wasm, noisy).as_json()["value"] is None
    json.dumps(both.as_json(), allow_nan=False)


def test_spread_is_the_interquartile_range() -> None:
    assert iqr([1, 2, 3, 4, 5]) == 2
    assert iqr([1, 100, 2, 3, 4]) == 2  # one wild run does not decide the spread
    assert iqr([7]) == math.inf


def test_settings_refuse_what_cannot_be_measured() -> None:
    for bad, needle in ((Settings(rounds=1), "--rounds"), (Settings(seconds=0), "--seconds"),
                        (Settings(rate=5), "--rate"), (Settings(connections=0), "--connections")):
        with pytest.raises(UsageError, match=needle):
            bad.check()


def test_paced_runs_keep_wrk_pauses_in_whole_milliseconds() -> None:
    assert paced(1000) == (2, 2)
    assert paced(100) == (1, 10)
    connections, pause = paced(20_000)
    assert pause >= 1 and connections * 1000 / pause == pytest.approx(20_000, rel=0.05)


# ---------------------------------------------------------------------------- the machine


def test_listener_build_time_is_read_from_envoys_log() -> None:
    log = ("[2026-12-01 08:58:38.029][1][info][config] [source/server/configuration_impl.cc:138] loading 1 cluster(s)\n"
           "[2026-12-01 08:58:38.030][1][info][config] [source/server/configuration_impl.cc:148] loading 1 listener(s)\n"
           "[2026-12-01 08:58:38.043][1][debug][wasm] [source/extensions/common/wasm/wasm.cc:83] Base Wasm created\n"
           "[2026-12-01 08:58:39.120][1][info][config] [source/server/configuration_impl.cc:164] loading stats "
           "configuration\n")
    assert listener_load_ms(log) == pytest.approx(1090.0)
    assert listener_load_ms(log.replace("loading stats configuration", "something else")) is None


def test_cpu_counters_read_proc() -> None:
    sample = cpu_sample("cpu  100 5 50 800 10 1 2 7 0 0\ncpu0 1 2 3\n")
    assert sample == CpuSample(total=975, steal=7, idle=810)
    live = cpu_sample()
    assert live.total > live.idle >= 0
    before = process_cpu_ns(os.getpid())
    end = time.process_time() + 0.05
    while time.process_time() < end:
        pass
    assert process_cpu_ns(os.getpid()) - before >= 40_000_000
    assert rss_bytes(os.getpid()) > 2**20


def test_a_missing_wrk_is_a_usage_error_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="apt-get install wrk"):
        find_wrk({"PATH": str(tmp_path)})
    result = CliRunner().invoke(main, ["cost", "-f", str(REPO / "filters.yaml")], env={"PATH": str(tmp_path)})
    assert result.exit_code == 2 and "apt-get install wrk" in result.stderr and "Traceback" not in result.output


def test_unknown_service_and_bad_settings_exit_2() -> None:
    spec = str(REPO / "filters.yaml")
    unknown = CliRunner().invoke(main, ["cost", "-f", spec, "reviews"])
    assert unknown.exit_code == 2
    assert "no service 'reviews'" in unknown.stderr and "details, productpage" in unknown.stderr
    no_filter = CliRunner().invoke(main, ["cost", "-f", spec, "--filter", "exmaple-filter"])
    assert no_filter.exit_code == 2 and "no filter 'exmaple-filter'" in no_filter.stderr
    one = CliRunner().invoke(main, ["cost", "-f", spec, "--rounds", "1"])
    assert one.exit_code == 2 and "--rounds must be at least 2" in one.stderr


# ---------------------------------------------------------------------------- what a chain does


def _seen(request: dict[str, str], response: dict[str, str], status: int = 200) -> Seen:
    return Seen(status, tuple(request.items()), tuple(response.items()))


def test_effect_is_what_the_chain_adds_volatile_headers_left_out() -> None:
    bare = [_seen({"x-request-id": "a", "host": "h"}, {"date": "1", "server": "istio-envoy", "content-length": "30"}),
            _seen({"x-request-id": "b", "host": "h"}, {"date": "2", "server": "istio-envoy", "content-length": "30"})]
    # The echoed body grows with the added request header: its length is not an effect of its own.
    chain = [_seen({"x-request-id": "c", "host": "h", "x-tag": "1"},
                   {"date": "3", "server": "istio-envoy", "y": "v", "content-length": "39"}),
             _seen({"x-request-id": "d", "host": "h", "x-tag": "1"},
                   {"date": "4", "server": "istio-envoy", "y": "v", "content-length": "39"})]
    effect = effect_of(chain, bare)
    assert effect == Effect(request_added=(("x-tag", "1"),), response_added=(("y", "v"),))
    assert effect.headers_only
    mutation = header_mutation(effect)["typed_config"]["mutations"]
    assert mutation["request_mutations"][0]["append"]["header"] == {"key": "x-tag", "value": "1"}
    assert mutation["response_mutations"][0]["append"]["header"] == {"key": "y", "value": "v"}


def test_a_chain_that_removes_or_refuses_has_no_native_equivalent() -> None:
    bare = [_seen({"host": "h", "cookie": "c"}, {"server": "istio-envoy"})] * 2
    removes = [_seen({"host": "h"}, {"server": "istio-envoy"})] * 2
    assert effect_of(removes, bare).other == ("removes or changes request header cookie",)
    assert not effect_of(removes, bare).headers_only
    refuses = [_seen({"host": "h", "cookie": "c"}, {"server": "istio-envoy"}, status=403)] * 2
    assert "answers 403 instead of 200" in effect_of(refuses, bare).describe()
    assert not effect_of(bare, bare).headers_only  # no visible effect: nothing to do natively


def test_native_replaces_the_wasm_filters_where_the_first_one_was() -> None:
    wasm = {"name": "w", "typed_config": {"@type": WASM_TYPE}}
    other = {"name": "o", "typed_config": {"@type": "type.googleapis.com/x.Other"}}
    effect = Effect(response_added=(("a", "b"),))
    out = with_native([other, wasm, wasm, other], effect)
    assert [f["name"] for f in out] == ["o", HEADER_MUTATION, "o"]
    assert without_wasm([other, wasm, other]) == [other, other]


def test_every_golden_shape_has_its_wasm_filters_recognised(repo: Repo, tmp_path: Path) -> None:
    """Typed Wasm (1.8+, WasmPlugin), Istio 1.7's TypedStruct and 1.5/1.6's translated Struct: the
    variant without the chain must really be without it."""
    measured = set()
    for case in sorted((Path(__file__).parent / "specs" / "good").glob("*.yaml")):
        repo.write("filters.yaml", case.read_text())
        found, _ = chains_of(repo.spec, [], tmp_path / case.stem)
        for chain in found:
            assert without_wasm(list(chain.http_filters)) == [], (case.name, chain.service, chain.http_filters)
            measured.add(case.stem)
    assert {"basic", "legacy-istio-1.6", "typed-struct-istio-1.7", "wasmplugin"} <= measured


def test_a_service_with_an_oci_filter_is_left_out_and_refused_when_named(repo: Repo, tmp_path: Path) -> None:
    repo.write("filters.yaml", (Path(__file__).parent / "specs" / "good" / "wasmplugin.yaml").read_text())
    chains, skipped = chains_of(repo.spec, [], tmp_path / "modules")
    assert [c.service for c in chains] == ["details"]
    assert sorted(skipped) == ["productpage", "reviews"]
    assert "other-filter is an OCI image that istio-agent pulls" in skipped["reviews"]
    with pytest.raises(UsageError, match="service reviews: other-filter is an OCI image"):
        chains_of(repo.spec, ["reviews"], tmp_path / "modules")
    result = repo.cli("cost", "reviews")
    assert result.exit_code == 2 and "service reviews: other-filter is an OCI image" in result.stderr


def test_a_filter_with_no_visible_effect_is_measured_without_a_native_variant(repo: Repo, tmp_path: Path) -> None:
    """The conftest module does nothing a request can see: Envoy loads it, and the probe says so."""
    chains, skipped = chains_of(repo.spec, ["details"], tmp_path / "modules")
    assert skipped == {}
    assert [c.service for c in chains] == ["details"] and chains[0].filters == ("example-filter",)
    envoy = find_envoy()
    with contextlib.ExitStack() as stack:
        port, _ = stack.enter_context(_upstream(envoy, tmp_path))
        variants = {"none": without_wasm(list(chains[0].http_filters)), "wasm": list(chains[0].http_filters)}
        effect, native = _native_for(chains[0], variants, envoy, port, tmp_path / "probe", stack)
    assert effect.describe() == "no visible effect" and native is None and "native" not in variants


def test_a_filter_adding_request_and_response_headers_gets_a_native_equivalent(repo: Repo, tmp_path: Path) -> None:
    """The ABI 0.1.0 module adds x-abi to the request (seen by the upstream's echo) and x-abi-response
    to the response; header_mutation, probed the same way, does exactly that."""
    module = Path(__file__).parent / "modules" / "abi_010.wat"
    repo.write("filters/abi.wasm", bytes(wasmtime.wat2wasm(module.read_text())))
    repo.write("filters.yaml", textwrap.dedent("""\
        apiVersion: wasm-gitops/v1
        kind: FilterSet
        istio: "1.22"
        filters:
          - {name: abi, wasm: filters/abi.wasm}
        services:
          - {name: details, deployment: details-v1, resources: [apps/details], filters: [abi]}
        """))
    (chain,), _ = chains_of(repo.spec, [], tmp_path / "modules")
    envoy = find_envoy()
    with contextlib.ExitStack() as stack:
        port, _ = stack.enter_context(_upstream(envoy, tmp_path))
        variants = {"none": without_wasm(list(chain.http_filters)), "wasm": list(chain.http_filters)}
        effect, native = _native_for(chain, variants, envoy, port, tmp_path / "probe", stack)
    assert effect == native == Effect(request_added=(("x-abi", "0.1.0"),),
                                           response_added=(("x-abi-response", "0.1.0"),))
    mutations = variants["native"][0]["typed_config"]["mutations"]
    assert [m["append"]["header"]["key"] for m in mutations["request_mutations"]] == ["x-abi"]
    assert [m["append"]["header"]["key"] for m in mutations["response_mutations"]] == ["x-abi-response"]


def test_the_markdown_diff_carries_a_cost_line_per_changed_service(tiny: tuple[dict[str, Any], float],
                                                                   repo: Repo, tmp_path: Path) -> None:
    from conftest import proxy_wasm_module

    from renderer.reporters.cost import cost_line

    report, _ = tiny
    path = tmp_path / "cost.json"
    path.write_text(json.dumps(report))
    assert repo.cli("render").exit_code == 0
    repo.write("filters/example-filter.wasm", proxy_wasm_module("upgraded"))
    result = repo.cli("diff", "--format", "markdown", "--cost", str(path))
    assert result.exit_code == 1, result.output
    machine = report["machine"]
    by_service = {e["service"]: e for e in report["services"]}
    for service in ("details", "productpage"):
        line = (f"- <code>{service}</code>: cost ({machine['cores']} cores, Envoy {machine['envoyVersion']}, "
                f"{machine['loadGenerator']}): {cost_line(by_service[service])}")
        assert line in result.stdout
        # The summary table and the cost lines stay outside every fold.
        assert result.stdout.index(line) < result.stdout.index("<details>")
    for name, unit in (("cpuAddedUsPerRequest", "µs/request"), ("p50AddedUs", "µs")):
        figure = by_service["details"]["wasm"][name]
        shown = f"{figure['value']:+.1f} {unit}" if figure["resolved"] else "not resolved"
        assert shown in cost_line(by_service["details"])
    # A report is input from the pull request: another version or shape is one line, exit 2.
    for broken in ({**report, "schemaVersion": 2}, {**report, "services": [{"service": "x"}]}, "[]"):
        path.write_text(json.dumps(broken) if not isinstance(broken, str) else broken)
        refused = repo.cli("diff", "--format", "markdown", "--cost", str(path))
        assert refused.exit_code == 2, refused.output
        assert refused.output.count("\n") == 1, refused.output
        assert "not a cost report" in refused.output or "schemaVersion 2" in refused.output or \
            "cannot read it as a cost report" in refused.output
    assert repo.cli("diff", "--cost", str(path)).exit_code == 2  # markdown only
