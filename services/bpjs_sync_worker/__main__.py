"""`python -m services.bpjs_sync_worker`: run the faust worker (health and metrics on 6066)."""

import sys

from services.bpjs_sync_worker.config import WorkerSettings
from services.bpjs_sync_worker.worker import create_worker
from shared.logging import configure_logging


def main() -> None:
    settings = WorkerSettings()  # refuses to start without secrets outside dev mode
    configure_logging("bpjs-sync-worker", settings.log_level)
    app = create_worker(settings)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower()]
    app.main()


if __name__ == "__main__":
    main()
