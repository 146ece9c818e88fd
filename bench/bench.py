"""Benchmark wasm-gitops at mesh scale: render, check and validate against kubectl kustomize and floors.

A benchmark, not a test: it prints what it measured and whether the targets are met, and exits 0 unless a
command itself failed (or the output of one is unusable). See docs/performance.md.

    .venv/bin/python bench/bench.py                      # 100, 1,000 and 5,000 services (make bench)
    .venv/bin/python bench/bench.py --quick              # 100 and 1,000
    .venv/bin/python bench/bench.py --sizes 1000 --json results.json
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script (make bench): the helpers sit next to it, not in an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import meshgen
import yaml
from procs import MeasureError, Sample, measure

REPO = Path(__file__).resolve().parent.parent
ALL_SIZES = (100, 1_000, 5_000)
QUICK_SIZES = (100, 1_000)
TARGET_SIZE = 1_000
GROWTH_FROM, GROWTH_TO = 1_000, 5_000
# verify sends a request through every service's chain: measured at this size only.
VERIFY_SIZE = 100
VERIFY_SPEC = "filters.verify.yaml"
# kubectl kustomize of this layout takes tens of seconds; past this one run is the measurement,
# because three would dominate the whole benchmark and its spread is small next to a 20x target.
KUSTOMIZE_SINGLE_RUN_AFTER = 20.0
# "Roughly linear": 5x the services may cost at most this much more than 5x.
LINEAR_SLACK = 1.2

OUTPUT_ENTRIES = ("base", "overlays", "kustomization.yaml", ".wasm-gitops-manifest.json")
STAGING = ".wasm-gitops.tmp"

# Rows of the table, in order: floors first, then what the renderer costs, then the consumer.
ROWS = (
    ("python", "python -c pass (start-up floor)"),
    ("cli", "wasm-gitops --help (CLI import)"),
    ("copy", "cp -r output (copy floor)"),
    ("validate", "validate"),
    ("render_full", "render (from scratch)"),
    ("render_nochange", "render (nothing changed)"),
    ("render_changed", "render (1 binary changed)"),
    ("check", "check"),
    ("check_serial", "check, one process (JOBS=1)"),
    ("verify", "verify, 1 test per service (Envoy)"),
    ("kustomize", "kubectl kustomize"),
)
RENDERER_ROWS = ("validate", "render_full", "render_nochange", "render_changed", "check", "check_serial")


class CommandFailed(Exception):
    pass


@dataclass
class Result:
    """All samples of one command at one size."""

    samples: list[Sample] = field(default_factory=list)
    note: str = ""

    @property
    def seconds(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(s.cpu_seconds for s in self.samples)

    @property
    def peak_mib(self) -> float:
        # The largest peak of the runs, not the median: a memory target is about the worst case.
        return max(s.peak_mib for s in self.samples)

    def as_dict(self) -> dict[str, Any]:
        return {
            "median_seconds": round(self.seconds, 4),
            "median_cpu_seconds": round(self.cpu_seconds, 4),
            "peak_mib": round(self.peak_mib, 1),
            "runs": len(self.samples),
            "samples": [{"seconds": round(s.seconds, 4), "cpu_seconds": round(s.cpu_seconds, 4), "peak_kib": s.peak_kib, "floor_kib": s.floor_kib,
                         "returncode": s.returncode}
                        for s in self.samples],
            "note": self.note,
        }


@dataclass
class SizeRun:
    services: int
    results: dict[str, Result] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)  # file counts, rewritten files, summaries
    error: str | None = None


# ------------------------------------------------------------------------------------- tree state

Snapshot = dict[str, tuple[int, int, int, int]]


def snapshot(root: Path) -> Snapshot:
    """(inode, mtime, ctime, size) of every file render owns. A rewrite in place moves mtime; the
    renderer's atomic write (stage, then rename) gives a new inode; either counts as writing."""
    snap: Snapshot = {}

    def walk(path: Path) -> None:
        with os.scandir(path) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path))
                else:
                    st = entry.stat(follow_symlinks=False)
                    snap[os.path.relpath(entry.path, root)] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns,
                                                               st.st_size)

    for name in OUTPUT_ENTRIES:
        p = root / name
        if p.is_dir():
            walk(p)
        elif p.exists():
            st = p.stat()
            snap[name] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    return snap


