"""Matcher service: per-event galleries of face templates in Postgres + pgvector, exact / HNSW search."""
