#!/usr/bin/env python3
"""bench.py: the scenarios of scripts/bench (the performance issue's benchmark).

scripts/bench builds the binaries and starts a throwaway PostgreSQL, then runs this. It starts
uppzy-mock and uppzy-worker itself, once per run, talks to PostgreSQL through `psql` (standard library
only: no database driver), writes the results as JSON and regenerates the generated section of
docs/benchmarks.md. Run `scripts/bench --help` for the options; this file is not meant to be run alone.

How each figure is measured (also written into docs/benchmarks.md):
  - Worker CPU and peak RSS: the rusage of the worker process from wait4() (utime + stime, ru_maxrss).
  - PostgreSQL CPU: every process of the server (live ones, plus the postmaster's cutime/cstime, which
    holds the backends that have exited), before and after.
  - Transactions, row writes, WAL: pg_stat_database (xact_commit + xact_rollback of database uppzy),
    pg_stat_user_tables (n_tup_ins + n_tup_upd of uppzy.chat_jobs) and pg_current_wal_lsn(), read by
    a short-lived psql before the worker starts and after it has exited (exited backends have flushed
    their statistics). The before-snapshot's own transaction is subtracted.
  - S1 throughput: jobs / (max(finished_at) - min(submitted_at)): from the first accepted submission
    to the last finish, both stamped by the worker. "wall" is jobs / (worker exit - worker spawn).
  - S3 latency: submitted_at - created_at per job (see the docs for the approximation).
  - S8 network: S2 at a 100 ms round trip (mock --latency-ms 100 --latency-fixed), over plain HTTP/1.1
    and over TLS with HTTP/2 (nginx, scripts/tls-front); connections are sampled with `ss`.
  - S7 adaptive polling (issue 11): lognormal answer times drawn by the mock (--ready-dist, fixed --seed),
    fixed then adaptive mode in the same database (the adaptive worker starts warm on the fixed run's
    rows); status calls and the true ready -> first-seen delay from the mock's /_mock/stats; then both
    modes again under a 50 requests/s site budget (mock --rate-limit): jobs/s and the 429 share.
  - S6 sites: three sites in uppzy.sites (two with limits the mock enforces), four workers with a keys
    directory; per-second request counts per site from /_mock/stats (whole seconds of the run), jobs/s and
    the first submissions from chat_jobs, budget statements from each worker's /metrics
    (uppzy_budget_statements_total). Runs: budget off (before), on, on with one worker, C alone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
END = "__BENCH_END__"
API_KEY = "bench-key"

# Full sizes (the issue's) and quick sizes (--quick: 1/10 for S1, S2 and S4).
FULL = {"S1": 20000, "S9": 20000, "S2": 20000, "S3": 300, "S4": 20000, "S8": 20000, "idle_s": 20, "S7": 5000,
        "S7_budget": 1000, "S7_warmup": 2000}
QUICK = {"S1": 2000, "S9": 2000, "S2": 2000, "S3": 60, "S4": 2000, "S8": 2000, "idle_s": 5, "S7": 300, "S7_budget": 100,
         "S7_warmup": 0}
# S7 (issue 11, adaptive polling): answer times drawn by the mock from this distribution with a fixed seed,
# so both modes see the same sequence of answer times; --quick scales the answers down (median 2 s).
S7_DIST = "lognormal:median_ms=12000,sigma=0.6"
S7_DIST_QUICK = "lognormal:median_ms=1000,sigma=0.6"
S7_SEED = 11
S7_BUDGET_PER_S = 50  # the site's request budget of S7's budget runs (mock --rate-limit bench=50/s)
S7_BUDGET_BURST = 25  # the burst of the site's shared budget (uppzy.sites) in S7's budget runs
S7_MAX_IN_FLIGHT = 6000
S7_BUDGET_BREAKER_FAILURES = int(os.environ.get("BENCH_S7_BREAKER_FAILURES", "100000"))
S8_ROUND_TRIP_MS = 100
S9_WORKERS = (1, 2, 4, 8)  # S9 (issue 13): worker processes against one database, each run on S1's jobs
# S8's plain HTTP/1.1 run: the connections the README's sizing gives for S2's peak at 100 ms (about
# 8,000 requests/s x 0.1 s), within UPPZY_HTTP_MAX_CONNECTIONS' maximum. Over HTTP/2 the defaults.
S8_H1_CONNECTIONS = 1024
S3_RATE = 20.0  # INSERTs per second in S3
# S6 (three sites, four workers): (site, requests/s, burst, jobs); the mock enforces the limits, the sites'
# rows carry them for the workers' shared budget. Answers ready after 2 s: one status call per job at the
# default 2.5 s poll interval.
S6_SITES = [("s6-a", 50, 50, 5000), ("s6-b", 20, 20, 500), ("s6-c", None, None, 200)]
S6_READY_MS = 2000
S6_WORKERS = 4
S6_SECONDS = 60  # the measured window after the last INSERT (BENCH_S6_SECONDS)
S6_QUICK_SECONDS = 15
S6_QUICK_SCALE = 0.2  # --quick: a fifth of the jobs (BENCH_S6_SCALE)
S6_GAP_S = 1.0  # A's INSERT, then B's and C's this much later: they arrive behind A's backlog
# As in S7's budget runs: a 429'd submission costs an attempt (without the budget), and 10 429s in a row
# would open the circuit breaker; room for 100 attempts, the breaker off unless BENCH_S6_BREAKER_FAILURES.
S6_MAX_ATTEMPTS = 100
S6_SHUTDOWN_GRACE_MS = 2000
S6_MIN_SECONDS_FOR_P99 = 5  # a p99 of the 1 s windows only over at least this many whole seconds
S6_BREAKER_FAILURES = int(os.environ.get("BENCH_S6_BREAKER_FAILURES", "100000"))

TARGETS = {
    # key: (scenario, metric, comparison, bound, text)
    "S1.jobs_per_s": ("S1", "jobs_per_s", ">=", 5000, "≥ 5,000 jobs/s"),
    "S1.ratio_to_S4": ("S1", "ratio_to_S4", ">=", 0.60, "≥ 60% of S4"),
    "S1.worker_cpu_s_per_1000": ("S1", "worker_cpu_s_per_1000", "<=", 0.15, "≤ 0.15 CPU-s"),
    "S1.row_writes_per_job": ("S1", "row_writes_per_job", "<=", 3.0, "≤ 3 + lease renewals"),
    "S2.drain_s": ("S2", "drain_s", "<=", 12.0, "≤ 12 s"),
    "S2.worker_peak_rss_mb": ("S2", "worker_peak_rss_mb", "<=", 150.0, "≤ 150 MB"),
    "S8.h1_ratio_to_S2": ("S8", "h1_ratio_to_S2", "<=", 1.5, "≤ 1.5 × S2"),
    "S8.h2_ratio_to_S2": ("S8", "h2_ratio_to_S2", "<=", 1.5, "≤ 1.5 × S2"),
    "S3.p50_ms": ("S3", "p50_ms", "<=", 10.0, "≤ 10 ms"),
    "S3.p99_ms": ("S3", "p99_ms", "<=", 50.0, "≤ 50 ms"),
    "idle.cpu_pct_of_core": ("idle", "cpu_pct_of_core", "<", 1.0, "< 1% of a core"),
    "idle.db_xacts_per_s": ("idle", "db_xacts_per_s", "<=", 1.0, "≤ 1 (issue 13)"),
    # Issue 13: N workers against one database, S1's jobs.
    "S9.w8_ratio": ("S9", "w8_ratio", ">=", 0.90, "≥ 90% of 1 worker"),
    "S9.jobs_claimed_twice": ("S9", "jobs_claimed_twice", "<=", 0, "none"),
    # Issue 11: adaptive against fixed, on the same answer times.
    "S7.calls_saved_pct": ("S7", "calls_saved_pct", ">=", 25.0, "≥ 25% fewer than fixed"),
    "S7.p50_delta_s": ("S7", "p50_delta_s", "<=", 0.25, "≤ fixed + 0.25 s"),
    "S7.p95_delta_s": ("S7", "p95_delta_s", "<=", 0.5, "≤ fixed + 0.5 s"),
    "S7.budget_ratio": ("S7", "budget_ratio", ">=", 1.3, "≥ 1.3 × fixed"),
    # S6, the shared budget (4 workers, budget on); each figure is a ratio to its bound where the bound is
    # per site (limit × 1.1 + burst; 90% of limit / (1 + status calls per job)).
    "S6.a_window_ratio": ("S6", "a_window_ratio", "<=", 1.0,
                          f"A: max 1 s window ≤ {S6_SITES[0][1]} × 1.1 + {S6_SITES[0][2]}"),
    "S6.b_window_ratio": ("S6", "b_window_ratio", "<=", 1.0,
                          f"B: max 1 s window ≤ {S6_SITES[1][1]} × 1.1 + {S6_SITES[1][2]}"),
    "S6.rate_limited_pct": ("S6", "rate_limited_pct", "<", 1.0, "< 1% of requests"),
    "S6.a_jobs_ratio": ("S6", "a_jobs_ratio", ">=", 1.0, f"A: ≥ 90% × {S6_SITES[0][1]} / (1 + calls per job)"),
    "S6.b_jobs_ratio": ("S6", "b_jobs_ratio", ">=", 1.0, f"B: ≥ 90% × {S6_SITES[1][1]} / (1 + calls per job)"),
    "S6.c_drain_ratio": ("S6", "c_drain_ratio", "<=", 1.1, "C: drain ≤ 1.1 × alone"),
    "S6.b_first_wait_s": ("S6", "b_first_wait_s", "<=", 1.0, "B: first accepted ≤ 1 s after its INSERT"),
    "S6.c_first_wait_s": ("S6", "c_first_wait_s", "<=", 1.0, "C: first accepted ≤ 1 s after its INSERT"),
    "S6.workers_rate_dev_pct": ("S6", "workers_rate_dev_pct", "<=", 10.0, "4 workers within 10% of 1"),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------------
# PostgreSQL through psql


class Psql:
    """One long-lived psql session: a query is written to its stdin, rows come back tab-separated."""

    def __init__(self, url: str):
        self.proc = subprocess.Popen(
            ["psql", url, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def rows(self, sql: str) -> list[list[str]]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(sql.strip().rstrip(";") + ";\n\\echo " + END + "\n")
        self.proc.stdin.flush()
        out = []
        while True:
            line = self.proc.stdout.readline()
            if line == "":
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise BenchError(f"psql failed on: {sql.strip()[:200]}\n{err}")
            line = line.rstrip("\n")
            if line == END:
                return out
            out.append(line.split("\t"))

    def value(self, sql: str) -> str:
        r = self.rows(sql)
        return r[0][0] if r and r[0] else ""

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - best effort at teardown
            self.proc.kill()


def psql_once(url: str, sql: str) -> list[list[str]]:
    """A short-lived session: it exits, so its statistics are flushed at once."""
    r = subprocess.run(["psql", url, "-X", "-q", "-A", "-t", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"psql failed on: {sql.strip()[:200]}\n{r.stderr}")
    return [line.split("\t") for line in r.stdout.splitlines() if line != ""]


SNAPSHOT_SQL = """
SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
       pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
       coalesce((SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables
                 WHERE schemaname = 'uppzy' AND relname = 'chat_jobs'), 0),
       coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables
                 WHERE schemaname = 'uppzy' AND relname = 'chat_jobs'), 0),
       coalesce((SELECT n_tup_upd FROM pg_stat_user_tables
                 WHERE schemaname = 'uppzy' AND relname = 'chat_jobs'), 0)
