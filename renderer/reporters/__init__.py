"""Every command's output, chosen by name: a table of reporters per result kind (base.REPORTERS).

Kinds: findings (a spec's problems and warnings), problems (an invalid spec, in a command's --format),
drift (check), review (diff), verify, module / image / inspect (inspect), cost. A new format is one
function decorated with `@reporter(kind, name)`; each kind's module is imported when first used.
"""

from __future__ import annotations

from .base import AS_GIVEN, REPORTERS, SCHEMA_VERSION, Locator, document, formats, report, reporter

__all__ = ["AS_GIVEN", "REPORTERS", "SCHEMA_VERSION", "Locator", "document", "formats", "report", "reporter"]