def touched(before: Snapshot, after: Snapshot) -> list[str]:
    """Files written, created or removed between two snapshots."""
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def clear_output(root: Path) -> None:
    for name in (*OUTPUT_ENTRIES, STAGING):
        p = root / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ------------------------------------------------------------------------------------- running

@dataclass(frozen=True)
class Renderer:
    """Which wasm-gitops runs: its command line, environment and source package."""

    cmd: list[str]
    pkg: Path
    env: dict[str, str] | None = None


def bytecode_env(workdir: Path) -> dict[str, str]:
    """The environment of every measured Python process: bytecode cached, as after `pip install`.

    An installed wheel gets its .pyc files at install time; an editable install writes them on first
    import, unless PYTHONDONTWRITEBYTECODE is set (it is on some machines, this one included), and then
    every run recompiles the renderer's sources (~0.1 s). The cache goes to a directory of the run's
    own (PYTHONPYCACHEPREFIX), never into the repository, and a warm-up run fills it before timing."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
    return env


def installed_renderer(workdir: Path) -> Renderer:
    # The console script next to this interpreter (make bench runs .venv/bin/python): what users run.
    script = Path(sys.executable).parent / "wasm-gitops"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "renderer"]
    spec = importlib.util.find_spec("renderer")
    pkg = Path(spec.origin).parent if spec and spec.origin else REPO / "renderer"
    return Renderer(cmd, pkg, bytecode_env(workdir))


def snapshot_renderer(workdir: Path) -> Renderer:
    """The renderer as a user has it after `pip install`: a copy of its sources taken at the start, in
    a virtual environment of its own, run as `python -m renderer`.

    Two reasons. The package here is installed editable and may be edited while a long run goes on;
    and an editable install adds an import hook to every interpreter start (setuptools' finder, ~25 ms
    of imports) that no installed wheel has. The environment's site-packages holds only the copy and a
    .pth line naming the project's site-packages, for the dependencies (a path line: the .pth files
    there, the editable hook among them, are not run)."""
    venv = workdir / "renderer-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # symlinks=False: renderer/schemas links to ../schemas, which the copy must hold as files.
    shutil.copytree(installed_renderer(workdir).pkg, site / "renderer", symlinks=False,
                    ignore=shutil.ignore_patterns("__pycache__"))
    deps = sysconfig.get_paths()["purelib"]
    (site / "wasm-gitops-deps.pth").write_text(deps + "\n", encoding="utf-8")
    return Renderer([str(python), "-m", "renderer"], site / "renderer", bytecode_env(workdir))


def run(cmd: list[str], cwd: Path, *, expect: int | None = 0, stdout_path: Path | None = None,
        env: dict[str, str] | None = None) -> Sample:
    try:
        sample = measure(cmd, cwd, stdout_path=stdout_path, env=env)
    except MeasureError as e:
        raise CommandFailed(str(e)) from None
    if expect is not None and sample.returncode != expect:
        tail = sample.stderr.decode("utf-8", "replace").strip().splitlines()[-10:]
        raise CommandFailed(f"{' '.join(cmd)} (in {cwd}) exited {sample.returncode}, expected {expect}:\n    "
                            + "\n    ".join(tail))
    return sample


def last_line(sample: Sample) -> str:
    lines = sample.stdout.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def say(text: str) -> None:
    print(text, flush=True)


def bench_size(n: int, workdir: Path, args: argparse.Namespace, renderer: Renderer) -> SizeRun:
    run_ = SizeRun(n)
    run_.facts["renderer"] = renderer_fingerprint(renderer.pkg)
    root = workdir / f"mesh-{n}"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    meshgen.generate(root, n)
    # Other work on the machine inflates wall time (cpu time much less): keep the load with the numbers.
    run_.facts["load_average"] = [round(x, 2) for x in os.getloadavg()]
    steal_before = steal_seconds()
    say(f"\n== {n:,} services: generated in {time.perf_counter() - t0:.1f}s at {root}, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    wg = renderer.cmd
    reps = args.repeat
    res = run_.results

    def timed(key: str, cmd: list[str], **kw: Any) -> Sample:
        s = run(cmd, root, **kw)
        res.setdefault(key, Result()).samples.append(s)
        return s

    def progress(key: str) -> None:
        r = res[key]
        say(f"  {dict(ROWS)[key]:<36} {r.seconds:8.3f} s {r.peak_mib:8.1f} MiB  (cpu {r.cpu_seconds:.3f} s, "
            f"{len(r.samples)} runs)")

    try:
        # Warm-up, not timed: fills the bytecode cache (bytecode_env) and the page cache.
        run([*wg, "render"], root, env=renderer.env)
        run([*wg, "--version"], root, env=renderer.env)
        clear_output(root)
        for _ in range(reps):
            timed("python", [sys.executable, "-c", "pass"], env=renderer.env)
        progress("python")
        for _ in range(reps):
            # --help, not --version: --version also runs `envoy --version` to name the Envoy.
            timed("cli", [*wg, "--help"], env=renderer.env)
        progress("cli")

        for _ in range(reps):
            timed("validate", [*wg, "validate"], env=renderer.env)
        progress("validate")

        for _ in range(reps):
            clear_output(root)
            s = timed("render_full", [*wg, "render"], env=renderer.env)
        run_.facts["render_full_summary"] = last_line(s)
        run_.facts["output_files"] = len(snapshot(root))
        progress("render_full")

        # Nothing changed: the renderer promises to leave every file alone (mtime and inode).
        written: list[str] = []
        for _ in range(reps):
            before = snapshot(root)
            s = timed("render_nochange", [*wg, "render"], env=renderer.env)
            written += touched(before, snapshot(root))
        run_.facts["render_nochange_summary"] = last_line(s)
        run_.facts["render_nochange_written"] = sorted(set(written))
        run_.facts["staging_left_behind"] = (root / STAGING).exists()
        progress("render_nochange")

        written = []
        for _ in range(reps):
            before = snapshot(root)
            timed("check", [*wg, "check"], env=renderer.env)  # exit 0: the tree was just rendered
            written += touched(before, snapshot(root))
        run_.facts["check_written"] = sorted(set(written))
        progress("check")

        # The same check in one process (parallel.py forks a second one for the per-service work):
        # what the second core buys, and what a one-core machine gets.
        serial_env = dict(renderer.env or os.environ, WASM_GITOPS_JOBS="1")
        for _ in range(reps):
            timed("check_serial", [*wg, "check"], env=serial_env)
        progress("check_serial")

        if n == VERIFY_SIZE:
            # The mesh's spec with one test per service, written as JSON (which YAML reads as is).
            spec = yaml.safe_load((root / "filters.yaml").read_text(encoding="utf-8"))
            for service in spec["services"]:
                service["tests"] = [{"name": "through the chain", "expect": {"status": 200}}]
            (root / VERIFY_SPEC).write_text(json.dumps(spec), encoding="utf-8")
            for _ in range(reps):
                s = timed("verify", [*wg, "verify", "-f", VERIFY_SPEC], env=renderer.env)
            run_.facts["verify_summary"] = last_line(s)
            progress("verify")

        # One filter gets new bytes (same size) before each run: its ConfigMaps are renamed, so every
        # Deployment patch that mounts it changes too. Variants 1, 2, 3...: each run sees a real change.
        counts = []
        for k in range(reps):
            meshgen.wasm_path(root, 0).write_bytes(meshgen.wasm_module(0, variant=k + 1))
            before = snapshot(root)
            s = timed("render_changed", [*wg, "render"], env=renderer.env)
            counts.append(len(touched(before, snapshot(root))))
        run_.facts["render_changed_summary"] = last_line(s)
        run_.facts["render_changed_files_touched"] = counts
        progress("render_changed")

        for k in range(reps):
            dest = workdir / f"copy-{n}-{k}"
            dest.mkdir()
            timed("copy", ["cp", "-r", "base", "overlays", "kustomization.yaml", str(dest)])
            shutil.rmtree(dest)
        progress("copy")

        kubectl = shutil.which("kubectl")
        if args.no_kustomize:
            run_.facts["kustomize_skipped"] = "--no-kustomize"
        elif kubectl is None:
            run_.facts["kustomize_skipped"] = "kubectl not found"
        elif n > TARGET_SIZE and not args.kustomize_all:
            run_.facts["kustomize_skipped"] = f"above {TARGET_SIZE:,} services (use --kustomize-all)"
        else:
            out = workdir / f"kustomize-{n}.yaml"
            for k in range(reps):
                s = timed("kustomize", [kubectl, "kustomize", "."], stdout_path=out)
                if k == 0:
                    # One object per service's Deployment, Service and 2 EnvoyFilters, plus the
                    # ConfigMaps: a build that silently dropped overlays would look fast.
                    with out.open("rb") as fh:
                        run_.facts["kustomize_objects"] = 1 + sum(line == b"---\n" for line in fh)
                    run_.facts["kustomize_bytes"] = out.stat().st_size
                if s.seconds > KUSTOMIZE_SINGLE_RUN_AFTER:
                    res["kustomize"].note = (f"{len(res['kustomize'].samples)} run(s): each over "
                                             f"{KUSTOMIZE_SINGLE_RUN_AFTER:.0f}s")
                    break
            out.unlink()
            progress("kustomize")
    except CommandFailed as e:
        run_.error = str(e)
        say(f"  FAILED: {e}")
    finally:
        steal_after = steal_seconds()
        if steal_before is not None and steal_after is not None:
            # On a VM, time the host gave this machine's vCPUs to someone else: wall time the
            # commands lost that neither they nor the load average show.
            run_.facts["cpu_steal_seconds"] = round(steal_after - steal_before, 2)
            say(f"  CPU time stolen by the host while measuring: {steal_after - steal_before:.2f} s")
        if renderer_fingerprint(renderer.pkg) != run_.facts["renderer"]:
            run_.facts["renderer_changed_during_run"] = True
            say(f"  WARNING: renderer/ changed while {n:,} services were measured; these numbers mix versions")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return run_


# ------------------------------------------------------------------------------------- report

def fmt_cell(r: Result | None) -> str:
    if r is None or not r.samples:
        return "-"
    return f"{r.seconds:7.3f} s {r.peak_mib:6.0f} MiB" + ("*" if len(r.samples) == 1 else "")


def print_table(runs: list[SizeRun]) -> None:
    width = 36
    say("\n" + "command".ljust(width) + "".join(f"{r.services:>22,}" for r in runs))
    for key, label in ROWS:
        say(label.ljust(width) + "".join(f"{fmt_cell(r.results.get(key)):>22}" for r in runs))
    floors = [s.floor_kib for r in runs for res in r.results.values() for s in res.samples]
    floor = f"; no peak is reported below {max(floors) / 1024:.0f} MiB, the reaper's own RSS" if floors else ""
    say(f"(median wall time of the runs, largest peak RSS; * = a single run{floor})")


def ratios(run_: SizeRun) -> dict[str, float]:
    res = run_.results
    out: dict[str, float] = {}
    full = res.get("render_full")
    if full and res.get("kustomize"):
        out["kustomize_over_render"] = res["kustomize"].seconds / full.seconds
    if full and res.get("copy"):
        out["render_over_copy"] = full.seconds / res["copy"].seconds
    if full and res.get("python"):
        out["render_over_startup"] = full.seconds / res["python"].seconds
    return out


def comparable(a: SizeRun, b: SizeRun) -> bool:
    same = a.facts.get("renderer") == b.facts.get("renderer")
    return same and not a.facts.get("renderer_changed_during_run") and not b.facts.get("renderer_changed_during_run")


def growth(runs: dict[int, SizeRun]) -> dict[str, dict[str, float]]:
    a, b = runs.get(GROWTH_FROM), runs.get(GROWTH_TO)
    if not a or not b or not comparable(a, b):
        return {}
    out = {}
    for key in RENDERER_ROWS:
        ra, rb = a.results.get(key), b.results.get(key)
        if ra and rb:
            out[key] = {"time_ratio": rb.seconds / ra.seconds, "memory_ratio": rb.peak_mib / ra.peak_mib}
    return out


def targets(runs: dict[int, SizeRun], grow: dict[str, dict[str, float]]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []

    def add(name: str, ok: bool | None, detail: str) -> None:
        status = "n/a" if ok is None else ("PASS" if ok else "MISS")
        found.append({"target": name, "status": status, "detail": detail})

    v = runs.get(VERIFY_SIZE)
    if v is not None and "verify" in v.results:
        secs = v.results["verify"].seconds
        add(f"verify < 10 s at {VERIFY_SIZE:,} services, one test each", secs < 10.0,
            f"{secs:.3f} s ({v.facts.get('verify_summary', '')})")
    t = runs.get(TARGET_SIZE)
    at = f"at {TARGET_SIZE:,} services"
    if t is None or "render_full" not in t.results:
        add(f"targets {at}", None, f"{TARGET_SIZE:,} services not measured")
    else:
        res = t.results
        full = res["render_full"].seconds
        floor = f" (copying the output alone: {res['copy'].seconds:.3f} s)" if "copy" in res else ""
        add(f"full render < 1 s {at}", full < 1.0, f"{full:.3f} s{floor}")
        if "kustomize" in res:
            speedup = res["kustomize"].seconds / full
            add(f"full render >= 20x faster than kubectl kustomize {at}", speedup >= 20,
                f"{speedup:.1f}x ({res['kustomize'].seconds:.2f} s vs {full:.3f} s)")
        else:
            add(f"full render >= 20x faster than kubectl kustomize {at}", None,
                t.facts.get("kustomize_skipped", "not measured"))
        for key, label in (("render_nochange", "no-change render"), ("check", "check")):
            if key in res:
                secs = res[key].seconds
                add(f"{label} < 1 s {at}", secs < 1.0, f"{secs:.3f} s")
                wrote = t.facts.get(f"{key}_written", [])
                add(f"{label} writes no file {at}", not wrote,
                    "none" if not wrote else f"{len(wrote)} files, e.g. {', '.join(wrote[:3])}")
        peaks = {k: res[k].peak_mib for k in RENDERER_ROWS if k in res}
        worst = max(peaks, key=lambda k: peaks[k])
        add(f"peak memory < 200 MiB {at}", peaks[worst] < 200,
            f"largest {peaks[worst]:.0f} MiB ({dict(ROWS)[worst]})")
    if grow:
        limit = (GROWTH_TO / GROWTH_FROM) * LINEAR_SLACK
        bad = [f"{dict(ROWS)[k]} x{g['time_ratio']:.2f} time, x{g['memory_ratio']:.2f} memory"
               for k, g in grow.items() if g["time_ratio"] > limit or g["memory_ratio"] > limit]
        full_g = grow.get("render_full", {})
        add(f"growth {GROWTH_FROM:,} -> {GROWTH_TO:,} roughly linear (<= x{limit:.1f})", not bad,
            "; ".join(bad) if bad else (f"full render x{full_g.get('time_ratio', 0):.2f} time, "
                                        f"x{full_g.get('memory_ratio', 0):.2f} memory"))
    elif GROWTH_FROM in runs and GROWTH_TO in runs:
        add(f"growth {GROWTH_FROM:,} -> {GROWTH_TO:,} roughly linear", None,
            "renderer/ changed during the run: the two sizes measured different code")
    else:
        add(f"growth {GROWTH_FROM:,} -> {GROWTH_TO:,} roughly linear", None,
            f"needs both {GROWTH_FROM:,} and {GROWTH_TO:,} services (not --quick)")
    return found


def steal_seconds() -> float | None:
    """Total CPU steal time of this machine so far (Linux /proc/stat), or None where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def renderer_fingerprint(pkg: Path) -> str:
    """A hash of the renderer's sources. The package is installed editable and is edited while the
    benchmark runs; sizes measured on different code must not be compared as if they were one."""
    h = hashlib.sha256()
    for path in sorted([*pkg.rglob("*.py"), *(pkg / "schemas").glob("*.json")]):
        if "__pycache__" not in path.parts:
            h.update(path.relative_to(pkg).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "renderer"], cwd=REPO, check=False,
                           capture_output=True, text=True).stdout.strip()
    return rev + (" (renderer/ has uncommitted changes)" if dirty else "")