"""


class Machine:
    """CPU accounting of the whole machine, the PostgreSQL server, and the database."""

    def __init__(self, db_url: str, pg_area: pathlib.Path):
        self.db_url = db_url
        self.pg_area = pg_area

    def postmaster_pid(self) -> int:
        return int((self.pg_area / "data" / "postmaster.pid").read_text().split()[0])

    def pg_cpu_s(self) -> float:
        """CPU seconds of the server: live processes plus exited (reaped) backends."""
        pm = self.postmaster_pid()
        total = 0
        for p in pathlib.Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                f = read_stat(int(p.name))
            except OSError:
                continue
            if int(p.name) == pm:
                total += f["utime"] + f["stime"] + f["cutime"] + f["cstime"]
            elif f["ppid"] == pm:
                total += f["utime"] + f["stime"]
        return total / CLK_TCK

    @staticmethod
    def busy_s() -> float:
        """Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat."""
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return (sum(parts[:8]) - idle) / CLK_TCK

    def snapshot(self) -> dict:
        r = psql_once(self.db_url, SNAPSHOT_SQL)[0]
        return {"xacts": int(r[0]), "wal": int(r[1]), "row_writes": int(r[2]), "hot_upd": int(r[3]),
                "upd": int(r[4]), "pg_cpu": self.pg_cpu_s(), "busy": self.busy_s(), "t": time.time()}


def read_stat(pid: int) -> dict:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # Fields after the command: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17)
    return {"ppid": int(rest[1]), "utime": int(rest[11]), "stime": int(rest[12]),
            "cutime": int(rest[13]), "cstime": int(rest[14])}


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# ---------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process whose rusage we collect with wait4()."""

    def __init__(self, argv: list[str], env: dict, logfile: pathlib.Path):
        self.logf = open(logfile, "w")
        self.t_spawn = time.time()
        self.popen = subprocess.Popen(argv, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid
        self.rc = None
        self.rusage = None
        self.t_exit = None

    def wait(self, timeout: float) -> int:
        timer = threading.Timer(timeout, self._kill_on_timeout)
        timer.start()
        try:
            _, status, ru = os.wait4(self.pid, 0)
        finally:
            timer.cancel()
        self.t_exit = time.time()
        self.rusage = ru
        self.rc = os.waitstatus_to_exitcode(status)
        self.popen.returncode = self.rc
        self.logf.close()
        return self.rc

    def _kill_on_timeout(self) -> None:
        log(f"pid {self.pid} ran past its timeout; killing it")
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 30) -> int:
        if self.rc is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            return self.wait(timeout)
        return self.rc

    def cpu_s(self) -> float:
        return self.rusage.ru_utime + self.rusage.ru_stime

    def peak_rss_mb(self) -> float:
        return self.rusage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux

    def log_count(self, event: str) -> int:
        """Lines of the process's log that carry `event` (a worker's log event name)."""
        with open(self.logf.name, errors="replace") as f:
            return sum(1 for line in f if event in line)


class Mock:
    def __init__(self, bench: "Bench", ready_after_ms: int, tag: str, extra: list[str] | None = None):
        port_file = bench.tmp / f"mock-{tag}.port"
        port_file.unlink(missing_ok=True)
        self.proc = Proc([str(bench.build / "uppzy-mock"), "--port", "0", "--port-file", str(port_file),
                          "--api-key", API_KEY, "--ready-after-ms", str(ready_after_ms)] + (extra or []),
                         bench.clean_env(), bench.tmp / f"mock-{tag}.log")
        bench.children.append(self.proc)
        deadline = time.time() + 10
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.popen.poll() is not None or time.time() > deadline:
                raise BenchError("uppzy-mock did not start; see " + str(bench.tmp / f"mock-{tag}.log"))
            time.sleep(0.02)
        self.port = int(port_file.read_text().strip())
        self.base_url = f"http://127.0.0.1:{self.port}/api/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_mock/stats", timeout=10) as r:
            return json.loads(r.read())

    def stop(self) -> float:
        self.proc.stop()
        return self.proc.cpu_s()


class TlsFront:
    """nginx terminating TLS in front of a mock (scripts/tls-front): HTTP/1.1 only, or HTTP/2 too."""

    def __init__(self, bench: "Bench", mock: Mock, http2: bool, tag: str):
        d = bench.tmp / f"tls-{tag}"
        shutil.rmtree(d, ignore_errors=True)
        argv = ["bash", str(bench.root / "scripts" / "tls-front"), str(d), str(mock.port)] + (["--http2"] if http2 else [])
        for _ in range(3):  # the port is picked free just before nginx binds it: it may lose the race
            (d / "port").unlink(missing_ok=True)
            self.proc = Proc(argv, bench.clean_env(), bench.tmp / f"nginx-{tag}.log")
            bench.children.append(self.proc)
            deadline = time.time() + 30
            while self.proc.popen.poll() is None and time.time() < deadline:
                if (d / "port").exists() and (d / "port").read_text().strip():
                    self.port = int((d / "port").read_text().strip())
                    try:
                        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                        self.base_url = f"https://localhost:{self.port}/api/v1"
                        self.ca_file = str(d / "ca.pem")
                        return
                    except OSError:
                        pass
                time.sleep(0.05)
            self.proc.stop(timeout=5)
        raise BenchError("nginx (scripts/tls-front) did not start; see " + str(bench.tmp / f"nginx-{tag}.log"))

    def stop(self) -> None:
        self.proc.stop(timeout=10)


def established(port: int) -> int:
    """Established TCP connections to 127.0.0.1:port (client side), from `ss`."""
    try:
        r = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"], capture_output=True,
                           text=True)
    except FileNotFoundError:  # iproute2 missing: the figure reads 0, the run goes on
        return 0
    return len([line for line in r.stdout.splitlines() if line.strip()])


def free_port() -> int:
    """A TCP port free now on 127.0.0.1 (for a worker's UPPZY_HTTP_ADDR)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str) -> str | None:
    """The body of GET http://127.0.0.1:port/path when it answers 200; None otherwise."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode(errors="replace")
    except OSError:  # refused, not listening yet, or an HTTP error status (HTTPError is an OSError)
        return None


