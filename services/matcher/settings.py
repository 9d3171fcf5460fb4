"""Matcher configuration (environment variables prefixed FACEGATE_MATCHER_)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MatcherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEGATE_MATCHER_", extra="ignore")

    database_url: str = Field(description="postgresql:// URL (libpq style, as pgserver prints it)")
    # Service-to-service credential: the app refuses to start without it (services/common/internal_auth.py)
    internal_token: SecretStr | None = None
    pool_size: int = Field(default=10, ge=1)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=5.0, gt=0)
    pool_pre_ping: bool = False
    statement_timeout_ms: int = Field(default=10_000, ge=0, description="0 disables the server-side timeout")

    # HNSW parameters, chosen by bench/matcher.py on face-like data (identity centres + capture noise, 4
    # templates each): m=16/ef_construction=64 gave recall@1 >= 0.995 up to 100k 512-d with ef_search >= 40
    # and 1.000 at 200 (recall@10 0.976 at 200, 0.991 at 400, at twice the latency); 1M needs 400 (below).
    # Raising ef_construction doubles a build that already takes ~2 min per 100k 512-d templates on 2 cores.
    hnsw_m: int = Field(default=16, ge=2, le=100)
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    # Query-time candidate list; pgvector 0.6 returns at most ef_search rows per index scan, so this is
    # also the number of candidates that are ordered exactly and grouped per attendee.
    hnsw_ef_search: int = Field(default=200, ge=1, le=1000)
    # Recall falls with gallery size at a fixed ef_search: at 1M 128-d templates ef_search 200 measured
    # recall@1 0.955 and 400 measured 1.000, so galleries above `hnsw_large_templates` use the larger list.
    hnsw_ef_search_large: int = Field(default=400, ge=1, le=1000)
    hnsw_large_templates: int = Field(default=250_000, ge=0)
    # Galleries with at most this many templates are searched exactly (sequential scan, full recall): at 10k
    # 512-d templates exact search measured as fast as HNSW at ef_search 200 (p50 23.5 vs 22.0 ms, same run).
    exact_max_templates: int = Field(default=10_000, ge=0)
    # Searches reuse a gallery's (model, dim, template count) for this long instead of reading it each time.
    # Local writes invalidate it at once; a stale entry can only pick the other search mode near the cut-over
    # (both are correct), and any miss on it (dropped partition, other model/dim) re-reads before answering.
    gallery_cache_ttl_s: float = Field(default=2.0, ge=0)
    # Every attendee with 2+ photo templates also gets the L2-normalised mean of them as one more template, kept
    # in step by every write (issue 16). Held back (dlib, FPIR 0.003, K=200, 2 photos each) best-of + mean turned
    # away 20.5% of genuine attendees against 26.8% for best-of alone (README "Levers"). Off: no new means are made
    # and an attendee's old mean goes at their next write.
    mean_templates: bool = True
    # Exact mode fetches k * this many templates before grouping per attendee (doubled until enough).
    overfetch_per_attendee: int = Field(default=8, ge=1)

    # Resident galleries (services/matcher/resident.py): galleries searched by HNSW are also held in process
    # memory as hnswlib graphs, used only while at Postgres's version. Chosen by bench/matcher.py: see README.
    resident_enabled: bool = True
    # Budget of templates held per process (about dim * 4 + 200 bytes each); least recently searched go first.
    resident_max_templates: int = Field(default=2_000_000, ge=0)
    # Graph degree and build list, chosen on 100k x 512 face-like data (hnswlib alone, 1,000 probes, same run):
    # m 24 / ef_construction 200 reaches r@1 0.999 at ef 40 (0.37 ms) and 1.000 at ef 60 (0.51 ms), where
    # m 16 / 128 needs ef 120 (0.72 ms) for 1.000; the build takes 1.5x as long (51 s against 33 s).
    resident_m: int = Field(default=24, ge=2, le=100)
    resident_ef_construction: int = Field(default=200, ge=4, le=2000)
    # Candidate list of a resident search (doubled when its templates hold fewer than k attendees). 100k x 512
    # with m 24 / 200: r@1 1.000 on the bench's 200 probes and 0.999 on 1,000 at ef 40 (ef 60: 1.000 on both,
    # ~0.15 ms more). A gate needs the nearest attendee right, and at 40 it is; r@10 is lower (0.84 against
    # 0.88 at 60), which only reorders attendees far past the threshold.
    resident_ef_search: int = Field(default=40, ge=1, le=2000)
    # ... and above hnsw_large_templates, where face-like data needs a longer list (1M x 128, m 24 / 200: r@1
    # 0.980 at ef 100, 0.990 at 160, 0.995 at 400 in 2.5 ms)
    resident_ef_search_large: int = Field(default=400, ge=1, le=2000)
    resident_build_threads: int = Field(default=2, ge=1)
    # A stale copy catches up in place when at most this many rows were added since its version (and few
    # were deleted); more, and it is rebuilt off to the side while Postgres answers.
    resident_catch_up_rows: int = Field(default=1_000, ge=0)
    # After a failed load, Postgres answers this gallery's searches for this long before the next try.
    resident_retry_s: float = Field(default=5.0, ge=0)
