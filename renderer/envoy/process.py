"""Running Envoy: `--mode validate` on a bootstrap, or a server on 127.0.0.1 for the life of a `with`.

A bootstrap is a dict (built as data by the callers) written as JSON, which Envoy reads as YAML 1.2's
JSON subset. Listeners ask for port 0 and the bound ports are read back from the admin interface, so
two runs never fight over a port. The log is Envoy's stderr, read as it is written. Each server has its own dynamic base id (shared memory of the hot
restarter), runs with `--concurrency 1` unless asked for more workers, and is tied to this process: it gets SIGKILL when the process
that started it dies (PR_SET_PDEATHSIG), and is killed at the end of the `with` when it does not stop
on SIGTERM. No Envoy outlives the command that started it.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import termios
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .binary import EnvoyBinary

READY_TIMEOUT = 30.0  # seconds for a server to load its Wasm VMs and report LIVE
VALIDATE_TIMEOUT = 120.0
STOP_GRACE = 5.0


class EnvoyFailed(Exception):
    """Envoy refused a bootstrap or did not come up; `log` is what it printed."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Validation:
    ok: bool
    log: str  # everything Envoy printed (its reason when not ok)
    returncode: int | None = None  # None: it did not answer in time; negative: killed by that signal


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies, however it dies."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _write_bootstrap(bootstrap: dict[str, Any], workdir: Path, name: str) -> Path:
    path = workdir / name
    path.write_text(json.dumps(bootstrap, sort_keys=True, separators=(",", ":")), encoding="utf-8")
    return path


def validate(envoy: EnvoyBinary, bootstrap: dict[str, Any], workdir: Path, *,
             log_level: str = "warning", timeout: float = VALIDATE_TIMEOUT,
             log_format: str | None = None) -> Validation:
    """`envoy --mode validate`: builds every listener, so every Wasm filter's VM is created and its
    plugin configured; Envoy exits non-zero naming what it could not create."""
    config = _write_bootstrap(bootstrap, workdir, "validate.json")
    argv = [os.fspath(envoy.path), "--mode", "validate", "-c", os.fspath(config), "--log-level", log_level,
            "--concurrency", "1", "--disable-hot-restart"]
    if log_format is not None:
        argv += ["--log-format", log_format]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False, preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as e:
        out = e.output.decode("utf-8", "replace") if isinstance(e.output, bytes) else ""
        return Validation(False, out + f"\n(envoy --mode validate did not answer in {timeout:.0f} s)")
    return Validation(done.returncode == 0, done.stdout.decode("utf-8", "replace"), done.returncode)