# ---------------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.root = pathlib.Path(a.root)
        self.build = pathlib.Path(a.build)
        self.tmp = pathlib.Path(a.tmp)
        self.db_url = a.database_url
        self.children: list[Proc] = []
        sizes = dict(QUICK if a.quick else FULL)
        for key, env in (("S1", "BENCH_S1_JOBS"), ("S2", "BENCH_S2_JOBS"), ("S3", "BENCH_S3_JOBS"),
                         ("S4", "BENCH_S4_JOBS"), ("S8", "BENCH_S8_JOBS"), ("S9", "BENCH_S9_JOBS"), ("idle_s", "BENCH_IDLE_S"),
                         ("S7", "BENCH_S7_JOBS"), ("S7_budget", "BENCH_S7_BUDGET_JOBS"),
                         ("S7_warmup", "BENCH_S7_WARMUP_JOBS")):
            if os.environ.get(env):
                sizes[key] = int(os.environ[env])
        self.sizes = sizes
        self.s7_dist = os.environ.get("BENCH_S7_DIST") or (S7_DIST_QUICK if a.quick else S7_DIST)
        self.runs = a.runs if a.runs else (1 if a.quick else 3)
        # S7 takes minutes per run (four worker runs, two of them held to 50 requests/s): one unless --runs.
        # So does S6 (four runs of a minute each), which uses the same count.
        self.runs_s7 = a.runs if a.runs else 1
        self.machine = Machine(self.db_url, pathlib.Path((self.tmp / "pg" / "area").read_text().strip()))
        self.failures: list[str] = []

    # -- helpers -------------------------------------------------------------------------------------

    def clean_env(self) -> dict:
        return {k: v for k, v in os.environ.items() if not (k.startswith("UPPZY_") or k == "DATABASE_URL")}

    def worker_env(self, mock: Mock, tag: str, **settings) -> dict:
        env = self.clean_env()
        env.update({"DATABASE_URL": self.db_url, "UPPZY_BASE_URL": mock.base_url, "UPPZY_SITE_ID": "bench",
                    "UPPZY_API_KEY": API_KEY, "UPPZY_HTTP_ADDR": "off", "UPPZY_WORKER_ID": f"bench-{tag}"})
        env.update({k: str(v) for k, v in settings.items()})
        return env

    def start_worker(self, env: dict, tag: str, until_empty: bool, wrapper: list[str] | None = None) -> Proc:
        argv = (wrapper or []) + [str(self.build / "uppzy-worker"), "run"] + (["--until-empty"] if until_empty else [])
        p = Proc(argv, env, self.tmp / f"worker-{tag}.log")
        self.children.append(p)
        return p

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            log("CHECK FAILED: " + what)
            self.failures.append(what)

    def reset_db(self) -> None:
        psql_once(self.db_url, "TRUNCATE uppzy.chat_jobs RESTART IDENTITY CASCADE; DELETE FROM uppzy.workers; "
                               "DELETE FROM uppzy.incidents")

    def insert_jobs(self, n: int, prefix: str, max_attempts: int | None = None, long: bool = False) -> None:
        cols, val = (", max_attempts", f", {int(max_attempts)}") if max_attempts else ("", "")
        # long: a question of 2,969 characters (90 hex digests; compresses about 2:1, so PostgreSQL stores
        # it compressed in the row), as a pasted document excerpt would be.
        message = ("(SELECT string_agg(md5(g::text || '-' || i::text), ' ') FROM generate_series(1, 90) i)"
                   if long else "'Benchmark question number ' || g || ': what are your opening hours?'")
        psql_once(self.db_url, f"""
            INSERT INTO uppzy.chat_jobs (session_id, message{cols})
            SELECT '{prefix}-' || g, {message}{val}
            FROM generate_series(1, {n}) g""")
        # The planner knows the table (as it would in production), and every run starts right after a
        # checkpoint, so full-page writes weigh the same in every run's WAL.
        psql_once(self.db_url, "ANALYZE uppzy.chat_jobs")
        psql_once(self.db_url, "CHECKPOINT")

    def job_summary(self) -> dict:
        r = psql_once(self.db_url, """
            SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
                   extract(epoch FROM min(submitted_at)), extract(epoch FROM max(finished_at)),
                   count(*) FILTER (WHERE attempts <> 1)
            FROM uppzy.chat_jobs""")[0]
        return {"rows": int(r[0]), "completed": int(r[1]), "first_submitted": float(r[2] or 0),
                "last_finished": float(r[3] or 0), "not_one_attempt": int(r[4])}

    @staticmethod
    def deltas(before: dict, after: dict, jobs: int) -> dict:
        wall = after["t"] - before["t"]
        return {
            # The before-snapshot's own transaction is counted in the after-snapshot: subtract it.
            "db_xacts_per_job": (after["xacts"] - before["xacts"] - 1) / jobs,
            "wal_bytes_per_job": (after["wal"] - before["wal"]) / jobs,
            "row_writes_per_job": (after["row_writes"] - before["row_writes"]) / jobs,
            "hot_update_pct": 100.0 * (after["hot_upd"] - before["hot_upd"]) / max(1, after["upd"] - before["upd"]),
            "pg_cpu_s_per_1000": 1000.0 * (after["pg_cpu"] - before["pg_cpu"]) / jobs,
            "machine_busy_cores": (after["busy"] - before["busy"]) / wall if wall > 0 else 0.0,
        }

    # -- scenarios -----------------------------------------------------------------------------------

    def s1(self, run: int) -> dict:
        n = self.sizes["S1"]
        tag = f"s1-{run}"
        self.reset_db()
        self.insert_jobs(n, "s1")
        mock = Mock(self, 0, tag)
        env = self.worker_env(mock, tag, UPPZY_POLL_INTERVAL_MS=10,
                              UPPZY_MAX_IN_FLIGHT=os.environ.get("BENCH_S1_MAX_IN_FLIGHT", "2000"))
        before = self.machine.snapshot()
        w = self.start_worker(env, tag, until_empty=True)
        rc = w.wait(timeout=900)
        time.sleep(0.3)  # the worker's backends exit and flush their statistics
        after = self.machine.snapshot()
        stats = mock.stats()
        mock_cpu = mock.stop()
        js = self.job_summary()
        self.check(rc == 0, f"S1 run {run}: worker exit code {rc}")
        self.check(js["completed"] == n, f"S1 run {run}: {js['completed']} of {n} jobs completed")
        self.check(stats.get("submits") == n and stats.get("duplicate_submissions") == 0,
                   f"S1 run {run}: mock saw {stats.get('submits')} submits, "
                   f"{stats.get('duplicate_submissions')} duplicates (want {n}, 0)")
        self.check(js["not_one_attempt"] == 0, f"S1 run {run}: {js['not_one_attempt']} jobs took more than one attempt")
        span = js["last_finished"] - js["first_submitted"]
        out = {
            "jobs": n,
            "jobs_per_s": n / span if span > 0 else 0.0,
            "wall_jobs_per_s": n / (w.t_exit - w.t_spawn),
            "worker_cpu_s_per_1000": 1000.0 * w.cpu_s() / n,
            "worker_peak_rss_mb": w.peak_rss_mb(),
            "mock_cpu_s_per_1000": 1000.0 * mock_cpu / n,
            "polls_per_job": stats.get("polls", 0) / n,
        }
        out.update(self.deltas(before, after, n))
        # Every job completed in one attempt (checked above), so its state writes are exactly 3 (claim,
        # accepted, completed); the only other UPDATE of chat_jobs on this path is the lease renewal.
        out["lease_renewal_writes_per_job"] = max(0.0, out["row_writes_per_job"] - 3.0)
        return out

    def s9(self, run: int) -> dict:
        """Issue 13: S1's jobs drained by 1, 2, 4 and 8 worker processes against one database."""
        n = self.sizes["S9"]
        out: dict = {"jobs": n}
        claimed_twice = 0
        fenced = 0
        for k in S9_WORKERS:
            tag = f"s9-{run}-w{k}"
            self.reset_db()
            self.insert_jobs(n, "s9")
            mock = Mock(self, 0, tag)
            before = self.machine.snapshot()
            workers = [self.start_worker(self.worker_env(mock, f"{tag}-{i}", UPPZY_POLL_INTERVAL_MS=10,
                                                         UPPZY_MAX_IN_FLIGHT=2000), f"{tag}-{i}", until_empty=True)
                       for i in range(k)]
            peak = {"connections": 0}
            done = threading.Event()

            def sample() -> None:
                s = Psql(self.db_url)
                try:
                    while not done.is_set():
                        # Client backends of the workers (the sampler's own connection excluded).
                        c = int(s.value("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"))
                        peak["connections"] = max(peak["connections"], c)
                        done.wait(0.05)
                finally:
                    s.close()

            t = threading.Thread(target=sample, daemon=True)
            t.start()
            rcs = [w.wait(timeout=900) for w in workers]
            done.set()
            t.join()
            time.sleep(0.3)
            after = self.machine.snapshot()
            stats = mock.stats()
            mock.stop()
            js = self.job_summary()
            self.check(all(rc == 0 for rc in rcs), f"S9 run {run}, {k} workers: exit codes {rcs}")
            self.check(js["completed"] == n, f"S9 run {run}, {k} workers: {js['completed']} of {n} jobs completed")
            twice = js["not_one_attempt"] + int(stats.get("duplicate_submissions") or 0)
            claimed_twice += twice
            self.check(twice == 0, f"S9 run {run}, {k} workers: {twice} jobs claimed twice")
            for w in workers:
                fenced += w.log_count("write_refused")
            span = js["last_finished"] - js["first_submitted"]
            d = self.deltas(before, after, n)
            out[f"w{k}_jobs_per_s"] = n / span if span > 0 else 0.0
            out[f"w{k}_pg_cpu_s_per_1000"] = d["pg_cpu_s_per_1000"]
            out[f"w{k}_wal_bytes_per_job"] = d["wal_bytes_per_job"]
            out[f"w{k}_connections_per_worker"] = peak["connections"] / k
            out[f"w{k}_machine_busy_cores"] = d["machine_busy_cores"]
        for k in S9_WORKERS:
            out[f"w{k}_ratio"] = out[f"w{k}_jobs_per_s"] / out["w1_jobs_per_s"] if out["w1_jobs_per_s"] else 0.0
        out["jobs_claimed_twice"] = claimed_twice
        out["writes_fenced"] = fenced
        return out

    def s2(self, run: int) -> dict:
        n = self.sizes["S2"]
        tag = f"s2-{run}"
        self.reset_db()
        self.insert_jobs(n, "s2")
        mock = Mock(self, 3000, tag)
        env = self.worker_env(mock, tag, UPPZY_MAX_IN_FLIGHT=20000)
        before = self.machine.snapshot()
        w = self.start_worker(env, tag, until_empty=True)
        peak = {"in_flight": 0, "rss": 0.0, "samples": 0}
        done = threading.Event()

        def sample() -> None:
            s = Psql(self.db_url)
            try:
                while not done.is_set():
                    c = int(s.value("SELECT count(*) FROM uppzy.chat_jobs WHERE state IN ('submitting', 'polling')"))
                    peak["in_flight"] = max(peak["in_flight"], c)
                    peak["rss"] = max(peak["rss"], rss_mb(w.pid))
                    peak["samples"] += 1
                    done.wait(0.1)
            finally:
                s.close()

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = w.wait(timeout=900)
        done.set()
        t.join()
        time.sleep(0.3)
        after = self.machine.snapshot()
        stats = mock.stats()
        mock.stop()
        js = self.job_summary()
        self.check(rc == 0, f"S2 run {run}: worker exit code {rc}")
        self.check(js["completed"] == n, f"S2 run {run}: {js['completed']} of {n} jobs completed")
        self.check(stats.get("duplicate_submissions") == 0, f"S2 run {run}: duplicate submissions")
        out = {
            "jobs": n,
            "drain_s": js["last_finished"] - w.t_spawn,
            "peak_in_flight": peak["in_flight"],
            "worker_peak_rss_mb": w.peak_rss_mb(),
            "worker_cpu_s": w.cpu_s(),
            "worker_cpu_s_per_1000": 1000.0 * w.cpu_s() / n,
            "polls_per_job": stats.get("polls", 0) / n,
            "in_flight_samples": peak["samples"],
        }
        d = self.deltas(before, after, n)
        out.update({k: d[k] for k in ("db_xacts_per_job", "row_writes_per_job", "machine_busy_cores")})
        return out

    def s8_mode(self, run: int, tls: bool) -> dict:
        """S2's jobs at a 100 ms round trip: plain HTTP/1.1 with the documented sizing, or TLS + HTTP/2."""
        n = self.sizes["S8"]
        mode = "h2" if tls else "h1"
        tag = f"s8-{mode}-{run}"
        self.reset_db()
        self.insert_jobs(n, "s8")
        mock = Mock(self, 3000, tag, ["--latency-ms", str(S8_ROUND_TRIP_MS), "--latency-fixed"])
        front = TlsFront(self, mock, http2=True, tag=tag) if tls else None
        settings = {"UPPZY_MAX_IN_FLIGHT": 20000}
        if front:
            settings["UPPZY_CA_FILE"] = front.ca_file
        else:
            settings["UPPZY_HTTP_MAX_CONNECTIONS"] = S8_H1_CONNECTIONS
        env = self.worker_env(mock, tag, **settings)
        if front:
            env["UPPZY_BASE_URL"] = front.base_url
        port = front.port if front else mock.port
        w = self.start_worker(env, tag, until_empty=True)
        peak = {"connections": 0}
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak["connections"] = max(peak["connections"], established(port))
                done.wait(0.1)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = w.wait(timeout=900)
        done.set()
        t.join()
        stats = mock.stats()
        if front:
            front.stop()
        mock.stop()
        js = self.job_summary()
        self.check(rc == 0, f"S8 {mode} run {run}: worker exit code {rc}")
        self.check(js["completed"] == n, f"S8 {mode} run {run}: {js['completed']} of {n} jobs completed")
        self.check(stats.get("duplicate_submissions") == 0, f"S8 {mode} run {run}: duplicate submissions")
        self.check(js["not_one_attempt"] == 0,
                   f"S8 {mode} run {run}: {js['not_one_attempt']} jobs took more than one attempt")
        drain = js["last_finished"] - w.t_spawn
        requests = stats.get("submits", 0) + stats.get("polls", 0)
        conns = max(1, peak["connections"])
        return {f"{mode}_drain_s": drain, f"{mode}_connections": peak["connections"],
                f"{mode}_requests_per_s": requests / drain if drain > 0 else 0.0,
                f"{mode}_requests_per_s_per_connection": requests / drain / conns if drain > 0 else 0.0,
                f"{mode}_worker_cpu_s": w.cpu_s()}

    def s8(self, run: int) -> dict:
        out = {"jobs": self.sizes["S8"], "round_trip_ms": S8_ROUND_TRIP_MS}
        out.update(self.s8_mode(run, tls=False))
        out.update(self.s8_mode(run, tls=True))
        return out

    def s7_mode(self, run: int, mode: str, budget: bool) -> dict:
        """One S7 worker run: `mode` is fixed or adaptive; `budget` holds the site to S7_BUDGET_PER_S.

        The database is not reset between S7's runs: the adaptive worker reads the answer times of the
        rows finished in the last 10 minutes at start-up (the fixed run's, just before it), so it starts
        warm. Only this run's rows (id above the previous maximum) are counted."""
        n = self.sizes["S7_budget" if budget else "S7"]
        tag = f"s7-{'budget-' if budget else ''}{mode}-{run}"
        base = int(psql_once(self.db_url, "SELECT coalesce(max(id), 0) FROM uppzy.chat_jobs")[0][0])
        # Under the budget a 429'd submission costs an attempt: room for 100, so that no job fails for
        # it and jobs/s stays comparable (with the shared budget 429s should be rare).
        self.insert_jobs(n, tag, max_attempts=100 if budget else None)
        # The shared budget (issue 10): the site's row says 50 requests/s, as the mock enforces; the
        # bucket starts fresh for every run. Without the budget the site has no limit.
        psql_once(self.db_url, "DELETE FROM uppzy.site_budgets")
        if budget:
            psql_once(self.db_url, f"""
                INSERT INTO uppzy.sites (site_id, requests_per_s, burst)
                VALUES ('bench', {S7_BUDGET_PER_S}, {S7_BUDGET_BURST})
                ON CONFLICT (site_id) DO UPDATE SET requests_per_s = EXCLUDED.requests_per_s,
                                                    burst = EXCLUDED.burst""")
        else:
            psql_once(self.db_url,
                      "UPDATE uppzy.sites SET requests_per_s = NULL, burst = NULL WHERE site_id = 'bench'")
        extra = ["--ready-dist", self.s7_dist, "--seed", str(S7_SEED)]
        if budget:
            extra += ["--rate-limit", f"bench={S7_BUDGET_PER_S}/s"]
        mock = Mock(self, 0, tag, extra)
        settings = {"UPPZY_POLL_MODE": mode, "UPPZY_MAX_IN_FLIGHT": S7_MAX_IN_FLIGHT}
        if budget:
            # With the defaults, 10 429s in a row open the circuit breaker: no submission for 30 s, and
            # jobs/s measures the breaker's cycles, not the calls a job costs. Off, the budget is the limit.
            settings["UPPZY_BREAKER_FAILURES"] = S7_BUDGET_BREAKER_FAILURES
        env = self.worker_env(mock, tag, **settings)
        warm = psql_once(self.db_url, f"""
            SELECT count(*), extract(epoch FROM now() - max(finished_at)) FROM uppzy.chat_jobs
            WHERE state = 'completed' AND finished_at > now() - interval '10 minutes' AND id <= {base}""")[0]
        w = self.start_worker(env, tag, until_empty=True)
        rc = w.wait(timeout=1800)
        stats = mock.stats()
        mock.stop()
        r = psql_once(self.db_url, f"""
            SELECT count(*), count(*) FILTER (WHERE state = 'completed'),
                   extract(epoch FROM min(submitted_at)), extract(epoch FROM max(finished_at)),
                   count(*) FILTER (WHERE errors::text LIKE '%poll_timeout%'),
                   coalesce(sum(attempts), 0),
                   extract(epoch FROM percentile_disc(0.1) WITHIN GROUP (ORDER BY finished_at)),
                   extract(epoch FROM percentile_disc(0.9) WITHIN GROUP (ORDER BY finished_at))
            FROM uppzy.chat_jobs WHERE id > {base}""")[0]
        rows, completed = int(r[0]), int(r[1])
        last_finished, poll_timeouts, attempts = float(r[3] or 0), int(r[4]), int(r[5])
        self.check(rc == 0, f"S7 {tag}: worker exit code {rc}")
        self.check(rows == n and completed == n, f"S7 {tag}: {completed} of {n} jobs completed")
        answers = stats.get("answers", {})
        site = stats.get("sites", {}).get("bench", {})
        # The plan the adaptive worker followed: its poll_plan_updated lines (the first one at start-up).
        plans = []
        for line in (self.tmp / f"worker-{tag}.log").read_text(errors="replace").splitlines():
            if "poll_plan_updated" in line:
                j = dict(re.findall(r"(\w+)=(\S*)", line))  # key=value text (or JSON: not parsed)
                plans.append({k: j[k] for k in ("answers", "median_answer_ms", "expected_calls",
                                                "expected_delay_ms", "first_poll_ms") if k in j})
        drain = last_finished - w.t_spawn
        polls = stats.get("polls", 0)
        out = {
            f"{mode}_jobs": n,
            f"{mode}_drain_s": drain,
            f"{mode}_jobs_per_s": completed / drain if drain > 0 else 0.0,
            # Every status call the mock answered (timed-out requests' calls included), per completed job.
            f"{mode}_calls_per_job": polls / max(1, completed),
            # The mock's own figure: the mean status calls of the requests it saw completed.
            f"{mode}_mock_calls_per_completed": float(answers.get("status_calls_per_completed", 0.0)),
            f"{mode}_delay_p50_s": answers.get("ready_to_seen_p50_ms", 0) / 1000.0,
            f"{mode}_delay_p95_s": answers.get("ready_to_seen_p95_ms", 0) / 1000.0,
            f"{mode}_delay_max_s": answers.get("ready_to_seen_max_ms", 0) / 1000.0,
            f"{mode}_answers_recorded": int(answers.get("completed", 0)),
            f"{mode}_poll_timeouts": poll_timeouts,
            f"{mode}_submits": stats.get("submits", 0),
            f"{mode}_worker_cpu_s": w.cpu_s(),
            f"{mode}_warm_rows": int(warm[0]),
            f"{mode}_warm_age_s": float(warm[1] or 0),
            f"{mode}_plan_updates": len(plans),
            f"{mode}_spawn_epoch": w.t_spawn,
            f"{mode}_last_finished_epoch": last_finished,
        }
        if plans:
            out[f"{mode}_plan_first"] = " ".join(f"{k}={v}" for k, v in plans[0].items())
            out[f"{mode}_plan_last"] = " ".join(f"{k}={v}" for k, v in plans[-1].items())
            if plans[0].get("median_answer_ms", "").isdigit():
                out[f"{mode}_start_median_answer_s"] = int(plans[0]["median_answer_ms"]) / 1000.0
        if budget:
            admitted, limited = site.get("requests", 0), site.get("rate_limited", 0)
            out[f"{mode}_rate_limited_pct"] = 100.0 * limited / max(1, admitted + limited)
            out[f"{mode}_admitted_per_s"] = admitted / drain if drain > 0 else 0.0
            out[f"{mode}_attempts_per_job"] = attempts / max(1, rows)
            t10, t90 = float(r[6] or 0), float(r[7] or 0)
            out[f"{mode}_mid80_jobs_per_s"] = 0.8 * n / (t90 - t10) if t90 > t10 else 0.0
        return {("budget_" if budget else "") + k: v for k, v in out.items()}

    def s7_warmup(self, run: int, what: str) -> int:
        """Fixed-mode jobs, not measured, just before an adaptive run: its start-up estimate is fitted from
        the newest 2,000 rows finished in the last 10 minutes (Maintenance::kAnswerSamples). After a bigger
        burst those are the burst's slowest answers (rows finish in answer-time order), so the estimate
        would start biased high; a whole batch of exactly that many is an unbiased sample."""
        n = self.sizes["S7_warmup"]
        if n <= 0:
            return 0
        tag = f"s7-warmup-{what}-{run}"
        base = int(psql_once(self.db_url, "SELECT coalesce(max(id), 0) FROM uppzy.chat_jobs")[0][0])
        self.insert_jobs(n, tag)
        mock = Mock(self, 0, tag, ["--ready-dist", self.s7_dist, "--seed", str(S7_SEED + 1)])
        w = self.start_worker(self.worker_env(mock, tag, UPPZY_POLL_MODE="fixed", UPPZY_MAX_IN_FLIGHT=S7_MAX_IN_FLIGHT),
                              tag, until_empty=True)
        rc = w.wait(timeout=1800)
        mock.stop()
        done = int(psql_once(self.db_url, f"SELECT count(*) FROM uppzy.chat_jobs WHERE id > {base} "
                                          f"AND state = 'completed'")[0][0])
        self.check(rc == 0 and done == n, f"S7 {tag}: exit code {rc}, {done} of {n} jobs completed")
        return n

    def s7(self, run: int) -> dict:
        out = {"jobs": self.sizes["S7"], "budget_jobs": self.sizes["S7_budget"], "dist": self.s7_dist,
               "seed": S7_SEED}
        # Other scenarios' rows (S2's and S8's 3 s answers, same site) would be in the adaptive worker's
        # 10-minute window: S7 starts from an empty table, and keeps its own rows from run to run.
        self.reset_db()
        # The fixed run first: it leaves its finished rows for the adaptive worker to start warm on.
        out.update(self.s7_mode(run, "fixed", budget=False))
        out["warmup_jobs"] = self.s7_warmup(run, "adaptive")
        out.update(self.s7_mode(run, "adaptive", budget=False))
        out["adaptive_started_after_fixed_s"] = out["adaptive_spawn_epoch"] - out["fixed_last_finished_epoch"]
        self.check(out["adaptive_started_after_fixed_s"] < 600,
                   f"S7 run {run}: the adaptive run started {out['adaptive_started_after_fixed_s']:.0f} s after the fixed "
                   f"run's last finish: its rows are out of the worker's 10-minute window")
        self.check(out["adaptive_warm_rows"] >= 50,
                   f"S7 run {run}: the adaptive worker had {out['adaptive_warm_rows']} finished rows of the last "
                   f"10 minutes to start from (want >= 50)")
        out.update(self.s7_mode(run, "fixed", budget=True))
        self.s7_warmup(run, "budget-adaptive")
        out.update(self.s7_mode(run, "adaptive", budget=True))
        f, a = out["fixed_calls_per_job"], out["adaptive_calls_per_job"]
        out["calls_saved_pct"] = 100.0 * (1 - a / f) if f else 0.0
        out["p50_delta_s"] = out["adaptive_delay_p50_s"] - out["fixed_delay_p50_s"]
        out["p95_delta_s"] = out["adaptive_delay_p95_s"] - out["fixed_delay_p95_s"]
        fb = out["budget_fixed_jobs_per_s"]
        out["budget_ratio"] = out["budget_adaptive_jobs_per_s"] / fb if fb else 0.0
        return out

    # -- S6: three sites, four workers ---------------------------------------------------------------

    def s6_counts(self) -> dict:
        """Jobs per site, scaled by BENCH_S6_SCALE (0.2 with --quick)."""
        scale = float(os.environ.get("BENCH_S6_SCALE") or (S6_QUICK_SCALE if self.a.quick else 1.0))
        return {site: max(1, round(jobs * scale)) for site, _, _, jobs in S6_SITES}

    def s6_workers(self, mock: Mock, tag: str, n: int, budget: bool, keys: pathlib.Path) -> list[tuple[Proc, int]]:
        """`n` workers serving the three sites (keys from `keys`), each with its /metrics on a port of its own."""
        out = []
        for i in range(1, n + 1):
            port = free_port()
            env = self.worker_env(mock, f"{tag}-w{i}", UPPZY_SITE_ID=S6_SITES[0][0], UPPZY_API_KEYS_DIR=keys,
                                  UPPZY_HTTP_ADDR=f"127.0.0.1:{port}", UPPZY_SHARED_BUDGET="on" if budget else "off",
                                  UPPZY_BREAKER_FAILURES=S6_BREAKER_FAILURES,
                                  # Stopped at the end of the window with jobs in flight: hand them back soon.
                                  UPPZY_SHUTDOWN_GRACE_MS=S6_SHUTDOWN_GRACE_MS)
            env.pop("UPPZY_API_KEY")  # the keys directory is the only source: one key per site
            out.append((self.start_worker(env, f"{tag}-w{i}", until_empty=False), port))
        deadline = time.time() + 30
        for w, port in out:
            while http_get(port, "/readyz") is None:
                if w.popen.poll() is not None or time.time() > deadline:
                    raise BenchError(f"S6 {tag}: a worker did not get ready; see {w.logf.name}")
                time.sleep(0.1)
        return out

    @staticmethod
    def s6_budget_statements(workers: list[tuple[Proc, int]]) -> float | None:
        """uppzy_budget_statements_total summed over the workers; None when no worker exports it."""
        total, seen = 0.0, False
        for _, port in workers:
            for m in re.finditer(r"^uppzy_budget_statements_total(?:\{[^}]*\})? (\S+)$", http_get(port, "/metrics") or "",
                                 re.M):  # one line per label set (e.g. grant, block): summed
                total += float(m.group(1))
                seen = True
        return total if seen else None

    def s6_run(self, run: int, mode: str, n_workers: int, budget: bool, only_c: bool = False) -> dict:
        """One S6 run: the sites' jobs inserted under `n_workers` running workers (A's first, then, S6_GAP_S
        later, B's and C's), measured for a fixed window after the last INSERT, then the workers stopped.
        `only_c`: C's jobs alone, measured until they have drained."""
        tag = f"s6-{mode}-{run}"
        counts = self.s6_counts()
        window = float(os.environ.get("BENCH_S6_SECONDS") or (S6_QUICK_SECONDS if self.a.quick else S6_SECONDS))
        self.reset_db()
        psql_once(self.db_url, "INSERT INTO uppzy.sites (site_id, requests_per_s, burst) VALUES " + ", ".join(
            f"('{site}', {rate if rate else 'NULL'}, {burst if burst else 'NULL'})" for site, rate, burst, _ in S6_SITES)
            + " ON CONFLICT (site_id) DO UPDATE SET requests_per_s = excluded.requests_per_s, burst = excluded.burst,"
              " max_in_flight = NULL, poll_interval_ms = NULL, poll_timeout_ms = NULL, paused_at = NULL,"
              " paused_reason = NULL")
        keys = self.tmp / f"keys-{tag}"
        shutil.rmtree(keys, ignore_errors=True)
        keys.mkdir(parents=True)
        extra = []
        for site, rate, burst, _ in S6_SITES:
            (keys / site).write_text(f"key-{site}\n")
            extra += ["--site", f"{site}=key-{site}"]
            if rate:
                extra += ["--rate-limit", f"{site}={rate}/s,{burst}"]
        mock = Mock(self, S6_READY_MS, tag, extra)
        workers = self.s6_workers(mock, tag, n_workers, budget, keys)
        st0 = mock.stats()
        stmts0 = self.s6_budget_statements(workers)
        t_start = time.time()
        ins = Psql(self.db_url)
        inserted = {}
        try:
            for site, _, _, _ in S6_SITES:
                if only_c and site != S6_SITES[2][0]:
                    continue
                if inserted and not only_c and site == S6_SITES[1][0]:
                    time.sleep(S6_GAP_S)  # A's backlog is claimed and in flight before B and C arrive
                ins.rows(f"""INSERT INTO uppzy.chat_jobs (session_id, message, site_id, max_attempts)
                             SELECT '{tag}-{site}-' || g, 'Question ' || g || ' for {site}: when do you open?',
                                    '{site}', {S6_MAX_ATTEMPTS}
                             FROM generate_series(1, {counts[site]}) g""")
                inserted[site] = counts[site]
            t0 = time.time()
            if only_c:  # until C has drained (at most the window)
                c = S6_SITES[2][0]
                while time.time() < t0 + max(window, 60):
                    if int(ins.value(f"SELECT count(*) FROM uppzy.chat_jobs WHERE site_id = '{c}' "
                                     f"AND state = 'completed'")) == counts[c]:
                        break
                    time.sleep(0.1)
            else:
                time.sleep(max(0.0, t0 + window - time.time()))
        finally:
            ins.close()
        t1 = time.time()
        st1 = mock.stats()
        stmts1 = self.s6_budget_statements(workers)
        for w, _ in workers:  # all at once: each one's shutdown grace runs alongside the others'
            os.kill(w.pid, signal.SIGTERM)
        for w, _ in workers:
            rc = w.wait(timeout=30)
            self.check(rc == 0, f"S6 {tag}: worker exit code {rc} ({w.logf.name})")
        mock.stop()
        self.check(st1.get("duplicate_submissions") == 0, f"S6 {tag}: the mock saw duplicate submissions")

        rows = psql_once(self.db_url, f"""
            SELECT site_id, count(*),
                   count(*) FILTER (WHERE state = 'completed' AND finished_at <= to_timestamp({t1})),
                   count(*) FILTER (WHERE state = 'failed'),
                   extract(epoch FROM min(created_at)),
                   extract(epoch FROM max(finished_at) FILTER (WHERE state = 'completed')),
                   coalesce(avg(polls) FILTER (WHERE state = 'completed'), 0),
                   extract(epoch FROM min(submitted_at) - min(created_at)),
                   extract(epoch FROM (array_agg(submitted_at - created_at ORDER BY id))[1]),
                   coalesce(sum(attempts), 0)
            FROM uppzy.chat_jobs GROUP BY site_id""")
        first = st1.get("sites_total", {}).get("first_second", 0)
        # The mock's seconds: sec0 the first whole one after t_start, sec1 the last whole one before t1.
        sec0 = st0.get("sites_total", {}).get("first_second", 0) + len(st0.get("sites_total", {}).get("per_second", []))
        sec1 = first + len(st1.get("sites_total", {}).get("per_second", [])) - 2
        out: dict = {"workers": n_workers, "window_s": t1 - t0, "seconds": max(0, sec1 - sec0 + 1)}
        requests = limited = 0
        for site, rate, burst, _ in S6_SITES:
            key = site[-1]  # a, b, c
            s0 = st0.get("sites", {}).get(site, {})
            s1 = st1.get("sites", {}).get(site, {})
            # p99 over the whole seconds; the max over every second the run touched (a partial second's count
            # is a real 1 s window of the mock's, only cut short), so that a run of a few seconds (C alone) has one.
            adm_all = s1.get("per_second", [])[max(0, sec0 - 1 - first):sec1 + 2 - first]
            lim_all = s1.get("rate_limited_per_second", [])[max(0, sec0 - 1 - first):sec1 + 2 - first]
            offered_all = [x + y for x, y in zip(adm_all, lim_all)]
            adm, offered = adm_all[1:-1], offered_all[1:-1]
            d_req = s1.get("requests", 0) - s0.get("requests", 0)
            d_lim = s1.get("rate_limited", 0) - s0.get("rate_limited", 0)
            requests += d_req
            limited += d_lim
            if site not in inserted:
                continue
            r = next((x for x in rows if x[0] == site), None)
            completed = int(r[2]) if r else 0
            drained = r is not None and completed == inserted[site] and r[5] != ""
            created = float(r[4]) if r and r[4] else t0
            end = float(r[5]) if drained else t1
            out.update({
                f"{key}_jobs": inserted[site],
                f"{key}_completed": completed,
                f"{key}_failed": int(r[3]) if r else 0,
                f"{key}_jobs_per_s": completed / (end - created) if end > created else 0.0,
                f"{key}_calls_per_job": float(r[6]) if r else 0.0,
                f"{key}_attempts_per_job": int(r[9]) / max(1, inserted[site]) if r else 0.0,
                f"{key}_admitted_max_per_s": max(adm_all, default=0),

                f"{key}_offered_max_per_s": max(offered_all, default=0),
                f"{key}_admitted_per_s": d_req / (t1 - t_start),
                f"{key}_rate_limited_pct": 100.0 * d_lim / max(1, d_req + d_lim),
            })
            if len(adm) >= S6_MIN_SECONDS_FOR_P99:  # not for C alone's two or three seconds
                out[f"{key}_admitted_p99_per_s"] = pct(sorted(adm), 99)
                out[f"{key}_offered_p99_per_s"] = pct(sorted(offered), 99)
            if rate:
                out[f"{key}_window_bound"] = rate * 1.1 + burst
                out[f"{key}_jobs_bound"] = 0.9 * rate / (1 + out[f"{key}_calls_per_job"])
            if drained:
                out[f"{key}_drain_s"] = end - created
            if r and r[7]:
                out[f"{key}_first_accepted_wait_s"] = float(r[7])
            elif key != "a":  # none accepted by the end: the wait is at least the whole run since its INSERT
                out[f"{key}_first_accepted_wait_s"] = t1 - created
                log(f"S6 {tag}: no job of {site} was accepted in the window")
            if r and r[8]:
                out[f"{key}_first_job_wait_s"] = float(r[8])
            self.check(out[f"{key}_failed"] == 0, f"S6 {tag}: {out[f'{key}_failed']} jobs of {site} failed")
        out["rate_limited_pct"] = 100.0 * limited / max(1, requests + limited)
        out["admitted_per_s"] = requests / (t1 - t_start)
        if stmts0 is not None and stmts1 is not None:
            out["budget_statements_per_s"] = (stmts1 - stmts0) / (t1 - t_start)
        return {f"{mode}_{k}": v for k, v in out.items()}

    def s6(self, run: int) -> dict:
        out = {"jobs": self.s6_counts()}
        out.update(self.s6_run(run, "before", S6_WORKERS, budget=False))
        out.update(self.s6_run(run, "after", S6_WORKERS, budget=True))
        out.update(self.s6_run(run, "one", 1, budget=True))
        out.update(self.s6_run(run, "alone", S6_WORKERS, budget=True, only_c=True))
        # Later scenarios see no S6 site rows (jobs without a site_id go to the default site anyway).
        self.reset_db()
        psql_once(self.db_url, "DELETE FROM uppzy.sites WHERE site_id IN ("
                               + ", ".join(f"'{site}'" for site, _, _, _ in S6_SITES) + ")")
        # The targets, each as a ratio to its bound (or the figure itself), so that TARGETS can judge them.
        for k in ("a", "b"):
            out[f"{k}_window_ratio"] = out.get(f"after_{k}_offered_max_per_s", 0) / out[f"after_{k}_window_bound"]
            out[f"{k}_jobs_ratio"] = (out.get(f"after_{k}_jobs_per_s", 0) / out[f"after_{k}_jobs_bound"]
                                      if out.get(f"after_{k}_jobs_bound") else 0.0)
        for k in ("b", "c"):
            if f"after_{k}_first_accepted_wait_s" in out:
                out[f"{k}_first_wait_s"] = out[f"after_{k}_first_accepted_wait_s"]
        if out.get("after_c_drain_s") and out.get("alone_c_drain_s"):
            out["c_drain_ratio"] = out["after_c_drain_s"] / out["alone_c_drain_s"]
        if out.get("one_admitted_per_s"):
            out["workers_rate_dev_pct"] = 100.0 * abs(out["after_admitted_per_s"] / out["one_admitted_per_s"] - 1)
        out["rate_limited_pct"] = out["after_rate_limited_pct"]
        return out

    def s3(self, run: int) -> dict:
        n = self.sizes["S3"]
        tag = f"s3-{run}"
        self.reset_db()
        mock = Mock(self, 0, tag)
        w = self.start_worker(self.worker_env(mock, tag), tag, until_empty=False)
        time.sleep(2.0)  # an idle worker: connected, listening, first fallback fetch done
        s = Psql(self.db_url)
        try:
            t0 = time.monotonic()
            for i in range(n):
                due = t0 + i / S3_RATE
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                s.rows(f"INSERT INTO uppzy.chat_jobs (session_id, message) "
                       f"VALUES ('s3-{i}', 'Latency question number {i}: do you ship abroad?')")
            deadline = time.time() + 60
            while time.time() < deadline:
                if int(s.value("SELECT count(*) FROM uppzy.chat_jobs WHERE state = 'completed'")) == n:
                    break
                time.sleep(0.25)
        finally:
            s.close()
        rc = w.stop()
        mock.stop()
        lat = [float(r[0]) for r in psql_once(self.db_url, """
            SELECT extract(epoch FROM submitted_at - created_at) * 1000 FROM uppzy.chat_jobs
            WHERE submitted_at IS NOT NULL ORDER BY id""")]
        self.check(rc == 0, f"S3 run {run}: worker exit code {rc}")
        self.check(len(lat) == n, f"S3 run {run}: {len(lat)} of {n} jobs submitted")
        lat.sort()
        return {"jobs": n, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": lat[-1] if lat else 0.0,
                "min_ms": lat[0] if lat else 0.0}

    def store_floor(self, n: int, prefix: str, what: str, long: bool = False) -> tuple[dict, dict]:
        """store_floor over n fresh jobs: (its JSON line, the machine deltas per job)."""
        self.reset_db()
        self.insert_jobs(n, prefix, long=long)
        before = self.machine.snapshot()
        r = subprocess.run([str(self.build / "store_floor"), "--database-url", self.db_url, "--batch", "500"],
                           capture_output=True, text=True, timeout=900)
        time.sleep(0.3)
        after = self.machine.snapshot()
        self.check(r.returncode == 0, f"{what}: store_floor exit {r.returncode}: {r.stderr.strip()}")
        res = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {"jobs": 0, "jobs_per_s": 0}
        self.check(res["jobs"] == n, f"{what}: {res['jobs']} of {n} jobs completed")
        return res, self.deltas(before, after, n)

    def s4(self, run: int) -> dict:
        n = self.sizes["S4"]
        res, d = self.store_floor(n, "s4", f"S4 run {run}")
        out = {"jobs": n, "jobs_per_s": res["jobs_per_s"], "transactions": res.get("claims", 0) + res.get("apply_calls", 0)}
        out.update(d)
        # The same with long questions (issue 13: every write used to read the whole message again).
        n_long = max(n // 4, 100)
        res, d = self.store_floor(n_long, "s4l", f"S4 long run {run}", long=True)
        out["long_jobs_per_s"] = res["jobs_per_s"]
        out["long_pg_cpu_s_per_1000"] = d["pg_cpu_s_per_1000"]
        out["long_wal_bytes_per_job"] = d["wal_bytes_per_job"]
        return out

    def idle(self, run: int) -> dict:
        window = self.sizes["idle_s"]
        warm = 3.0
        tag = f"idle-{run}"
        self.reset_db()
        mock = Mock(self, 0, tag)
        # Two lifetimes, short and long: their difference is the idle window without start and stop.
        xacts = []
        cpu_pct = 0.0
        for life in ("short", "long"):
            env = self.worker_env(mock, f"{tag}-{life}")
            before = self.machine.snapshot()
            w = self.start_worker(env, f"{tag}-{life}", until_empty=False)
            time.sleep(warm)
            if life == "long":
                a = read_stat(w.pid)
                t_a = time.monotonic()
                time.sleep(window)
                b = read_stat(w.pid)
                t_b = time.monotonic()
                cpu = (b["utime"] + b["stime"] - a["utime"] - a["stime"]) / CLK_TCK
                cpu_pct = 100.0 * cpu / (t_b - t_a)
            rc = w.stop()
            self.check(rc == 0, f"idle run {run}: worker exit code {rc}")
            time.sleep(0.3)
            after = self.machine.snapshot()
            xacts.append(after["xacts"] - before["xacts"] - 1)
        mock_calls = mock.stats().get("requests_total", 0)
        mock.stop()
        self.check(mock_calls == 0, f"idle run {run}: the idle worker made {mock_calls} calls to Uppzy")
        return {"window_s": window, "cpu_pct_of_core": cpu_pct,
                "db_xacts_per_s": (xacts[1] - xacts[0]) / window, "db_xacts_start_stop": xacts[0]}

    def s5(self) -> dict:
        minutes = int(os.environ.get("BENCH_SOAK_MINUTES", "1" if self.a.quick else "10"))
        rate = int(os.environ.get("BENCH_SOAK_RATE", "1000"))
        tag = "s5"
        self.reset_db()
        psql_once(self.db_url, "CHECKPOINT")
        mock = Mock(self, 1000, tag)
        # Each job stays about 1 to 1.5 s in flight (ready after 1 s, polled every 500 ms): room for several
        # seconds of load, so UPPZY_MAX_IN_FLIGHT (default 1,000) is not what limits the offered rate.
        env = self.worker_env(mock, tag, UPPZY_POLL_INTERVAL_MS=500,
                              UPPZY_MAX_IN_FLIGHT=os.environ.get("BENCH_SOAK_MAX_IN_FLIGHT", "5000"))
        w = self.start_worker(env, tag, until_empty=False)
        ins = Psql(self.db_url)
        mon = Psql(self.db_url)
        per_tick = max(1, rate // 10)
        minutes_out = []
        try:
            t0 = time.monotonic()
            tick = 0
            last_done = 0
            last_cpu = 0.0
            next_minute = t0 + 60
            while True:
                now = time.monotonic()
                if now >= next_minute:
                    r = mon.rows("""
                        SELECT count(*) FILTER (WHERE state = 'completed'),
                               count(*) FILTER (WHERE state IN ('queued', 'retrying')),
                               count(*) FILTER (WHERE state IN ('submitting', 'polling')),
                               count(*) FILTER (WHERE state = 'failed'), count(*),
                               pg_total_relation_size('uppzy.chat_jobs'), pg_indexes_size('uppzy.chat_jobs'),
                               pg_relation_size('uppzy.chat_jobs_claimable_idx'),
                               (SELECT n_dead_tup FROM pg_stat_user_tables
                                WHERE schemaname = 'uppzy' AND relname = 'chat_jobs')
                        FROM uppzy.chat_jobs""")[0]
                    st = read_stat(w.pid)
                    cpu = (st["utime"] + st["stime"]) / CLK_TCK
                    done_now = int(r[0])
                    m = {"minute": len(minutes_out) + 1, "completed_per_s": (done_now - last_done) / 60.0,
                         "backlog": int(r[1]), "in_flight": int(r[2]), "failed": int(r[3]),
                         "rows": int(r[4]), "table_total_mb": int(r[5]) / 2**20, "indexes_mb": int(r[6]) / 2**20,
                         "bytes_per_row": int(r[5]) / max(1, int(r[4])),
                         "claimable_idx_kb": int(r[7]) / 1024, "dead_tuples": int(r[8] or 0),
                         "worker_rss_mb": rss_mb(w.pid), "worker_cpu_pct": 100.0 * (cpu - last_cpu) / 60.0}
                    log(f"S5 minute {m['minute']}: {m['completed_per_s']:.0f} jobs/s, backlog {m['backlog']}, "
                        f"table {m['table_total_mb']:.1f} MB, indexes {m['indexes_mb']:.1f} MB")
                    minutes_out.append(m)
                    last_done, last_cpu = done_now, cpu
                    next_minute += 60
                    if len(minutes_out) >= minutes:
                        break
                due = t0 + tick * 0.1
                if due > now:
                    time.sleep(due - now)
                ins.rows(f"""INSERT INTO uppzy.chat_jobs (session_id, message)
                             SELECT 's5-{tick}-' || g, 'Soak question ' || g || ' of tick {tick}'
                             FROM generate_series(1, {per_tick}) g""")
                tick += 1
        finally:
            ins.close()
            mon.close()
        rc = w.stop()
        mock.stop()
        self.check(rc == 0, f"S5: worker exit code {rc}")
        offered = per_tick * 10
        # Minute 1 includes the ramp-up (the first jobs are still in flight): flatness looks at the rest.
        tput = [m["completed_per_s"] for m in minutes_out[1:]] or [m["completed_per_s"] for m in minutes_out]
        flat = bool(tput) and max(tput) <= 1.1 * min(tput)
        keeps_up = bool(tput) and min(tput) >= 0.9 * offered and minutes_out[-1]["backlog"] <= 2 * offered
        return {"offered_per_s": offered, "minutes": minutes_out, "throughput_flat": flat, "keeps_up": keeps_up,
                "claimable_idx_growth": (minutes_out[-1]["claimable_idx_kb"] / max(1e-9, minutes_out[0]["claimable_idx_kb"]))
                if minutes_out else 0.0}

    def profile(self) -> dict:
        n = int(os.environ.get("BENCH_PROFILE_JOBS", "2000"))
        tag = "profile"
        self.reset_db()
        self.insert_jobs(n, "prof")
        mock = Mock(self, 0, tag)
        env = self.worker_env(mock, tag, UPPZY_POLL_INTERVAL_MS=10, UPPZY_MAX_IN_FLIGHT=2000)
        prefix = self.tmp / "callgrind.out"
        for old in self.tmp.glob("callgrind.out*"):
            old.unlink()
        w = self.start_worker(env, tag, until_empty=True,
                              wrapper=["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                       f"--callgrind-out-file={prefix}.%p"])
        rc = w.wait(timeout=1800)
        mock.stop()
        self.check(rc == 0, f"profile: worker exit code {rc}")
        files = sorted(self.tmp.glob("callgrind.out.*"))
        report = [f"# callgrind of `uppzy-worker run --until-empty` on {n} S1 jobs (Release -O3 -g), "
                  f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}\n"]
        threads = []
        for f in files:
            ann = subprocess.run(["callgrind_annotate", "--threshold=99", str(f)], capture_output=True,
                                 text=True).stdout
            total = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", ann)
            ir = int(total.group(1).replace(",", "")) if total else 0
            if ir == 0:
                continue
            incl = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", str(f)],
                                  capture_output=True, text=True).stdout
            label = next((name for key, name in THREAD_NAMES if key in incl), "other")
            threads.append((f"{label} ({f.name})", ir))
            report.append(f"\n## {label} thread ({f.name}): {ir:,} instructions, {ir / n:,.0f} per job\n"
                          f"\n### self (exclusive)\n")
            report.append("\n".join(top_lines(ann, 30)))
            report.append("\n\n### inclusive\n")
            report.append("\n".join(top_lines(incl, 45)))
        all_ir = sum(ir for _, ir in threads)
        report.insert(1, "\nthreads (instructions, share): " + ", ".join(
            f"{name} {ir:,} ({100.0 * ir / max(1, all_ir):.1f}%)" for name, ir in threads) + "\n")
        out = self.root / "bench" / "results" / "profile.txt"
        out.write_text("".join(x if x.endswith("\n") else x + "\n" for x in report))
        log(f"profile written to {out.relative_to(self.root)}")
        return {"jobs": n, "instructions_per_job": all_ir / n,
                "threads": [{"file": f, "instructions": ir} for f, ir in threads]}


# Which thread a callgrind file belongs to, by a function only that thread runs (first match wins).
THREAD_NAMES = [("Engine::Run", "engine (HTTP)"), ("Coordinator::Run", "coordinator (SQL)"),
                ("ListenLoop", "listener"), ("Maintenance", "maintenance"), ("Deliver", "deliveries"),
                ("HealthServer", "health"), ("sigtimedwait", "signals")]


def top_lines(annotate_output: str, n: int) -> list[str]:
    lines = annotate_output.splitlines()
    for i, line in enumerate(lines):
        if "file:function" in line:
            body = [l for l in lines[i + 1:] if l.strip() and not l.startswith("-")]
            return [l[:200] for l in body[:n]]
    return []


def pct(sorted_vals: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_vals:
        return 0.0
    k = max(0, min(len(sorted_vals) - 1, int(-(-p * len(sorted_vals) // 100)) - 1))
    return sorted_vals[k]


def summarize(runs: list[dict]) -> dict:
    out = {}
    for key in runs[0]:
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if len(vals) == len(runs):
            out[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def machine_info() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    try:
        pg = subprocess.run(["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True,
                            text=True).stdout.strip()
    except OSError:
        pg = ""
    return {"cores": os.cpu_count(), "cpu_model": model, "memory_gb": round(mem_kb / 2**20, 1),
            "kernel": platform.release(), "postgres": pg, "load_average_at_start": os.getloadavg()}


# ---------------------------------------------------------------------------------------------------
# Output


def fmt(v: float, key: str) -> str:
    if isinstance(v, int) and not isinstance(v, bool):  # counts (a median of an odd number of runs stays one)
        return f"{v:,}"
    if key.endswith("poll_timeouts") or key.endswith("_jobs") or key.endswith("warm_rows"):
        return f"{v:,.0f}"
    if key in ("jobs_per_s", "wall_jobs_per_s", "peak_in_flight", "wal_bytes_per_job", "h1_requests_per_s",
               "h2_requests_per_s", "h1_connections", "h2_connections"):
        return f"{v:,.0f}"
    if key in ("h1_ratio_to_S2", "h2_ratio_to_S2"):
        return f"{v:.2f}×"
    if key == "ratio_to_S4" or (key.startswith("w") and key.endswith("_ratio")):
        return f"{100 * v:.0f}%"
    if key.endswith("_pct") or key == "cpu_pct_of_core" or key == "hot_update_pct":
        return f"{v:.2f}%" if v < 10 else f"{v:.0f}%"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}"


def verdict(summary: dict, key: str) -> tuple[str, str]:
    sc, metric, op, bound, text = TARGETS[key]
    m = summary.get(sc, {}).get(metric)
    if not m:
        return text, "not run"
    v = m["median"]
    ok = {">=": v >= bound, "<=": v <= bound, "<": v < bound}[op]
    if ok:
        return text, "met"
    renewals = summary.get(sc, {}).get("lease_renewal_writes_per_job")
    if key == "S1.row_writes_per_job" and renewals and v <= bound + renewals["median"] + 1e-9:
        return text, f"met (3 + {renewals['median']:.2f} lease renewals)"
    if op == ">=":
        return text, f"missed ({100 * (1 - v / bound):.0f}% short)"
    return text, f"missed ({v / bound:.1f}× the bound)" if bound else "missed"


ROWS = [
    # scenario, metric, label, target key (or None)
    ("S1", "jobs_per_s", "throughput, first accepted submission → last finish (jobs/s)", "S1.jobs_per_s"),
    ("S1", "ratio_to_S4", "S1 / S4", "S1.ratio_to_S4"),
    ("S1", "wall_jobs_per_s", "throughput, worker spawn → exit (jobs/s)", None),
    ("S1", "worker_cpu_s_per_1000", "worker CPU-s per 1,000 jobs", "S1.worker_cpu_s_per_1000"),
    ("S1", "worker_peak_rss_mb", "worker peak RSS (MB)", None),
    ("S1", "db_xacts_per_job", "database transactions per job", None),
    ("S1", "wal_bytes_per_job", "WAL bytes per job", None),
    ("S1", "row_writes_per_job", "row writes per job (chat_jobs n_tup_upd + n_tup_ins)", "S1.row_writes_per_job"),
    ("S1", "lease_renewal_writes_per_job", "of which lease renewals (writes beyond claim, accepted, completed)", None),
    ("S1", "hot_update_pct", "HOT updates (% of updates)", None),
    ("S1", "pg_cpu_s_per_1000", "PostgreSQL CPU-s per 1,000 jobs", None),
    ("S1", "mock_cpu_s_per_1000", "mock CPU-s per 1,000 jobs", None),
    ("S1", "machine_busy_cores", "whole machine busy (cores of 2, everything included)", None),
    ("S2", "drain_s", "drain time, worker spawn → last finish (s)", "S2.drain_s"),
    ("S2", "peak_in_flight", "peak jobs in flight (sampled every 100 ms)", None),
    ("S2", "worker_peak_rss_mb", "worker peak RSS (MB)", "S2.worker_peak_rss_mb"),
    ("S2", "worker_cpu_s", "worker CPU-s (whole run)", None),
    ("S2", "polls_per_job", "status polls per job", None),
    ("S2", "row_writes_per_job", "row writes per job", None),
    ("S3", "p50_ms", "INSERT → submission accepted, p50 (ms)", "S3.p50_ms"),
    ("S3", "p99_ms", "p99 (ms)", "S3.p99_ms"),
    ("S3", "max_ms", "max (ms)", None),
    ("S4", "jobs_per_s", "store alone, same statements, no HTTP (jobs/s)", None),
    ("S4", "db_xacts_per_job", "database transactions per job", None),
    ("S4", "wal_bytes_per_job", "WAL bytes per job", None),
    ("S4", "row_writes_per_job", "row writes per job", None),
    ("S4", "pg_cpu_s_per_1000", "PostgreSQL CPU-s per 1,000 jobs", None),
    ("S4", "long_jobs_per_s", "the same with 2,969-character questions, a quarter of the jobs (jobs/s)", None),
    ("S4", "long_pg_cpu_s_per_1000", "… PostgreSQL CPU-s per 1,000 jobs", None),
    ("S4", "long_wal_bytes_per_job", "… WAL bytes per job", None),
    ("idle", "cpu_pct_of_core", "idle worker CPU (% of one core)", "idle.cpu_pct_of_core"),
    ("idle", "db_xacts_per_s", "idle worker database transactions per second", "idle.db_xacts_per_s"),
    ("S9", "w1_jobs_per_s", "1 worker: throughput, first accepted submission → last finish (jobs/s)", None),
    ("S9", "w2_jobs_per_s", "2 workers: aggregate throughput (jobs/s)", None),
    ("S9", "w4_jobs_per_s", "4 workers: aggregate throughput (jobs/s)", None),
    ("S9", "w8_jobs_per_s", "8 workers: aggregate throughput (jobs/s)", None),
    ("S9", "w8_ratio", "8 workers / 1 worker", "S9.w8_ratio"),
    ("S9", "w1_pg_cpu_s_per_1000", "1 worker: PostgreSQL CPU-s per 1,000 jobs", None),
    ("S9", "w8_pg_cpu_s_per_1000", "8 workers: PostgreSQL CPU-s per 1,000 jobs", None),
    ("S9", "w8_machine_busy_cores", "8 workers: whole machine busy (cores of 2)", None),
    ("S9", "w8_connections_per_worker", "database connections per worker (peak, 8 workers)", None),
    ("S9", "jobs_claimed_twice", "jobs claimed twice (attempts > 1 or a second submission at the mock), every run", "S9.jobs_claimed_twice"),
    ("S9", "writes_fenced", "writes fenced (`write_refused`: another worker held the row), every run", None),
]


def generated_by(res: dict) -> str:
    """The opening of a scenario's own table: the command, when, the cores and the load average."""
    m = res["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["load_average_at_start"])
    la_end = ", ".join(f"{x:.2f}" for x in res.get("load_average_at_end", []))
    return (f"Generated by `{res['command']}` on {res['date']} (UTC), {m['cores']} cores, load average at start {la}"
            + (f", at the end {la_end}" if la_end else "") + ". ")


def median_cell(summary: dict, key: str, n_runs: int) -> str:
    """A table cell: the median, with the range when there was more than one run; empty when not measured."""
    v = summary.get(key)
    if not v:
        return ""
    if n_runs > 1:
        return f"{fmt(v['median'], key)} ({fmt(v['min'], key)} – {fmt(v['max'], key)})"
    return fmt(v["median"], key)


S8_ROWS = [
    # metric, label, target key (or None)
    ("h1_drain_s", f"plain HTTP/1.1, {S8_H1_CONNECTIONS:,} connections at most: drain, spawn → last finish (s)", None),
    ("h1_ratio_to_S2", "… / S2's drain in the same session", "S8.h1_ratio_to_S2"),
    ("h1_connections", "… connections used (peak, sampled every 100 ms)", None),
    ("h1_requests_per_s", "… requests/s (submits + polls over the drain)", None),
    ("h1_requests_per_s_per_connection", "… requests/s per connection", None),
    ("h2_drain_s", "TLS + HTTP/2 (nginx), default connections (16): drain (s)", None),
    ("h2_ratio_to_S2", "… / S2's drain in the same session", "S8.h2_ratio_to_S2"),
    ("h2_connections", "… connections used (peak)", None),
    ("h2_requests_per_s", "… requests/s", None),
    ("h2_requests_per_s_per_connection", "… requests/s per connection", None),
]


def render_s8(res: dict) -> str:
    s = res["summary"]
    m = res["machine"]
    la = ", ".join(f"{x:.2f}" for x in m["load_average_at_start"])
    s2 = s.get("S2", {}).get("drain_s")
    pg = f"`BENCH_PG_SET={','.join(res['pg_settings'])}` " if res.get("pg_settings") else ""
    lines = [f"Generated by {pg}`{res['command']}` on {res['date']} (UTC), {m['cores']} cores, load average at start "
             f"{la}. {res['sizes']['S8']:,} jobs answered after 3 s (S2), every answer delayed by "
             f"{S8_ROUND_TRIP_MS} ms; {res['runs']} run(s); medians with the range."
             + (f" S2 in the same session: {fmt(s2['median'], 'drain_s')} s." if s2 else " S2 was not run: no ratio."),
             ""]
    if res.get("quick"):
        lines += ["**Quick run (1/10 sizes): indicative only.**", ""]
    lines += ["| figure | median | range | target | verdict |", "|---|---|---|---|---|"]
    for metric, label, tkey in S8_ROWS:
        v = s.get("S8", {}).get(metric)
        if not v:
            continue
        rng = f"{fmt(v['min'], metric)} – {fmt(v['max'], metric)}" if res["runs"] > 1 else "(1 run)"
        target, verdict_text = verdict(s, tkey) if tkey else ("", "")
        lines.append(f"| {label} | {fmt(v['median'], metric)} | {rng} | {target} | {verdict_text} |")
    return "\n".join(lines) + "\n"

S7_ROWS = [
    # metric (prefixed fixed_/adaptive_), label, target key (or None)
    ("calls_per_job", "status calls per completed job (the mock's status calls / completed jobs)", "S7.calls_saved_pct"),
    ("mock_calls_per_completed", "… the mock's status_calls_per_completed (requests it saw completed)", None),
    ("delay_p50_s", "ready → first seen completed, p50 (s, the mock's records)", "S7.p50_delta_s"),
    ("delay_p95_s", "… p95 (s)", "S7.p95_delta_s"),
    ("delay_max_s", "… max (s)", None),
    ("drain_s", "drain, worker spawn → last finish (s)", None),
    ("start_median_answer_s", "median answer time the worker started with (first `poll_plan_updated`, s)", None),
    ("poll_timeouts", "jobs that hit the 45 s poll timeout (resubmitted)", None),
    ("worker_cpu_s", "worker CPU-s", None),
    ("budget_jobs_per_s", "under 50 requests/s: completed jobs/s, spawn → last finish", "S7.budget_ratio"),
    ("budget_mid80_jobs_per_s", "… jobs/s between the 10th and 90th percentile finish", None),
    ("budget_rate_limited_pct", "… 429 share of the requests (%)", None),
    ("budget_admitted_per_s", "… requests admitted per second", None),
    ("budget_calls_per_job", "… status calls per completed job", None),
    ("budget_attempts_per_job", "… submission attempts per job (a 429'd submission costs one)", None),
    ("budget_drain_s", "… drain (s)", None),
    ("budget_start_median_answer_s", "… median answer time the worker started with (s)", None),
]


def render_s7(res: dict) -> str:
    s = res["summary"].get("S7", {})
    run0 = res["scenarios"]["S7"]["runs"][0]
    n_runs = len(res["scenarios"]["S7"]["runs"])
    lines = [generated_by(res) +
             f"{run0['jobs']:,} jobs, answer times `--ready-dist {run0['dist']} --seed {run0['seed']}` on the mock, "
             f"default poll interval (2,500 ms), timeout (45,000 ms) and `UPPZY_POLL_TARGET_DELAY_MS` (1,450 ms), "
             f"`UPPZY_MAX_IN_FLIGHT={S7_MAX_IN_FLIGHT}`: fixed mode first, then adaptive mode on the same seed in the "
             f"same database, started {run0['adaptive_started_after_fixed_s']:.0f} s after the fixed run's last finish "
             f"({run0['adaptive_warm_age_s']:.0f} s after the last finish before it), "
             f"with {run0['adaptive_warm_rows']:,} rows finished in the last 10 minutes to start warm from"
             + (f" (a warm-up of {run0['warmup_jobs']:,} fixed-mode jobs, not measured, ran just before each adaptive "
                f"run: the worker fits its start-up estimate from the newest 2,000 finished rows, which after the "
                f"fixed run's burst would be its slowest answers)" if run0.get("warmup_jobs") else "")
             + ". Budget: "
             f"{run0['budget_jobs']:,} more jobs per mode with `--rate-limit bench={S7_BUDGET_PER_S}/s` on the mock "
             f"and the same limit as the site's shared budget (`uppzy.sites`: {S7_BUDGET_PER_S} requests/s, burst "
             f"{S7_BUDGET_BURST}; a fresh bucket per run), `max_attempts` 100 and "
             f"`UPPZY_BREAKER_FAILURES={S7_BUDGET_BREAKER_FAILURES}` (kept from before the budget, when 429s cost "
             f"attempts and opened the breaker). "
             f"{n_runs} run(s)" + ("; medians with the range." if n_runs > 1 else "."),
             ""]
    if res.get("quick"):
        lines += ["**Quick run (scaled down): indicative only; the targets are for the full size.**", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    lines += ["| figure | fixed | adaptive | target (adaptive) | verdict |", "|---|---|---|---|---|"]

    derived = {"S7.calls_saved_pct": ("calls_saved_pct", "{:.0f}% fewer"),
               "S7.p50_delta_s": ("p50_delta_s", "{:+.2f} s"), "S7.p95_delta_s": ("p95_delta_s", "{:+.2f} s"),
               "S7.budget_ratio": ("budget_ratio", "{:.2f}×")}
    for metric, label, tkey in S7_ROWS:
        if metric.startswith("budget_"):
            fk, ak = "budget_fixed_" + metric[7:], "budget_adaptive_" + metric[7:]
        else:
            fk, ak = "fixed_" + metric, "adaptive_" + metric
        if fk not in s and ak not in s:
            continue
        target, verdict_text = "", ""
        if tkey:
            target, verdict_text = verdict(res["summary"], tkey)
            dk, form = derived[tkey]
            if s.get(dk):
                verdict_text = f"{verdict_text}: {form.format(s[dk]['median'])}"
        lines.append(f"| {label} | {median_cell(s, fk, n_runs)} | {median_cell(s, ak, n_runs)} | {target} "
                     f"| {verdict_text} |")
    plan = run0.get("adaptive_plan_first")
    if plan:
        lines += ["", f"The adaptive worker's first `poll_plan_updated`: {plan}; "
                      f"{run0.get('adaptive_plan_updates', 0)} in the run."]
    return "\n".join(lines) + "\n"


def s6_rows() -> list[tuple[str, str, str | None]]:
    """S6's table: (metric without its run prefix, label, target key or None)."""
    rows = []
    for site, rate, burst, _ in S6_SITES:
        k = site[-1]
        name = f"{k.upper()} ({f'{rate} requests/s, burst {burst}' if rate else 'no limit'})"
        rows += [
            (f"{k}_offered_max_per_s", f"{name}: requests in a 1 s window (admitted + 429), max",
             f"S6.{k}_window_ratio" if rate else None),
            (f"{k}_offered_p99_per_s", "… p99", None),
            (f"{k}_admitted_max_per_s", "… admitted requests in a 1 s window, max", None),
            (f"{k}_admitted_p99_per_s", "… p99", None),
            (f"{k}_admitted_per_s", "… admitted requests/s (first INSERT → end)", None),
            (f"{k}_rate_limited_pct", "… 429 share of its requests", None),
            (f"{k}_jobs_per_s", "… completed jobs/s (its INSERT → end of window, or its last finish)",
             f"S6.{k}_jobs_ratio" if rate else None),
        ]
        if rate:
            rows.append((f"{k}_jobs_bound", "… bound: 90% × limit / (1 + status calls per job)", None))
        rows += [
            (f"{k}_completed", "… jobs completed in the window", None),
            (f"{k}_calls_per_job", "… status calls per completed job (`polls`: refused calls included)", None),
            (f"{k}_attempts_per_job", "… submission attempts per job", None),
        ]
        if k != "a":
            rows += [(f"{k}_first_accepted_wait_s", "… first accepted submission − its INSERT (s)",
                      f"S6.{k}_first_wait_s"),
                     (f"{k}_first_job_wait_s", "… its first job (lowest id): submitted_at − created_at (s)", None)]
        if k == "c":
            rows.append((f"{k}_drain_s", "… drain, INSERT → last finish (s)", "S6.c_drain_ratio"))
    rows += [
        ("rate_limited_pct", "all sites: 429 share of the requests", "S6.rate_limited_pct"),
        ("admitted_per_s", "all sites: admitted requests/s at the mock", "S6.workers_rate_dev_pct"),
        ("budget_statements_per_s", "database statements/s on the budget (`uppzy_budget_statements_total`, "
                                    "all workers)", None),
        ("window_s", "measured window after the last INSERT (s)", None),
    ]
    return rows


S6_RUNS = [("before", "4 workers, budget off"), ("after", "4 workers, budget on"), ("one", "1 worker, budget on"),
           ("alone", "C alone, 4 workers, budget on")]


def render_s6(res: dict) -> str:
    s = res["summary"].get("S6", {})
    run0 = res["scenarios"]["S6"]["runs"][0]
    n_runs = len(res["scenarios"]["S6"]["runs"])
    jobs = run0["jobs"]
    sites = "; ".join(f"{site[-1].upper()} `{site}`: {f'{rate} requests/s, burst {burst}' if rate else 'no limit'}, "
                      f"{jobs[site]:,} jobs" for site, rate, burst, _ in S6_SITES)
    lines = [generated_by(res) +
             f"Sites: {sites}. The mock enforces the limits (`--rate-limit SITE=N/s,BURST`, 429 + Retry-After "
             f"above), answers ready after {S6_READY_MS / 1000:g} s; the same limits are in `uppzy.sites` for the "
             f"workers. Each run starts the workers idle, inserts A's jobs, then {S6_GAP_S:g} s later B's and C's, "
             f"and stops the workers {fmt(run0['after_window_s'], 'window_s')} s after the last INSERT "
             f"(BENCH_S6_SECONDS); C alone runs until C has drained. Runs: before = 4 workers with "
             f"`UPPZY_SHARED_BUDGET=off`; after = 4 workers, budget on; 1 worker, budget on (same total rate at the "
             f"mock?); C alone (how fast C drains without A and B). `max_attempts` {S6_MAX_ATTEMPTS} and "
             f"`UPPZY_BREAKER_FAILURES={S6_BREAKER_FAILURES}` as in S7's budget runs. 1 s windows are the mock's "
             f"per-second counts (`/_mock/stats`): the max over every second of the run, the p99 over its whole "
             f"seconds. Targets are judged on the after run. "
             f"{n_runs} run(s)" + ("; medians with the range." if n_runs > 1 else "."),
             ""]
    if "after_budget_statements_per_s" not in s:
        lines += ["**The workers export no `uppzy_budget_statements_total`: this build has no shared budget, so the "
                  "budget-on runs behave as the before run.**", ""]
    if res.get("quick") or os.environ.get("BENCH_S6_SCALE") or os.environ.get("BENCH_S6_SECONDS"):
        lines += ["**Scaled-down run: indicative only; the targets are for the full size.**", ""]
    if res.get("note"):
        lines += [res["note"], ""]
    lines += ["| figure | " + " | ".join(label for _, label in S6_RUNS) + " | target (after) | verdict |",
              "|---|" + "---|" * len(S6_RUNS) + "---|---|"]

    derived = {"S6.a_window_ratio": "{:.2f}× the bound", "S6.b_window_ratio": "{:.2f}× the bound",
               "S6.a_jobs_ratio": "{:.2f}× the bound", "S6.b_jobs_ratio": "{:.2f}× the bound",
               "S6.c_drain_ratio": "{:.2f}× alone", "S6.workers_rate_dev_pct": "{:.1f}% apart"}
    for metric, label, tkey in s6_rows():
        if not any(f"{mode}_{metric}" in s for mode, _ in S6_RUNS):
            continue
        target, verdict_text = verdict(res["summary"], tkey) if tkey else ("", "")
        if tkey in derived and s.get(TARGETS[tkey][1]):
            # "met" or "missed", then the ratio itself (the verdict's own "(1.1× the bound)" would repeat it)
            verdict_text = f"{verdict_text.split(' (')[0]}: {derived[tkey].format(s[TARGETS[tkey][1]]['median'])}"
        lines.append(f"| {label} | " + " | ".join(median_cell(s, f"{mode}_{metric}", n_runs) for mode, _ in S6_RUNS)
                     + f" | {target} | {verdict_text} |")
    return "\n".join(lines) + "\n"


def render_markdown(res: dict) -> str:
    m = res["machine"]
    s = res["summary"]
    la = ", ".join(f"{x:.2f}" for x in m["load_average_at_start"])
    lines = [
        f"Generated by `{res['command']}` on {res['date']} (UTC). "
        f"Machine: {m['cores']} cores, {m['cpu_model']}, {m['memory_gb']} GB, Linux {m['kernel']}, "
        f"{m['postgres']}; load average at start {la}. "
        f"Sizes: S1 {res['sizes']['S1']:,}, S2 {res['sizes']['S2']:,}, S3 {res['sizes']['S3']:,}, "
        f"S4 {res['sizes']['S4']:,} jobs, idle window {res['sizes']['idle_s']} s; "
        f"{res['runs']} run(s) per scenario; each figure is the median, with the range (min – max).",
        "",
    ]
    if res.get("quick"):
        lines += ["**Quick run (1/10 sizes): the targets are for the full sizes; the verdicts are indicative "
                  "only.**", ""]
    if res.get("note"):  # --note TEXT
        lines += [res["note"], ""]
    lines += ["| scenario | figure | median | range | target | verdict |", "|---|---|---|---|---|---|"]
    for sc, metric, label, tkey in ROWS:
        v = s.get(sc, {}).get(metric)
        if not v:
            continue
        rng = f"{fmt(v['min'], metric)} – {fmt(v['max'], metric)}" if res["runs"] > 1 else "(1 run)"
        target, verdict_text = verdict(s, tkey) if tkey else ("", "")
        lines.append(f"| {sc} | {label} | {fmt(v['median'], metric)} | {rng} | {target} | {verdict_text} |")
    s5 = res.get("scenarios", {}).get("S5")
    if s5:
        lines += ["", f"S5 soak: {s5['offered_per_s']} jobs/s offered (inserted every 100 ms), mock ready after "
                      f"1 s, poll interval 500 ms. Throughput flat (minutes 2 on within 10%): "
                      f"**{'yes' if s5['throughput_flat'] else 'no'}**; keeps up with the offered load: "
                      f"**{'yes' if s5.get('keeps_up') else 'no'}**; "
                      f"claimable index last/first minute: {s5['claimable_idx_growth']:.2f}×.", "",
                  "| minute | completed/s | backlog | in flight | rows | table+indexes MB | bytes/row | indexes MB "
                  "| claimable idx KB | dead tuples | worker RSS MB | worker CPU % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in s5["minutes"]:
            lines.append(f"| {x['minute']} | {x['completed_per_s']:.0f} | {x['backlog']} | {x['in_flight']} | "
                         f"{x['rows']:,} | {x['table_total_mb']:.1f} | {x['bytes_per_row']:.0f} | {x['indexes_mb']:.1f} | {x['claimable_idx_kb']:.0f} | "
                         f"{x['dead_tuples']} | {x['worker_rss_mb']:.0f} | {x['worker_cpu_pct']:.1f} |")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench:begin: generated by scripts/bench; edits inside are overwritten -->"
END_MARK = "<!-- bench:end -->"


S7_BEGIN = "<!-- bench-s7:begin: generated by scripts/bench; edits inside are overwritten -->"
S7_END = "<!-- bench-s7:end -->"


# S7 on answer times other than the default lognormal (BENCH_S7_DIST) has a table of its own.
S7U_BEGIN = "<!-- bench-s7-other:begin: generated by scripts/bench; edits inside are overwritten -->"
S7U_END = "<!-- bench-s7-other:end -->"


S6_BEGIN = "<!-- bench-s6:begin: generated by scripts/bench; edits inside are overwritten -->"
S6_END = "<!-- bench-s6:end -->"


S8_BEGIN = "<!-- bench-s8:begin: generated by scripts/bench; edits inside are overwritten -->"
S8_END = "<!-- bench-s8:end -->"


def update_docs(root: pathlib.Path, body: str, begin: str = BEGIN, end: str = END_MARK,
                heading: str = "## Latest run of `scripts/bench`") -> None:
    path = root / "docs" / "benchmarks.md"
    text = path.read_text()
    block = begin + "\n" + body + end
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + heading + "\n\n" + block + "\n"
    path.write_text(text)


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True)
    p.add_argument("--build", required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--command-line", default="scripts/bench")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--soak", action="store_true")
    p.add_argument("--runs", type=int, default=0)
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--only", default="")
    p.add_argument("--out", default="")
    p.add_argument("--note", default="", help="a sentence printed above the table (e.g. how busy the machine was)")
    a = p.parse_args()
    if a.runs < 0:
        p.error("--runs must be positive")

    b = Bench(a)
    only = {x.strip().upper() for x in a.only.split(",") if x.strip()}
    wanted = [sc for sc in ("S4", "S1", "S9", "S2", "S3", "idle", "S8", "S7", "S6")
              if not only or sc.upper() in only]
    if a.quick and not only:  # S6 takes minutes even scaled down: not in the --quick set (CI), `--only S6` runs it
        wanted.remove("S6")
        wanted.remove("S9")  # eight workers at once: `--only S9` (or a full run) measures it
    if a.soak or "S5" in only:
        wanted.append("S5")
    results_dir = b.root / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    out_path = pathlib.Path(a.out) if a.out else results_dir / ("quick.json" if a.no_docs else "latest.json")
    if not a.out and not a.no_docs and wanted == ["S7"]:
        out_path = results_dir / "adaptive-polling.json"  # `--only S7` must not overwrite latest.json
    if not a.out and not a.no_docs and wanted == ["S6"]:
        out_path = results_dir / "sites.json"  # nor `--only S6`

    res = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "command": a.command_line,
           "machine": machine_info(), "quick": a.quick, "runs": b.runs, "sizes": b.sizes,
           "scenarios": {}, "summary": {}, "note": a.note}
    try:
        # BENCH_PG_SET="name=value,...": server settings for a diagnostic run (e.g. enable_nestloop=off),
        # applied with ALTER SYSTEM to the throwaway server and named in the results.
        for setting in filter(None, os.environ.get("BENCH_PG_SET", "").split(",")):
            name, _, value = setting.partition("=")
            if not re.fullmatch(r"[a-z_]+", name) or not re.fullmatch(r"[A-Za-z0-9_.]+", value):
                raise BenchError(f"BENCH_PG_SET: cannot use {setting!r}")
            psql_once(b.db_url, f"ALTER SYSTEM SET {name} = '{value}'")
            psql_once(b.db_url, "SELECT pg_reload_conf()")
            res["pg_settings"] = res.get("pg_settings", []) + [setting]
        r = subprocess.run([str(b.build / "uppzy-worker"), "migrate"],
                           env={**b.clean_env(), "DATABASE_URL": b.db_url}, capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError("uppzy-worker migrate failed:\n" + r.stdout + r.stderr)
        for sc in wanted:
            if sc == "S5":
                log("S5 soak: starting")
                res["scenarios"]["S5"] = b.s5()
                continue
            runs = []
            n_runs = b.runs_s7 if sc in ("S7", "S6") else b.runs
            for i in range(1, n_runs + 1):
                log(f"{sc} run {i}/{n_runs}")
                r1 = getattr(b, sc.lower())(i)
                log(f"{sc} run {i}: " + ", ".join(f"{k}={fmt(v, k) if isinstance(v, float) else v}"
                                                  for k, v in r1.items()))
                runs.append(r1)
            res["scenarios"][sc] = {"runs": runs}
            res["summary"][sc] = summarize(runs)
        if "S1" in res["summary"] and "S4" in res["summary"]:
            pairs = [x["jobs_per_s"] / y["jobs_per_s"] for x, y in
                     zip(res["scenarios"]["S1"]["runs"], res["scenarios"]["S4"]["runs"]) if y["jobs_per_s"]]
            ratio = res["summary"]["S1"]["jobs_per_s"]["median"] / res["summary"]["S4"]["jobs_per_s"]["median"]
            res["summary"]["S1"]["ratio_to_S4"] = {"median": ratio, "min": min(pairs), "max": max(pairs)}
        if "S8" in res["summary"] and "S2" in res["summary"]:
            s2 = res["summary"]["S2"]["drain_s"]["median"]
            for mode in ("h1", "h2"):
                vals = [r[f"{mode}_drain_s"] / s2 for r in res["scenarios"]["S8"]["runs"]]
                res["summary"]["S8"][f"{mode}_ratio_to_S2"] = {
                    "median": res["summary"]["S8"][f"{mode}_drain_s"]["median"] / s2, "min": min(vals), "max": max(vals)}
        if a.profile:
            log("profile: S1 under callgrind")
            res["profile"] = b.profile()
    except BenchError as e:
        b.failures.append(str(e))
        log(str(e))
    finally:
        for c in b.children:
            if c.rc is None:
                c.stop(timeout=15)
    res["load_average_at_end"] = os.getloadavg()
    res["verdicts"] = {k: dict(zip(("target", "verdict"), verdict(res["summary"], k))) for k in TARGETS}
    res["failures"] = b.failures
    res["ok"] = not b.failures
    out_path.write_text(json.dumps(res, indent=2) + "\n")
    log(f"results written to {out_path}")
    md = render_markdown(res)
    if any(sc in res["summary"] for sc in ("S1", "S2", "S3", "S4", "idle")) or "S5" in res["scenarios"]:
        print(md)
    # The scenarios with a table of their own: each run of one rewrites only its table.
    for sc, render, begin, end, heading in (
            ("S8", render_s8, S8_BEGIN, S8_END, "## S8: a 100 ms round trip"),
            ("S7", render_s7, S7_BEGIN, S7_END, "## S7: adaptive polling"),
            ("S6", render_s6, S6_BEGIN, S6_END, "## S6: three sites, four workers")):
        if sc == "S7" and sc in res["summary"] and not a.quick and b.s7_dist != S7_DIST:
            begin, end, heading = S7U_BEGIN, S7U_END, "## S7 on other answer times (`BENCH_S7_DIST`)"
        if sc in res["summary"]:
            body = render(res)
            print(body)
            if not a.no_docs:
                update_docs(b.root, body, begin, end, heading)
                log(f"docs/benchmarks.md updated ({sc})")
    # The main table is regenerated only by runs that include S1: `--only S2,S8` must not wipe it.
    if not a.no_docs and "S1" in res["summary"]:
        update_docs(b.root, md)
        log("docs/benchmarks.md updated")
    if b.failures:
        log(f"{len(b.failures)} check(s) failed:\n  " + "\n  ".join(b.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
