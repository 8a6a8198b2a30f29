"""`python -m services.bpjs_sync_worker`: run the faust worker (health and metrics on 6066)."""

import asyncio
import sys

from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.credentials import CredentialBook, CredentialsError
from services.bpjs_sync_worker.worker import create_worker, wait_for_topics
from shared.logging import configure_logging


def main() -> None:
    settings = WorkerSettings()  # refuses to start without secrets outside dev mode
    configure_logging("bpjs-sync-worker", settings.log_level)
    try:  # a broken credentials file stops the start, not the first BPJS call
        CredentialBook.load(settings.credentials_default(), settings.bpjs_credentials_file)
    except CredentialsError as exc:
        sys.exit(f"bpjs-sync-worker: {exc}")
    # faust silently ignores a topic missing when it subscribes (seen when the broker restarted
    # at that moment) and then never consumes it: make sure the topic exists first.
    asyncio.run(wait_for_topics(settings))
    app = create_worker(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
