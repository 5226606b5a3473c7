"""The documentation holds together: docs/security.md names tests that exist, every setting has
its row in docs/settings.md, every relative link in the README and docs/ leads somewhere, and
the README stays short."""
from __future__ import annotations

import re
from pathlib import Path

from session_expiry.settings import KNOWN

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
HEADING = re.compile(r"^#{1,6} +(.+?) *#* *$", re.MULTILINE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def prose(text: str) -> str:
    """The text without code, where a ``[x](y)`` or a ``# comment`` is not markdown."""
    return INLINE_CODE.sub("", FENCED.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    for heading in HEADING.findall(FENCED.sub("", page.read_text("utf-8"))):
        base = anchor = slug(heading)
        count = 0
        while anchor in found:
            count += 1
            anchor = f"{base}-{count}"
        found.add(anchor)
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` to a missing file, or to a heading its page lacks."""
    broken = []
    for target in LINK.findall(prose(page.read_text("utf-8"))):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.is_file() or (anchor and anchor not in anchors(linked)):
            broken.append(f"{page.name}: {target}")
    return broken


def test_every_test_the_security_map_names_exists():
    text = (DOCS / "security.md").read_text()
    named = set(re.findall(r"`(tests/[\w/]+\.py)::(\w+)", text))
    assert len(named) >= 50
    missing = [f"{path}::{name}" for path, name in sorted(named)
               if not (ROOT / path).is_file()
               or not re.search(rf"^def {name}\b", (ROOT / path).read_text(), re.MULTILINE)]
    assert missing == []


def test_every_session_expiry_setting_has_its_row_in_the_settings_page():
    rows = [line.split("|")[1].strip()
            for line in (DOCS / "settings.md").read_text("utf-8").splitlines()
            if line.startswith("|")]
    assert [name for name in sorted(KNOWN) if f"`session_expiry.{name}`" not in rows] == []


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file_and_heading():
    assert len(PAGES) >= 8
    assert [link for page in PAGES for link in broken_links(page)] == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## `session_expiry.*` and more\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#session_expiry-and-more) [ok](#page)"
                    " [ok](https://example.com/x.md) `[code](none.md)`\n"
                    "[gone](none.md) [no heading](other.md#nowhere) [no heading](#nowhere)\n")
    assert broken_links(page) == [
        "page.md: none.md", "page.md: other.md#nowhere", "page.md: #nowhere"]


def test_heading_anchors_are_github_slugs_and_repeats_are_numbered(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# How it works\n\n## The answer, in short\n\n## Notes\n\n## Notes\n\n"
                    "```sh\n# not a heading\n```\n")
    assert anchors(page) == {"how-it-works", "the-answer-in-short", "notes", "notes-1"}


def test_the_readme_fits_on_two_screens():
    assert len((ROOT / "README.md").read_text("utf-8").splitlines()) <= 100  # two screens
