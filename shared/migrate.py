"""`python -m shared.migrate`: apply pending SQL migrations to DATABASE_URL."""

import asyncio

from shared.config import BaseServiceSettings
from shared.db import migrate


def main() -> None:
    settings = BaseServiceSettings()
    applied = asyncio.run(migrate(settings.database_url.get_secret_value()))
    print("migrations applied: " + (", ".join(applied) if applied else "none (up to date)"))


if __name__ == "__main__":
    main()
