"""Deploy tests: on a failure, the compose services' logs go to test-results/ for the reader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.compose_stack import ComposeStack, compose_stack  # noqa: F401 (the fixture)

RESULTS = Path(__file__).resolve().parents[2] / "test-results"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(autouse=True)
def _compose_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed or "compose_stack" not in request.fixturenames:
        return
    stack: ComposeStack = request.getfixturevalue("compose_stack")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"deploy-{request.node.name}.log"
    path.write_text(stack.compose_cmd("logs", "--no-color", "--timestamps").stdout)
    print(f"compose logs: {path}")
