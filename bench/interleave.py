"""Compare renderers (one source tree each) on the same mesh, in interleaved runs: A B C A B C ...

Every variant sees the same load: a busy neighbour slows the runs of one round alike, so the ratio of
two variants within a round is steadier than either's time. Prints, per size and command, each
variant's median wall and CPU time and the median of its per-round ratio to the first variant.

    .venv/bin/python bench/interleave.py --variant today=/path/to/old/tree --variant new=. \\
        --sizes 1000,5000 --rounds 15 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import meshgen
from procs import measure

COMMANDS = {
    "render": ["render"],  # from scratch: the output is removed before each run
    "check": ["check"],
    "validate": ["validate"],
}
OUTPUTS = ("base", "overlays", "kustomization.yaml", ".wasm-gitops-manifest.json")


@dataclass(frozen=True)
class Variant:
    name: str
    source: Path  # a directory holding the renderer/ package
    env: dict[str, str]


def parse_variant(text: str) -> Variant:
    """NAME=DIR, or NAME=DIR,VAR=VALUE,... for an environment of its own."""
    name, _, rest = text.partition("=")
    source, *assignments = rest.split(",")
    if not name or not (Path(source) / "renderer" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: want NAME=DIR, DIR holding renderer/")
    env = dict(a.split("=", 1) for a in assignments)
    return Variant(name, Path(source).resolve(), env)


def environment(variant: Variant, cache: Path) -> dict[str, str]:
    # PYTHONPATH ahead of the editable install's finder (which sys.meta_path holds after the path finder).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(variant.source), PYTHONPYCACHEPREFIX=str(cache), **variant.env)
    return env


def clear(root: Path) -> None:
    for name in OUTPUTS:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def run_size(n: int, variants: list[Variant], rounds: int, commands: list[str], work: Path,
             ) -> dict[str, dict[str, list[tuple[float, float]]]]:
    root = work / f"mesh-{n}"
    root.mkdir(parents=True)
    meshgen.generate(root, n)
    envs = {v.name: environment(v, work / "pycache") for v in variants}
    samples: dict[str, dict[str, list[tuple[float, float]]]] = {c: {v.name: [] for v in variants} for c in commands}
    for v in variants:  # untimed: fills the bytecode and page caches, proves each variant runs
        clear(root)
        warm = measure([sys.executable, "-m", "renderer", "render"], root, env=envs[v.name])
        if warm.returncode != 0:
            raise SystemExit(f"{v.name}: render exited {warm.returncode}:\n{warm.stderr.decode()[-2000:]}")
    for r in range(rounds):
        for command in commands:
            for v in variants:
                if command == "render":
                    clear(root)
                s = measure([sys.executable, "-m", "renderer", *COMMANDS[command]], root, env=envs[v.name])
                if s.returncode != 0:
                    raise SystemExit(f"{v.name} {command} exited {s.returncode}:\n{s.stderr.decode()[-2000:]}")
                samples[command][v.name].append((s.seconds, s.cpu_seconds))
        print(f"  {n} services: round {r + 1}/{rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    shutil.rmtree(root)
    return samples


def report(n: int, samples: dict[str, dict[str, list[tuple[float, float]]]], first: str) -> None:
    print(f"\n{n:,} services   median wall / cpu (s)   median per-round ratio to {first}: wall, cpu")
    for command, by_variant in samples.items():
        base = by_variant[first]
        for name, runs in by_variant.items():
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            ratio_w = statistics.median(w / b[0] for (w, _), b in zip(runs, base, strict=True))
            ratio_c = statistics.median(c / b[1] for (_, c), b in zip(runs, base, strict=True))
            print(f"  {command:<9} {name:<10} {wall:7.3f} / {cpu:7.3f}    x{ratio_w:.3f}, x{ratio_c:.3f}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", type=parse_variant, action="append", required=True)
    p.add_argument("--sizes", default="1000")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--commands", default=",".join(COMMANDS))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    commands = args.commands.split(",")
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="wasm-gitops-interleave-") as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            samples = run_size(n, args.variant, args.rounds, commands, Path(tmp))
            report(n, samples, args.variant[0].name)
            results[str(n)] = samples
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