def kubectl_version() -> str:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return "not found"
    out = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True,
                         check=False).stdout
    return "; ".join(line.strip() for line in out.splitlines() if line.strip())


def filesystem(path: Path) -> str:
    # fsync cost differs by orders of magnitude between tmpfs and a disk: record where we wrote.
    best = ("?", "")
    real = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                mnt, fstype = parts[1], parts[2]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[1]):
                    best = (fstype, mnt)
    except OSError:
        pass
    return best[0]


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(x.replace("_", "")) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes numbers separated by commas, not {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("--sizes needs at least one positive number")
    return sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help="numbers of services, comma-separated (default 100,1000,5000)")
    p.add_argument("--quick", action="store_true", help="100 and 1000 services only")
    p.add_argument("--repeat", type=int, default=3, help="runs per command; the median is reported (3)")
    p.add_argument("--workdir", type=Path, default=None, help="where to generate meshes (default: a new /tmp dir)")
    p.add_argument("--keep", action="store_true", help="keep the generated meshes and their output")
    p.add_argument("--kustomize-all", action="store_true",
                   help=f"also run kubectl kustomize above {TARGET_SIZE:,} services")
    p.add_argument("--no-kustomize", action="store_true", help="skip kubectl kustomize entirely")
    p.add_argument("--snapshot", action="store_true",
                   help="measure a copy of renderer/ taken at the start, not the live (editable) package")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also save the results as JSON")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    sizes = args.sizes or (QUICK_SIZES if args.quick else ALL_SIZES)

    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="wasm-gitops-bench-", dir=args.workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="wasm-gitops-bench-"))
    renderer = snapshot_renderer(workdir) if args.snapshot else installed_renderer(workdir)
    meta = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "renderer": renderer_fingerprint(renderer.pkg),
        "renderer_command": " ".join(renderer.cmd),
        "snapshot": args.snapshot,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "kubectl": kubectl_version(),
        "workdir": str(workdir),
        "filesystem": filesystem(workdir),
        "repeat": args.repeat,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "mesh": {"namespaces": meshgen.NAMESPACES, "filters": meshgen.FILTERS,
                 "filters_per_service": meshgen.FILTERS_PER_SERVICE, "wasm_bytes": meshgen.WASM_SIZE},
    }
    say(f"wasm-gitops benchmark, {meta['date']}, commit {meta['commit']} (renderer {meta['renderer']}), "
        f"{meta['cpus']} CPUs, "
        f"Python {meta['python']}, {meta['filesystem']} at {workdir}")
    say(f"kubectl: {meta['kubectl']}")
    say(f"measuring: {meta['renderer_command']}; bytecode cached under {workdir / 'pycache'}")

    runs: dict[int, SizeRun] = {}
    try:
        for n in sizes:
            runs[n] = bench_size(n, workdir, args, renderer)
    finally:
        if args.keep:
            say(f"kept the meshes and their output under {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    ordered = [runs[n] for n in sizes]
    print_table(ordered)
    for r in ordered:
        note = r.results.get("kustomize", Result()).note
        if note:
            say(f"kubectl kustomize at {r.services:,}: {note}")
        if "kustomize_skipped" in r.facts:
            say(f"kubectl kustomize at {r.services:,}: skipped, {r.facts['kustomize_skipped']}")

    say("\nratios")
    all_ratios = {}
    for r in ordered:
        rt = ratios(r)
        all_ratios[r.services] = rt
        parts = []
        if "kustomize_over_render" in rt:
            parts.append(f"kubectl kustomize / render = {rt['kustomize_over_render']:.1f}x")
        if "render_over_copy" in rt:
            parts.append(f"render / copy floor = {rt['render_over_copy']:.1f}x")
        if "render_over_startup" in rt:
            parts.append(f"render / python start-up = {rt['render_over_startup']:.1f}x")
        say(f"  {r.services:>6,} services: " + ("; ".join(parts) or "-"))

    say("\nfacts")
    for r in ordered:
        f = r.facts
        say(f"  {r.services:>6,} services: renderer {f.get('renderer', '?')}; {f.get('output_files', '?')} output files; "
            f"no-change render wrote {len(f.get('render_nochange_written', []))}, check wrote "
            f"{len(f.get('check_written', []))}; 1 binary changed -> files touched per run "
            f"{f.get('render_changed_files_touched', '?')}"
            + (f"; kustomize built {f['kustomize_objects']:,} objects, {f['kustomize_bytes'] / 1e6:.0f} MB"
               if "kustomize_objects" in f else ""))
        if f.get("staging_left_behind"):
            say(f"  {r.services:>6,} services: {STAGING}/ was left behind by a no-change render")

    grow = growth(runs)
    if grow:
        say(f"\ngrowth {GROWTH_FROM:,} -> {GROWTH_TO:,} services (linear = x{GROWTH_TO / GROWTH_FROM:.0f})")
        for key, g in grow.items():
            say(f"  {dict(ROWS)[key]:<36} time x{g['time_ratio']:.2f}   memory x{g['memory_ratio']:.2f}")

    found = targets(runs, grow)
    say("\ntargets")
    for t in found:
        say(f"  {t['status']:<5} {t['target']}: {t['detail']}")

    failed = [r for r in ordered if r.error]
    for r in failed:
        say(f"\nFAILED at {r.services:,} services: {r.error}")

    if args.json:
        doc = {
            "meta": meta,
            "sizes": {str(r.services): {"results": {k: v.as_dict() for k, v in r.results.items()},
                                        "facts": r.facts, "error": r.error} for r in ordered},
            "ratios": {str(k): v for k, v in all_ratios.items()},
            "growth": grow,
            "targets": found,
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        say(f"\nresults saved to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
