"""axe-core (the npm package pinned in package-lock.json) run inside a Playwright page.

Each run's whole result is written to test-results/axe/<name>.json, so a failure (or a review)
can read every finding, the minor ones included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import Page

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = ROOT / "node_modules" / "axe-core" / "axe.min.js"
AXE_URL = "/__tests__/axe.min.js"
RESULTS = ROOT / "test-results" / "axe"
BLOCKING = ("serious", "critical")
# axe's default rule set (WCAG 2.0-2.2 A/AA and best practices) plus the WCAG 2.2 AA target size,
# which axe leaves off by default: the UI is also used with fingers on a tablet.
OPTIONS = {"resultTypes": ["violations", "incomplete"], "rules": {"target-size": {"enabled": True}}}


async def run_axe(page: Page, name: str) -> dict[str, Any]:
    """axe's result for the page as it is now; also written to test-results/axe/<name>.json."""
    if not AXE_JS.exists():
        raise RuntimeError(f"{AXE_JS} is missing: run `bash infra/browser.sh ensure` (npm ci)")
    if not await page.evaluate("typeof window.axe === 'object'"):
        # The UI's Content-Security-Policy (script-src 'self') refuses an inline script, so axe
        # is served from the page's own origin by the browser itself; the policy stays on.
        await page.route(f"**{AXE_URL}", lambda route: route.fulfill(path=AXE_JS))
        await page.add_script_tag(url=AXE_URL)
    result: dict[str, Any] = await page.evaluate("options => axe.run(document, options)", OPTIONS)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return result


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} [{v['helpUrl']}]")
        for node in v["nodes"]:
            summary = (node.get("failureSummary") or "").replace("\n", " ")
            lines.append(f"  {' '.join(map(str, node['target']))}: {summary}")
    return "\n".join(lines)


async def assert_accessible(page: Page, name: str) -> dict[str, Any]:
    """No axe violation of serious or critical impact on the page as it is now."""
    result = await run_axe(page, name)
    blocking = [v for v in result["violations"] if v["impact"] in BLOCKING]
    assert not blocking, f"axe on {name}: serious/critical violations\n{describe(blocking)}"
    return result
