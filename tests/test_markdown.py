"""`wasm-gitops diff --format markdown`: the pull request comment, within GitHub's size limit, rendered
by a GitHub-flavoured markdown renderer (cmark-gfm) and looked at in a real browser (headless Chromium)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import Repo, proxy_wasm_module

LIMIT = 65_536  # GitHub's comment body limit, in characters
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: apt-get install cmark-gfm chromium)")
    return path


def mesh(repo: Repo, services: int) -> None:
    """A mesh of `services` services in five namespaces, one filter each, rendered."""
    repo.root.mkdir(parents=True, exist_ok=True)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example"))
    lines = ["apiVersion: wasm-gitops/v1", "kind: FilterSet", 'istio: "1.22"', "filters:",
             "  - {name: example-filter, wasm: filters/example-filter.wasm}", "services:"]
    for i in range(services):
        repo.app(f"s{i}", f"s{i}-v1", f"s{i}", namespace=f"ns{i % 5}")
        lines.append(f"  - {{name: s{i}, namespace: ns{i % 5}, deployment: s{i}-v1, resources: [apps/s{i}], "
                     "filters: [example-filter]}")
    repo.write("filters.yaml", "\n".join(lines) + "\n")
    result = repo.cli("render")
    assert result.exit_code == 0, result.output


def balanced(part: str) -> None:
    """Nothing cut in the middle: every fold closed, every fence closed, the marker first."""
    assert part.startswith("<!-- wasm-gitops diff part ")
    assert part.count("<details>") == part.count("</details>")
    assert len(re.findall(r"^```", part, re.MULTILINE)) % 2 == 0
    depth = 0
    for tag in re.findall(r"</?details>", part):
        depth += 1 if tag == "<details>" else -1
        assert depth in (0, 1), "folds never nest and never close twice"


def headers(text: str) -> list[str]:
    return re.findall(r"^\*\*(?:&#126;|[+-]) \w+\*\* <code>[^<]+</code>", text, re.MULTILINE)


def test_a_filter_upgrade_on_a_1000_service_mesh_splits_cleanly(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "mesh")
    mesh(repo, 1000)
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v2"))
    out = tmp_path / "comment"
    result = repo.cli("diff", "--format", "markdown", "--split", str(out))
    assert result.exit_code == 1, result.output
    files = sorted(out.iterdir(), key=lambda p: int(p.name.split("-")[1]))
    total = len(files)
    assert total > 1 and [p.name for p in files] == [f"part-{n}-of-{total}.md" for n in range(1, total + 1)]
    assert result.stdout.splitlines() == [str(p) for p in files]
    parts = [p.read_text(encoding="utf-8") for p in files]
    for number, part in enumerate(parts, 1):
        assert len(part) <= LIMIT, (number, len(part))
        balanced(part)
        assert f"## wasm-gitops diff (part {number} of {total})" in part
    # The summary table once, in the first part, outside any fold.
    assert parts[0].index("| what | objects |") < parts[0].index("<details>")
    assert all("| what | objects |" not in p for p in parts[1:])
    assert "| workloads whose pods roll (1,000) |" in parts[0] and "and 990 more" in parts[0]
    # Every object exactly once across the parts: 1,000 Deployments, the new and the old ConfigMap per namespace.
    seen = [h for p in parts for h in headers(p)]
    assert len(seen) == len(set(seen)) == 1000 + 2 * 5
    assert sum("Deployment" in h for h in seen) == 1000
    # Every later part opens with a fold of its own right after its title: nothing dangles.
    for part in parts[1:]:
        body = [line for line in part.splitlines()[2:] if line.strip()]
        assert body[0] == "<details>", body[:2]

    # Without --split: one comment within the limit, cut between objects, saying what it left out.
    single = repo.cli("diff", "--format", "markdown").stdout
    assert len(single) <= LIMIT
    balanced(single)
    shown = len(headers(single))
    left = re.search(r"\*\*([\d,]+) more objects left out\*\*", single)
    assert left is not None and shown + int(left.group(1).replace(",", "")) == 1010
    assert "post the comment in parts with <code>--split</code>" in single


def test_split_never_writes_over_files(tmp_path: Path, repo: Repo) -> None:
    assert repo.cli("render").exit_code == 0
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.md").write_text("mine")
    result = repo.cli("diff", "--format", "markdown", "--split", str(taken))
    assert result.exit_code == 2 and "not empty" in result.output
    assert [p.name for p in taken.iterdir()] == ["notes.md"]
    assert repo.cli("diff", "--split", str(tmp_path / "x")).exit_code == 2  # markdown only


class _Dom(HTMLParser):
    """What Chromium's DOM holds: tag counts, and the page's own layout verdicts (data-* on body)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.body: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "body":
            self.body = {k: v or "" for k, v in attrs}


# Runs in the page after layout: facts about what a reader sees, written where --dump-dom shows them.
PROBE = """<script>
addEventListener('load', () => {
  const table = document.querySelector('table');
  const folds = [...document.querySelectorAll('details')];
  const seen = p => p.checkVisibility ? p.checkVisibility() : p.offsetHeight > 0;
  const closedHeights = folds.map(d => d.getBoundingClientRect().height);
  const hidden = folds.every(d => !d.open && [...d.querySelectorAll('pre')].every(p => !seen(p)));
  const summaries = folds.every(d => d.querySelector('summary') && d.querySelector('summary').offsetHeight > 0);
  document.body.dataset.table = table ? getComputedStyle(table).display + ':' + table.rows.length : 'none';
  document.body.dataset.tableInFold = String(!!(table && table.closest('details')));
  document.body.dataset.folds = String(folds.length);
  document.body.dataset.foldedHidden = String(hidden);
  document.body.dataset.summariesVisible = String(summaries);
  document.body.dataset.titles = [...document.querySelectorAll('details p > strong:first-child')]
    .map(s => s.textContent).join('|');
  folds.forEach(d => d.open = true);
  document.body.dataset.openShows = String(folds.every((d, i) => d.getBoundingClientRect().height > closedHeights[i]
    && [...d.querySelectorAll('pre')].every(p => seen(p))));
});
</script>"""


