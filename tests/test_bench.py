"""`make bench` keeps working: a small run of the real benchmark, checked for what it reports, not how
fast anything was (speed is the benchmark's business, never a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# Above parallel.MIN_ITEMS, so that the runs fork their helpers as a mesh does.
SERVICES = 70


def test_a_small_benchmark_run_reports_every_row_and_writes_nothing_it_should_not(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench.py"), "--sizes", str(SERVICES), "--repeat", "1",
         "--no-kustomize", "--snapshot", "--workdir", str(tmp_path / "work"), "--json", str(results)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(results.read_text(encoding="utf-8"))["sizes"][str(SERVICES)]
    assert set(run["results"]) == {"python", "cli", "validate", "validate_no_envoy", "render_full", "render_nochange", "check",
                                   "check_serial", "render_changed", "copy"}
    for key, result in run["results"].items():
        assert [s["returncode"] for s in result["samples"]] == [0], key
        assert result["samples"][0]["seconds"] > 0 and result["samples"][0]["peak_kib"] > 0, key
    facts = run["facts"]
    configmaps = facts["output_files"] - 4 * SERVICES - 3  # per service 4 files; 2 kustomizations, manifest
    assert 0 < configmaps <= 100  # one per (namespace, filter) in use: 20 namespaces, 5 filters
    assert facts["render_nochange_written"] == [] and facts["check_written"] == []
    assert facts["staging_left_behind"] is False
    # One binary changed: its ConfigMaps, the patch of every service mounting it, and the manifest.
    assert 0 < facts["render_changed_files_touched"][0] < facts["output_files"]
    assert "0 added, 0 changed, 0 removed" in facts["render_nochange_summary"]
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").glob("*/mesh-*"))  # cleaned up
