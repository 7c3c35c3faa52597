"""The operator's pages link to files and headings that exist (GitHub's anchors), so a renamed
heading or a moved file shows here rather than as a dead link."""

from __future__ import annotations

import re

import pytest

from tests.docs import pages

PAGES = [
    "crd-reference.md", "annotations.md", "migration-from-pomerium.md", "operator.md",
    "install.md", "helm.md", "operations.md", "doctor.md", "verify.md", "quickstart-kind.md",
    "cert-manager.md",
]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as ``-``."""
    out = set()
    for line in text.splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            heading = re.sub(r"[`*]", "", match.group(1).strip()).lower()
            out.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return out


@pytest.mark.parametrize("name", PAGES)
def test_links_resolve(name: str) -> None:
    text = pages.read(name)
    text = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (pages.DOCS / path).resolve() if path else pages.DOCS / name
        assert file.exists(), f"{name}: {target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{name}: {target}"


def test_the_anchor_rule() -> None:
    assert anchors("## Pomerium CRD fields in Settings\n### Settings: rules checked (CEL)\n") == {
        "pomerium-crd-fields-in-settings",
        "settings-rules-checked-cel",
    }