def render_page(markdown: str, directory: Path, probe: bool = True) -> Path:
    cmark = tool("cmark-gfm")
    # GitHub's extensions; --unsafe keeps <details>/<summary>, which GitHub's sanitiser also keeps.
    body = subprocess.run([cmark, "--unsafe", "-e", "table", "-e", "autolink", "-e", "tagfilter", "-e",
                           "strikethrough"], input=markdown, capture_output=True, text=True, check=True,
                          timeout=60).stdout
    page = directory / "comment.html"
    page.write_text("<!doctype html><meta charset=utf-8><style>body{font:14px sans-serif;max-width:900px;"
                    "margin:16px} table{border-collapse:collapse} td,th{border:1px solid #d0d7de;padding:4px 8px}"
                    "pre{background:#f6f8fa;padding:8px;overflow:auto}</style>" + body + (PROBE if probe else ""),
                    encoding="utf-8")
    return page


def chromium(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = directory / "profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([tool("chromium"), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def upgrade_comment(repo: Repo) -> str:
    assert repo.cli("render").exit_code == 0
    repo.write("filters/example-filter.wasm", proxy_wasm_module("example-v2"))
    result = repo.cli("diff", "--format", "markdown")
    assert result.exit_code == 1
    return result.stdout


def test_the_comment_renders_as_a_table_and_folds_in_a_browser(repo: Repo, tmp_path: Path) -> None:
    markdown = upgrade_comment(repo)
    page = render_page(markdown, tmp_path)
    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr
    dom = _Dom()
    dom.feed(dumped.stdout)
    # The summary table is a table (header and six rows), outside every fold; one fold per group.
    assert dom.body.get("data-table") == "table:7", dom.body
    assert dom.body.get("data-table-in-fold") == "false"
    assert dom.body.get("data-folds") == "3"  # base, details, productpage
    assert dom.tags.get("details") == 3 and dom.tags.get("summary") == 3
    # Folds are folds: closed, their diffs take no space until opened, their summaries show.
    assert dom.body.get("data-folded-hidden") == "true"
    assert dom.body.get("data-summaries-visible") == "true"
    assert dom.body.get("data-open-shows") == "true"
    # Each object's title is bold text with its sign, not markdown syntax left over (~ is strikethrough).
    assert dom.body.get("data-titles") == "+ ConfigMap|- ConfigMap|~ Deployment|~ Deployment"
    assert dom.tags.get("pre", 0) >= 4 and "language-diff" in dumped.stdout
    # A name from the pull request is text, never markup.
    assert "<code>default/details-v1</code>" in dumped.stdout

    shot = tmp_path / "comment.png"
    taken = chromium(tmp_path, f"--screenshot={shot}", "--window-size=960,900", "--hide-scrollbars", page.as_uri())
    assert taken.returncode == 0, taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_names_cannot_inject_markup() -> None:
    from renderer.reporters.markdown import markdown_parts
    from renderer.review import FieldChange, ObjectChange, ObjectId, Review

    evil = ObjectChange("changed", ObjectId("Service", "ns", "<img src=x onerror=alert(1)>|**x**"), "apps/a.yaml",
                        (FieldChange("spec.x", "```\n</details>", "a"),))
    text = markdown_parts(Review((evil,), (), (), (), ()))[0]
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;&#124;&#42;&#42;x&#42;&#42;" in text
    # A value holding a fence gets a longer fence, so the block cannot be closed from inside.
    assert "````diff\n" in text and "-   ```\\n</details>\n" in text
    assert text.splitlines().count("</details>") == text.splitlines().count("<details>") == 1
    assert json.loads(json.dumps(text)) == text and html.unescape("&#124;") == "|"


def test_a_fold_that_spans_parts_is_closed_and_reopened_as_continued() -> None:
    from renderer.reporters.markdown import markdown_parts
    from renderer.review import FieldChange, ObjectChange, ObjectId, Review

    many = tuple(ObjectChange("changed", ObjectId("EnvoyFilter", "ns", f"big-{i:02}"),
                              f"overlays/big/f{i:02}.envoyfilter.yaml", (FieldChange("spec.x", "a" * 300, "b" * 300),),
                              "listener drains", group="service big") for i in range(30))
    parts = markdown_parts(Review(many, (), (), (), ()), max_chars=4096, split=True)
    assert len(parts) > 2
    for number, part in enumerate(parts, 1):
        assert len(part) <= 4096
        balanced(part)
        if number > 1:
            assert "<summary>service big: 30 objects (listener drains) (continued)</summary>" in part
    assert sum(len(headers(p)) for p in parts) == 30


def test_an_invalid_spec_still_gets_its_comment(repo: Repo, tmp_path: Path) -> None:
    repo.write("filters.yaml", repo.spec.read_text().replace("rootId:", "rootID:"))
    result = repo.cli("diff", "--format", "markdown", "--split", str(tmp_path / "c"))
    assert result.exit_code == 2
    written = tmp_path / "c" / "part-1-of-1.md"
    assert result.stdout == f"{written}\n"
    text = html.unescape(written.read_text())
    assert text.startswith("<!-- wasm-gitops diff part 1 -->\n## wasm-gitops diff\n\n**The spec is invalid** (1 problem)")
    assert "filters.yaml:7:5: unknown key 'rootID' in filters[0]; did you mean 'rootId'?" in text
