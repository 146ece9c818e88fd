"""Image references, registry credentials, the registry client, and pulling an image through Istio's rules."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..model import Filter
from .image import ACCEPTED_MANIFESTS, DIGEST, MAX_MANIFEST, Fetched, Image, ImageError, checked_digest, read_layout
from .istio_rules import Verdict, classify

_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_REPO_PATH = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                   r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


# ------------------------------------------------------------------------------------------ references

@dataclass(frozen=True)
class Reference:
    registry: str  # host[:port], as written
    repository: str  # the path inside the registry
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")

    @property
    def plain_http(self) -> bool:
        """Loopback registries speak plain HTTP (as Docker treats 127.0.0.0/8 as insecure by default)."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else \
            self.registry[1:self.registry.index("]")]
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def parse_repository(text: str) -> tuple[str, str] | None:
    """registry.example.com[:port]/path -> (registry, path); None when it is not that."""
    if "/" not in text:
        return None
    host, path = text.split("/", 1)
    if not _HOST.fullmatch(host) or ("." not in host and ":" not in host and host != "localhost"):
        return None
    if not _REPO_PATH.fullmatch(path):
        return None
    return host, path


def parse_reference(text: str) -> Reference:
    raw = text.removeprefix("oci://")
    digest = None
    if "@" in raw:
        raw, digest = raw.split("@", 1)
        if not DIGEST.fullmatch(digest):
            raise ImageError(f"{text}: {digest!r} is not a sha256 digest (sha256: and 64 hex digits)")
    tag = None
    last = raw.rsplit("/", 1)[-1]
    if ":" in last:
        raw, tag = raw.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ImageError(f"{text}: {tag!r} is not a valid tag")
    parsed = parse_repository(raw)
    if parsed is None:
        raise ImageError(f"{text}: not an image reference; write REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST] "
                         "with the registry's host name")
    return Reference(parsed[0], parsed[1], tag, digest)


# ------------------------------------------------------------------------------------------ credentials

def auth_files(env: Mapping[str, str]) -> list[Path]:
    """Where credentials are looked up, first match wins: the containers tools' REGISTRY_AUTH_FILE and
    their per-user auth.json, then Docker's config ($DOCKER_CONFIG/config.json or ~/.docker/config.json)."""
    files: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    if env.get("DOCKER_CONFIG"):
        files.append(Path(env["DOCKER_CONFIG"]) / "config.json")
    elif env.get("HOME"):
        files.append(Path(env["HOME"]) / ".docker" / "config.json")
    return files


@dataclass(frozen=True)
class Credentials:
    basic: str | None  # base64 of user:password, as the config files store it
    source: str | None  # the file it came from, for messages
    helper: str | None = None  # docker-credential-<helper> to ask instead


