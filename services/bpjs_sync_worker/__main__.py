"""`python -m services.bpjs_sync_worker`: run the faust worker (health and metrics on 6066)."""

import asyncio
import sys

from services.bpjs_sync_worker.config import DEV_BPJS_SECRETS, WorkerSettings
from services.bpjs_sync_worker.credentials import CredentialBook, CredentialsError
from services.bpjs_sync_worker.worker import create_worker, wait_for_topics
from shared import tracing
from shared.config import load_settings, refuse_to_start, secret_problem
from shared.kafka import TopicMismatch
from shared.logging import configure_logging

SERVICE = "bpjs-sync-worker"


def check_credentials_file(settings: WorkerSettings) -> None:
    """A broken credentials file stops the start, not the first BPJS call; in production no
    clinic may carry a placeholder or the simulator's dev keys. Never names a value."""
    try:
        book = CredentialBook.load(settings.credentials_default(), settings.bpjs_credentials_file)
    except CredentialsError as exc:
        refuse_to_start(SERVICE, f"BPJS_CREDENTIALS_FILE: {exc}")
    if settings.is_dev:
        return
    for clinic in sorted(book.clinics):
        creds = book.for_clinic(clinic)
        for field, value, dev in (
            ("cons_id", creds.cons_id, ()),
            ("secret_key", creds.secret_key.get_secret_value(), DEV_BPJS_SECRETS),
            ("user_key", creds.user_key.get_secret_value(), DEV_BPJS_SECRETS),
        ):
            problem = secret_problem(field, value, dev)
            if problem:
                refuse_to_start(SERVICE, f"BPJS_CREDENTIALS_FILE: clinic {clinic!r}: {problem}")


def main() -> None:
    settings = load_settings(WorkerSettings, SERVICE)  # production refuses bad settings
    configure_logging(SERVICE, settings.log_level)
    tracing.configure(SERVICE)
    check_credentials_file(settings)
    # faust silently ignores a topic missing when it subscribes (seen when the broker restarted
    # at that moment) and then never consumes it: make sure the topic exists first.
    try:
        asyncio.run(wait_for_topics(settings))
    except TopicMismatch as exc:
        refuse_to_start(SERVICE, str(exc))
    app = create_worker(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