class EnvoyServer:
    """One Envoy on loopback; use as a context manager."""

    def __init__(self, envoy: EnvoyBinary, bootstrap: dict[str, Any], workdir: Path, *,
                 log_level: str = "warning", component_log_level: Sequence[tuple[str, str]] = (),
                 log_format: str | None = None, file_flush_ms: int | None = None,
                 name: str = "bootstrap.json", concurrency: int = 1) -> None:
        self.envoy = envoy
        self.workdir = workdir
        self.config = _write_bootstrap(bootstrap, workdir, name)
        self._admin_path = workdir / f"{name}.admin-address"
        with contextlib.suppress(FileNotFoundError):
            self._admin_path.unlink()  # a restart must not read the previous server's address
        # The log goes to stderr, read by a thread as it comes: Envoy writes stderr unbuffered, so a
        # line is readable as soon as it is logged (a --log-path file is flushed only on a timer).
        self._argv = [os.fspath(envoy.path), "-c", os.fspath(self.config), "--concurrency", str(concurrency),
                      "--use-dynamic-base-id", "--admin-address-path", os.fspath(self._admin_path),
                      "--log-level", log_level]
        if component_log_level:
            self._argv += ["--component-log-level", ",".join(f"{c}:{lv}" for c, lv in component_log_level)]
        if log_format is not None:
            self._argv += ["--log-format", log_format]
        if file_flush_ms is not None:  # how soon access-log files are written
            self._argv += ["--file-flush-interval-msec", str(file_flush_ms)]
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = bytearray()
        self._log_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.admin = ""
        self.killed = False  # it did not stop on SIGTERM and was killed

    # ---------------------------------------------------------------- life cycle

    def __enter__(self) -> EnvoyServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        # A file left by an earlier server in the same workdir would name a dead admin address.
        self._admin_path.unlink(missing_ok=True)
        self._proc = subprocess.Popen(self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True,
                                      preexec_fn=_die_with_parent)
        assert self._proc.stderr is not None
        os.set_blocking(self._proc.stderr.fileno(), False)
        self._reader = threading.Thread(target=self._read_log, args=(self._proc.stderr,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT
        try:
            while True:
                if self._proc.poll() is not None:
                    raise EnvoyFailed(f"Envoy exited with code {self._proc.returncode} before it was ready",
                                      self._finish_log())
                if not self.admin and self._admin_path.is_file():
                    self.admin = self._admin_path.read_text(encoding="utf-8").strip()
                if self.admin and self._get("/ready", quiet=True) == b"LIVE\n":
                    return
                if time.monotonic() > deadline:
                    raise EnvoyFailed(f"Envoy was not ready after {READY_TIMEOUT:.0f} s", self.log())
                time.sleep(0.01)
        except BaseException:
            self.stop()
            raise

    def _read_log(self, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        while True:
            select.select([fd], [], [])
            # Read under the lock, so sync_log() never sees an empty pipe while bytes are in flight.
            with self._log_lock:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self._log += data

    def sync_log(self, timeout: float = 2.0) -> None:
        """Wait until everything Envoy has written so far is in log()."""
        proc = self._proc
        if proc is None or proc.stderr is None:
            return
        deadline = time.monotonic() + timeout
        buf = array.array("i", [0])
        while time.monotonic() < deadline:
            with self._log_lock:
                try:
                    fcntl.ioctl(proc.stderr.fileno(), termios.FIONREAD, buf)
                except OSError:
                    return
                if buf[0] == 0:
                    return
            time.sleep(0.001)

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM, then SIGKILL when Envoy has not exited after `grace` seconds (STOP_GRACE)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE if grace is None else grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.killed = proc.returncode == -signal.SIGKILL
        if self._reader is not None:
            self._reader.join(5)
        if proc.stderr:
            proc.stderr.close()

    def _finish_log(self) -> str:
        if self._reader is not None and self._proc is not None:
            self._proc.wait()
            self._reader.join(5)
        return self.log()

    @property
    def pid(self) -> int:
        """The Envoy process's id while it runs (for /proc readings: CPU time, resident memory)."""
        if self._proc is None:
            raise RuntimeError("Envoy is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ---------------------------------------------------------------- reading it

    def _get(self, path: str, *, quiet: bool = False) -> bytes | None:
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
                body: bytes = response.read()
                return body
        except (urllib.error.URLError, OSError):
            if quiet:
                return None
            raise

    def admin_json(self, path: str) -> Any:
        body = self._get(path)
        return json.loads(body or b"null")

    def listener_ports(self) -> dict[str, int]:
        """Listener name -> the port Envoy bound for it (listeners ask for port 0)."""
        statuses = self.admin_json("/listeners?format=json").get("listener_statuses", [])
        return {s["name"]: int(s["local_address"]["socket_address"]["port_value"]) for s in statuses}

    def log(self) -> str:
        """What Envoy has logged so far."""
        with self._log_lock:
            return self._log.decode("utf-8", "replace")

    def log_size(self) -> int:
        """A mark in the log: log_since(mark) is what was logged after it (one request's lines)."""
        with self._log_lock:
            return len(self._log)

    def log_since(self, mark: int) -> str:
        with self._log_lock:
            return bytes(self._log[mark:]).decode("utf-8", "replace")

    def post(self, path: str) -> bytes:
        request = urllib.request.Request(f"http://{self.admin}{path}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=5) as response:
            body: bytes = response.read()
            return body


@contextlib.contextmanager
def serving(envoy: EnvoyBinary, bootstrap: dict[str, Any], workdir: Path, **kwargs: Any) -> Iterator[EnvoyServer]:
    server = EnvoyServer(envoy, bootstrap, workdir, **kwargs)
    with server:
        yield server
