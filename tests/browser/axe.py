"""axe-core in the browser tests: `run_axe(page)` lists the serious and critical violations on the page.

The engine is the npm package pinned in tests/browser/package.json (package-lock.json), installed beside it
by `.ci/run` (`npm ci --prefix tests/browser`). Without it (a machine without npm) the tests that need it skip
and say how to install it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
AXE_JS = HERE / "node_modules" / "axe-core" / "axe.min.js"
#: Only these fail a test: "moderate" and "minor" findings are advice (best practices, not barriers).
SERIOUS = ("serious", "critical")


def pinned_version() -> str:
    return str(json.loads((HERE / "package.json").read_text())["devDependencies"]["axe-core"])


def axe_source() -> str:
    """axe.min.js as pinned, or a skip saying how to install it."""
    if not AXE_JS.exists():
        pytest.skip("axe-core is not installed: run `npm ci --prefix tests/browser` (needs Node.js and npm)")
    installed = json.loads((AXE_JS.parent / "package.json").read_text())["version"]
    if installed != pinned_version():
        pytest.fail(f"axe-core {installed} is installed but {pinned_version()} is pinned: run `npm ci --prefix tests/browser`")
    return AXE_JS.read_text()


@dataclass(frozen=True)
class Violation:
    """One axe rule broken on the page, with a few of the elements that break it (for the failure message)."""

    rule: str
    impact: str
    help: str
    targets: tuple[str, ...]
    summary: str

    def __str__(self) -> str:
        where = "; ".join(self.targets[:4]) + (" …" if len(self.targets) > 4 else "")
        return f"{self.rule} ({self.impact}, {len(self.targets)} elements): {self.help}\n    at {where}\n    {self.summary}"


def run_axe(page: Any, rules: list[str] | None = None) -> list[Violation]:
    """The serious and critical axe-core violations on `page` as it is now; with `rules`, only those rules
    are run and every violation of them counts (e.g. the "moderate" heading rules)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source())
    results = page.evaluate(
        """async (rules) => {
            const options = rules ? {runOnly: {type: "rule", values: rules}} : {};
            const r = await window.axe.run(document, {...options, resultTypes: ["violations"]});
            return r.violations.map(v => ({rule: v.id, impact: v.impact, help: v.help,
                targets: v.nodes.map(n => n.target.join(" ")), summary: (v.nodes[0] || {}).failureSummary || ""}));
        }""",
        rules,
    )
    found = [Violation(r["rule"], r["impact"] or "", r["help"], tuple(r["targets"]), r["summary"]) for r in results]
    return found if rules else [v for v in found if v.impact in SERIOUS]


def describe(violations: list[Violation]) -> str:
    return "\n".join(str(v) for v in violations) or "none"
