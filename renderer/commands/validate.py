"""`wasm-gitops validate`: the spec's checks and Envoy's load of every filter; writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import core
from ..envoy.load import EnvoyLoad, EnvoyStep
from ..envoy.load import run as load_in_envoy
from ..errors import Finding
from ..spec import LoadedSpec, load_spec


@dataclass(frozen=True)
class Validated:
    spec: LoadedSpec
    envoy: EnvoyLoad | None

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return core.warnings_of(self.spec, self.envoy)


def validate(spec_path: Path, envoy: EnvoyStep = core.ENVOY) -> Validated:
    loaded = load_spec(spec_path)
    return Validated(loaded, load_in_envoy(loaded, envoy))
