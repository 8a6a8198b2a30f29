"""Root conftest: registers the infrastructure fixtures; settings run in test mode."""

import os

# Settings default to production (which refuses dev secrets); in-process settings of the tests
# read this, and every service process gets APP_ENV explicitly as well.
os.environ["APP_ENV"] = "test"

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.processes",
    "tests.fixtures.api",
    "tests.fixtures.bpjs_sim",
    "tests.fixtures.worker",
    "tests.fixtures.stack",
]
