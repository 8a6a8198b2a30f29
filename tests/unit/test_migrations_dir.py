"""Where the migrator finds its SQL files, and what it does when it finds none."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared import db

REPO = Path(__file__).resolve().parents[2]


async def test_migrate_refuses_a_folder_without_migrations_before_touching_the_database(
    tmp_path: Path,
) -> None:
    # Port 1 refuses connections: reaching the database first would raise OSError instead.
    with pytest.raises(RuntimeError, match="no migrations"):
        await db.migrate("postgresql://nobody:pw@127.0.0.1:1/none", directory=tmp_path)


def test_migrations_dir_comes_from_the_environment_when_set(tmp_path: Path) -> None:
    (tmp_path / "0001_x.sql").write_text("select 1;")
    code = "from shared import db; print(db.migration_files()[0].name)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"MIGRATIONS_DIR": str(tmp_path), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert out.stdout.strip() == "0001_x.sql"
