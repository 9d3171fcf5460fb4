"""Database URL handling shared by the services that own tables (matcher, gateway) and by migrations."""

from __future__ import annotations


def sqlalchemy_url(url: str) -> str:
    """Accept plain `postgresql://` URLs (pgserver, libpq style) and select the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")
