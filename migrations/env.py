"""Alembic environment: plain SQL migrations (no autogenerate), URL from the environment."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool

from services.common.db import sqlalchemy_url

config = context.config


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("FACEGATE_DATABASE_URL")
    if not url:
        raise SystemExit("set FACEGATE_DATABASE_URL or pass -x url=postgresql://...")
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