def credentials_for(registry: str, env: Mapping[str, str]) -> Credentials:
    import base64

    keys = (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")
    for path in auth_files(env):
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: cannot read the registry credentials in it ({e}); fix or remove it") from None
        if not isinstance(config, dict):
            continue
        helper = (config.get("credHelpers") or {}).get(registry)
        if isinstance(helper, str) and helper:
            return Credentials(None, str(path), helper)
        auths = config.get("auths") or {}
        for key in keys:
            entry = auths.get(key) if isinstance(auths, dict) else None
            if isinstance(entry, dict):
                if isinstance(entry.get("auth"), str) and entry["auth"]:
                    return Credentials(entry["auth"], str(path))
                if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
                    pair = f"{entry['username']}:{entry['password']}".encode()
                    return Credentials(base64.b64encode(pair).decode("ascii"), str(path))
        store = config.get("credsStore")
        if isinstance(store, str) and store:
            return Credentials(None, str(path), store)
    return Credentials(None, None)


# ------------------------------------------------------------------------------------------ registry

TIMEOUT = (10, 120)  # connect, read (seconds)

Progress = Callable[[str], None]


def terminal_progress() -> Progress | None:
    """Progress lines on a terminal's stderr, nothing when it is a file or a pipe."""
    if not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


class RegistryClient:
    """The distribution-spec calls wasm-gitops needs, through oras-py (the ORAS project's Python client).

    oras-py does the blob upload protocol, the bearer-token dance and credential helpers. Two of its
    defaults do not fit a command line tool, so they are replaced here: its request wrapper retries a
    failed connection five times with sleeps of up to 83 s (minutes before "registry down" is said), and
    its manifest upload re-serialises the JSON, which changes the bytes and so the digest we locked."""

    def __init__(self, ref: Reference, env: Mapping[str, str], progress: Progress | None = None) -> None:
        import oras.provider
        import requests

        self.ref = ref
        self.progress = progress
        self.requests = requests
        self.credentials = credentials_for(ref.registry, env)
        client = self

        class _Registry(oras.provider.Registry):
            def do_request(self, url: str, method: str = "GET", data: Any = None, headers: dict[str, str] | None = None,
                           json: Any = None, stream: bool = False) -> Any:
                return client.request(self, url, method, data=data, headers=headers, json=json, stream=stream)

        self.oras = _Registry(hostname=ref.registry, insecure=ref.plain_http, auth_backend="token")
        self.container = self.oras.get_container(f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}")
        self.authorization: str | None = None
        self._basic: str | None = self.credentials.basic
        if self._basic is None and self.credentials.helper:
            self._basic = self.oras.auth._get_auth_from_creds_store(self.credentials.helper, ref.registry)
        if self._basic:
            self.oras.auth._basic_auth = self._basic

    @property
    def base(self) -> str:
        return f"{'http' if self.ref.plain_http else 'https'}://{self.ref.registry}/v2/{self.ref.repository}"

    def request(self, registry: Any, url: str, method: str, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers") or {})
        if self.authorization:
            headers["Authorization"] = self.authorization
        try:
            response = registry.session.request(method, url, headers=headers, verify=registry._tls_verify,
                                                timeout=TIMEOUT, allow_redirects=True, **kwargs)
            if response.status_code == 401 and self._authenticate(registry, response):
                headers["Authorization"] = self.authorization or ""
                response = registry.session.request(method, url, headers=headers, verify=registry._tls_verify,
                                                    timeout=TIMEOUT, allow_redirects=True, **kwargs)
        except self.requests.exceptions.SSLError as e:
            raise ImageError(f"{self.ref.registry}: TLS failed ({_short(e)}); check the registry's certificate") from None
        except self.requests.exceptions.ConnectionError as e:
            raise ImageError(f"{self.ref.registry}: cannot connect to the registry ({_short(e)}); check the host "
                             "name in image.repository and that the registry is up") from None
        except self.requests.exceptions.RequestException as e:
            raise ImageError(f"{self.ref.registry}: the request failed ({_short(e)})") from None
        return response

    def _authenticate(self, registry: Any, response: Any) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        if challenge.lower().startswith("basic"):
            if not self._basic:
                return False
            self.authorization = f"Basic {self._basic}"
            return True
        if challenge.lower().startswith("bearer"):
            # With credentials oras exchanges them for a token; without, it asks for an anonymous one
            # (public images on token-based registries).
            headers, changed = registry.auth.authenticate_request(response, {})
            if changed and headers.get("Authorization"):
                self.authorization = headers["Authorization"]
                return True
        return False

    def _refused(self, response: Any, what: str) -> ImageError:
        code = response.status_code
        if code == 401:
            where = (f"the credentials from {self.credentials.source} were refused" if self._basic
                     else "no credentials for it in REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json or "
                     "~/.docker/config.json")
            return ImageError(f"{self.ref.registry}: {what}: 401 Unauthorized ({where}); log in (docker login / "
                              f"podman login {self.ref.registry}) and try again")
        if code == 403:
            return ImageError(f"{self.ref.registry}: {what}: 403 Forbidden; the account may not write "
                              f"{self.ref.repository}")
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(str(e.get("message", e.get("code", ""))) for e in errors if isinstance(e, dict))
        except ValueError:
            pass
        return ImageError(f"{self.ref.registry}: {what}: HTTP {code}{f' ({detail})' if detail else ''}")

    def check(self) -> None:
        """GET /v2/: the distribution spec's version check, so a host that is no registry is said as such."""
        scheme = "http" if self.ref.plain_http else "https"
        response = self.request(self.oras, f"{scheme}://{self.ref.registry}/v2/", "GET", headers={})
        if response.status_code == 401:
            raise self._refused(response, "login")
        if response.status_code != 200 and "Docker-Distribution-Api-Version" not in response.headers:
            raise ImageError(f"{self.ref.registry}: is not an OCI registry (GET /v2/ answered HTTP "
                             f"{response.status_code}); check the host name in image.repository")

    def push(self, image: Image, tag: str) -> str:
        """Push the blobs, then the manifest under `tag`; returns the digest the registry reports."""
        self.check()
        items = sorted(image.blobs.items())
        for n, (digest, data) in enumerate(items, 1):
            head = self.request(self.oras, f"{self.base}/blobs/{digest}", "HEAD", headers={})
            if head.status_code == 200:
                self._say(f"  blob {n}/{len(items)} {digest[:19]} exists")
                continue
            if head.status_code not in (404, 401):
                raise self._refused(head, f"checking blob {digest[:19]}")
            self._say(f"  blob {n}/{len(items)} {digest[:19]} uploading {len(data):,} bytes")
            start = self.request(self.oras, f"{self.base}/blobs/uploads/", "POST",
                                 headers={"Content-Length": "0"})
            if start.status_code != 202:
                raise self._refused(start, "starting a blob upload")
            location = self.oras._get_location(start, self.container)
            sep = "&" if "?" in location else "?"
            done = self.request(self.oras, f"{location}{sep}digest={digest}", "PUT", data=data,
                                headers={"Content-Type": "application/octet-stream",
                                         "Content-Length": str(len(data))})
            if done.status_code != 201:
                raise self._refused(done, f"uploading blob {digest[:19]}")
        self._say(f"  manifest {image.digest[:19]} as {tag}")
        put = self.request(self.oras, f"{self.base}/manifests/{tag}", "PUT", data=image.manifest,
                           headers={"Content-Type": image.media_type})
        if put.status_code != 201:
            raise self._refused(put, "uploading the manifest")
        reported = put.headers.get("Docker-Content-Digest", image.digest)
        if reported != image.digest:
            raise ImageError(f"{self.ref.registry}: stored the manifest as {reported}, not {image.digest}; "
                             "the registry changed it, so the lock would not match what proxies pull")
        return image.digest

    def fetch(self, reference: str) -> Fetched:
        """The manifest named by tag or digest, and a reader of its blobs (digests verified)."""
        self.check()
        response = self.request(self.oras, f"{self.base}/manifests/{reference}", "GET",
                                headers={"Accept": ", ".join(ACCEPTED_MANIFESTS)})
        if response.status_code != 200:
            raise self._refused(response, f"reading the manifest {reference}")
        body = response.content
        if len(body) > MAX_MANIFEST:
            raise ImageError(f"{self.ref.registry}: the manifest is {len(body):,} bytes; refusing it")
        if reference.startswith("sha256:"):
            checked_digest(body, reference, f"{self.ref}")

        def read_blob(digest: str, limit: int) -> bytes:
            if not DIGEST.fullmatch(digest):
                raise ImageError(f"{self.ref}: {digest!r} is not a sha256 digest")
            blob = self.request(self.oras, f"{self.base}/blobs/{digest}", "GET", headers={}, stream=True)
            if blob.status_code != 200:
                raise self._refused(blob, f"reading blob {digest[:19]}")
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in blob.iter_content(chunk_size=1 << 16):
                    size += len(chunk)
                    if size > limit:
                        raise ImageError(f"{self.ref}: blob {digest[:19]} is larger than {limit:,} bytes")
                    chunks.append(chunk)
            except self.requests.exceptions.RequestException as e:
                raise ImageError(f"{self.ref}: reading blob {digest[:19]} failed ({_short(e)})") from None
            return checked_digest(b"".join(chunks), digest, str(self.ref))

        content_type = response.headers.get("Content-Type", "").split(";")[0].strip() or None
        return Fetched(body, read_blob, str(self.ref), content_type)

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(f"{self.ref.name}: {line.strip()}")


def _short(error: Exception) -> str:
    text = str(error)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "Temporary failure in name resolution" in text \
            or "nodename nor servname" in text:
        return "no such host"
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200] if text else type(error).__name__


# ------------------------------------------------------------------------------------------ pulling

@dataclass(frozen=True)
class Pulled:
    """An image read back (from a registry or a layout): its verdict and, if Istio could load it, the module."""

    where: str
    verdict: Verdict

    @property
    def module(self) -> bytes | None:
        return self.verdict.module


def open_image(target: str, env: Mapping[str, str]) -> tuple[Fetched, Callable[[str], Fetched]]:
    """A manifest from `oci://REF` / `REGISTRY/REPO[:TAG|@DIGEST]`, or from an image layout directory."""
    path = Path(target)
    if not target.startswith("oci://") and path.is_dir():
        fetched = read_layout(path)

        def resolve_local(digest: str) -> Fetched:
            return Fetched(fetched.read_blob(digest, MAX_MANIFEST), fetched.read_blob, fetched.where)

        return fetched, resolve_local
    ref = parse_reference(target)
    client = RegistryClient(ref, env)
    fetched = client.fetch(ref.digest or ref.tag or "latest")

    def resolve_remote(digest: str) -> Fetched:
        return client.fetch(digest)

    return fetched, resolve_remote


def pull(target: str, env: Mapping[str, str] | None = None) -> Pulled:
    """Read an image and apply Istio's rules; `.module` holds the bytes istio-agent would hand to Envoy."""
    fetched, resolve = open_image(target, os.environ if env is None else env)
    return Pulled(fetched.where, classify(fetched, resolve))


def pull_pinned(pinned: str, module_sha256: str | None = None, env: Mapping[str, str] | None = None) -> bytes:
    """The module istio-agent (or the kubelet) gets for REPOSITORY@sha256:DIGEST, checked like the lock:
    for running a rendered filter in a real proxy with the very bytes the cluster would load."""
    pulled = pull(pinned if pinned.startswith("oci://") else f"oci://{pinned}", env)
    if pulled.module is None:
        raise ImageError(f"{pinned}: istio-agent cannot load it: {'; '.join(pulled.verdict.reasons)}")
    if module_sha256 is not None and hashlib.sha256(pulled.module).hexdigest() != module_sha256:
        raise ImageError(f"{pinned}: holds a module with sha256 {hashlib.sha256(pulled.module).hexdigest()}, not "
                         f"{module_sha256}")
    return pulled.module


def delivered_module(f: Filter, env: Mapping[str, str] | None = None) -> bytes:
    """The bytes a proxy ends up running for filter `f` as rendered: the file's for a ConfigMap, the pinned
    image's (pulled, the lock's module sha256 checked) for delivery oci and imageVolume."""
    if f.image is None or f.delivery == "configMap":
        return f.binary.data
    return pull_pinned(f.image.pinned, f.binary.sha256, env)
