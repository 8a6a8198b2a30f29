"""Settings read a secret from the file named after its variable (compose's /run/secrets)."""

import json
import os
import subprocess
import sys

from tests.fixtures.infra import REPO

PROBE = """
import json
from services.bpjs_simulator.config import SimulatorSettings
from services.cancel_api.config import CancelApiSettings
api = CancelApiSettings()
print(json.dumps({
    "jwt": api.auth_jwt_secret.get_secret_value(),
    "dsn": api.database_url.get_secret_value(),
    "kafka": api.kafka_sasl_password.get_secret_value(),
    "sim": SimulatorSettings(APP_ENV="test").secret_key.get_secret_value(),
}))
"""


def run_probe(secrets: dict[str, str], folder, **env: str) -> dict[str, str]:
    for name, value in secrets.items():
        (folder / name).write_text(value + "\n")  # files usually end with a newline
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "DATABASE_"))}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**base, "APP_ENV": "production", "SECRETS_DIR": str(folder), **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout)


SECRETS = {
    "AUTH_JWT_SECRET": "jwt-secret-from-a-mounted-file-0123456789",
    "DATABASE_URL": "postgresql://antrean_api:Str0ng-file-pw@db:5432/antrean",
    "KAFKA_SASL_PASSWORD": "kafka-password-from-a-file",
    "BPJS_SECRET_KEY": "bpjs-secret-from-a-file",
}


def test_a_production_service_reads_its_secrets_from_files_named_after_the_variables(tmp_path):
    got = run_probe(
        SECRETS, tmp_path, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="api"
    )
    assert got == {
        "jwt": SECRETS["AUTH_JWT_SECRET"],
        "dsn": SECRETS["DATABASE_URL"],
        "kafka": SECRETS["KAFKA_SASL_PASSWORD"],
        "sim": SECRETS["BPJS_SECRET_KEY"],
    }


def test_an_environment_variable_wins_over_the_file(tmp_path):
    got = run_probe(SECRETS, tmp_path, AUTH_JWT_SECRET="jwt-secret-from-the-environment-0123456")
    assert got["jwt"] == "jwt-secret-from-the-environment-0123456"
