"""`python -m shared.migrate`: apply pending SQL migrations to DATABASE_URL (the owner's DSN).

With API_DATABASE_PASSWORD / WORKER_DATABASE_PASSWORD set it also lets the services' roles log
in with those passwords (a deployment's way to create the logins; docs/SECURITY.md).
"""

import asyncio
from typing import ClassVar

import asyncpg
from pydantic import Field, SecretStr

from shared.config import (
    API_DB_ROLE,
    DEV_DB_PASSWORDS,
    WORKER_DB_ROLE,
    BaseServiceSettings,
    load_settings,
    secret_problem,
)
from shared.db import migrate, set_role_login

SERVICE = "migrate"


class MigrateSettings(BaseServiceSettings):
    uses_auth: ClassVar[bool] = False
    uses_kafka: ClassVar[bool] = False

    api_database_password: SecretStr | None = Field(None, alias="API_DATABASE_PASSWORD")
    worker_database_password: SecretStr | None = Field(None, alias="WORKER_DATABASE_PASSWORD")

    def role_passwords(self) -> dict[str, tuple[str, str]]:
        """role -> (variable, password) of the role logins to set."""
        wanted = {
            API_DB_ROLE: ("API_DATABASE_PASSWORD", self.api_database_password),
            WORKER_DB_ROLE: ("WORKER_DATABASE_PASSWORD", self.worker_database_password),
        }
        return {
            role: (name, value.get_secret_value())
            for role, (name, value) in wanted.items()
            if value is not None and value.get_secret_value()
        }

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        for name, password in self.role_passwords().values():
            problem = secret_problem(name, password, DEV_DB_PASSWORDS)
            if problem:
                problems.append(problem)
        return problems


async def run(settings: MigrateSettings) -> list[str]:
    dsn = settings.database_url.get_secret_value()
    applied = await migrate(dsn)
    logins = settings.role_passwords()
    if logins:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            for role, (_, password) in logins.items():
                await set_role_login(conn, role, password)
        finally:
            await conn.close()
    return applied


def main() -> None:
    settings = load_settings(MigrateSettings, SERVICE)
    applied = asyncio.run(run(settings))
    print("migrations applied: " + (", ".join(applied) if applied else "none (up to date)"))
    for role in settings.role_passwords():
        print(f"login enabled for database role {role}")


if __name__ == "__main__":
    main()
