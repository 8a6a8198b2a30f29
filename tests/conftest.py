"""Root conftest: registers the infrastructure fixtures."""

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.processes",
    "tests.fixtures.api",
    "tests.fixtures.bpjs_sim",
    "tests.fixtures.worker",
    "tests.fixtures.stack",
]
