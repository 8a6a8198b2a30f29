"""A serving API process takes its start-up heap out of the cyclic collector's view."""

import json
import os
import subprocess
import sys

from tests.fixtures.api import api_env

PROBE = """
import gc, json
from services.cancel_api.app import create_app_from_env
before = gc.get_freeze_count()
create_app_from_env()
seen = {"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects())}
print(json.dumps({"before": before, **seen}))
"""


def test_the_serving_app_factory_freezes_what_start_up_allocated():
    env = {**os.environ, **api_env("postgresql://nobody@127.0.0.1:1/none", "127.0.0.1:1", "p-")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == 0
    # Modules, the app and its routes: tens of thousands of objects a full collection would
    # otherwise walk every time; what is left to it is the little allocated since.
    assert seen["frozen"] > 10_000
    assert seen["tracked"] < seen["frozen"] / 10
