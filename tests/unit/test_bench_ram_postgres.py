"""bench/ram_postgres.py (bench/api.py --postgres-on-ram): a real PostgreSQL whose cluster is on
tmpfs, with the machine's non-default setting, removed with its files at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bench.ram_postgres import RAM_DIR, postgres_binaries, ram_postgres
from tests.conftest import REQUIRE_SERVICES


def require_ram_and_binaries() -> None:
    try:
        postgres_binaries()
        missing = None if RAM_DIR.is_dir() else f"no tmpfs at {RAM_DIR}"
    except RuntimeError as exc:
        missing = str(exc)
    if missing and REQUIRE_SERVICES:
        pytest.fail(f"{missing} (REQUIRE_SERVICES=1)")
    if missing:
        pytest.skip(missing)


def test_the_cluster_lives_in_ram_and_is_gone_afterwards() -> None:
    require_ram_and_binaries()
    with ram_postgres() as url:
        engine = create_engine(url)
        with engine.connect() as conn:
            data_directory = conn.execute(text("SHOW data_directory")).scalar_one()
            autovacuum = conn.execute(text("SHOW autovacuum")).scalar_one()
            fsync = conn.execute(text("SHOW fsync")).scalar_one()
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        assert Path(data_directory).is_relative_to(RAM_DIR)
        assert Path(data_directory).is_dir()
        # As on the machine's server: commits still flush (to RAM), autovacuum is off.
        assert (autovacuum, fsync) == ("off", "on")
    assert not Path(data_directory).exists()
