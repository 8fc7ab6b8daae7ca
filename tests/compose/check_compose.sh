#!/usr/bin/env bash
# check_compose.sh: static checks of docker-compose.yml, Dockerfile and deploy/prometheus.yml (no
# Docker engine runs in CI, so nothing is built or started).
#
# 1. `docker-compose -f docker-compose.yml config -q` when docker-compose is installed (syntax and
#    schema);
# 2. always, with python3-yaml: the services postgres, migrate, worker, mock and prometheus exist with
#    the commands, dependencies and healthchecks the deployment relies on, prometheus.yml scrapes
#    worker:9464, and the Dockerfile is a multi-stage Debian 12 build of both binaries.
# Exits non-zero with a message naming every problem.
set -euo pipefail

cd "$(dirname "$0")/../.."

status=0
if command -v docker-compose >/dev/null; then
  if docker-compose -f docker-compose.yml config -q; then
    echo "check_compose: docker-compose config: OK"
  else
    echo "check_compose: docker-compose config rejected docker-compose.yml" >&2
    status=1
  fi
else
  echo "check_compose: docker-compose not installed; structural checks only"
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "check_compose: python3-yaml is missing (run scripts/install-deps)" >&2
  exit 1
fi

python3 - <<'EOF' || status=1
import re
import sys

import yaml

problems = []


def need(cond, msg):
    if not cond:
        problems.append(msg)


def load(path):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        problems.append(f"{path}: {e}")
        return None


def command_of(svc):
    cmd = svc.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def env_of(svc):
    env = svc.get("environment", {}) or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
    return {k: (None if v is None else str(v)) for k, v in env.items()}


def depends_on(svc):
    dep = svc.get("depends_on", {}) or {}
    if isinstance(dep, list):
        return {d: "service_started" for d in dep}
    return {k: (v or {}).get("condition", "service_started") for k, v in dep.items()}


def healthcheck_text(svc):
    hc = svc.get("healthcheck")
    if not hc or hc.get("disable"):
        return None
    test = hc.get("test", [])
    return test if isinstance(test, str) else " ".join(str(t) for t in test)


compose = load("docker-compose.yml") or {}
if not isinstance(compose, dict):
    problems.append("docker-compose.yml: not a mapping")
    compose = {}
services = compose.get("services") or {}
for name in ("postgres", "migrate", "worker", "mock", "prometheus"):
    need(name in services, f"docker-compose.yml: service '{name}' is missing")

if "postgres" in services:
    pg = services["postgres"]
    need(str(pg.get("image", "")).startswith("postgres:15"), "postgres: image must be postgres:15")
    need("pg_isready" in (healthcheck_text(pg) or ""), "postgres: healthcheck must run pg_isready")

if "migrate" in services:
    m = services["migrate"]
    need(command_of(m)[-2:] == ["uppzy-worker", "migrate"], "migrate: command must be `uppzy-worker migrate`")
    need(depends_on(m).get("postgres") == "service_healthy", "migrate: must depend on postgres being healthy")
    need("DATABASE_URL" in env_of(m), "migrate: DATABASE_URL is not set")

if "worker" in services:
    w = services["worker"]
    env = env_of(w)
    need(command_of(w)[-2:] == ["uppzy-worker", "run"], "worker: command must be `uppzy-worker run`")
    need(depends_on(w).get("migrate") == "service_completed_successfully",
         "worker: must depend on migrate completing successfully")
    for var in ("DATABASE_URL", "UPPZY_BASE_URL", "UPPZY_SITE_ID", "UPPZY_HTTP_ADDR"):
        need(var in env, f"worker: {var} is not set")
    need(not ("UPPZY_API_KEY" in env and "UPPZY_API_KEY_FILE" in env),
         "worker: set at most one of UPPZY_API_KEY and UPPZY_API_KEY_FILE")
    need("UPPZY_API_KEY" in env or "UPPZY_API_KEY_FILE" in env or "UPPZY_API_KEYS_DIR" in env,
         "worker: set UPPZY_API_KEY, UPPZY_API_KEY_FILE or UPPZY_API_KEYS_DIR")
    keys_dir = env.get("UPPZY_API_KEYS_DIR")
    if keys_dir:
        mounts = [str(v) for v in (w.get("volumes") or [])]
        need(any(m.split(":")[1:2] == [keys_dir] for m in mounts),
             f"worker: UPPZY_API_KEYS_DIR={keys_dir} is not a mounted volume")
    base = env.get("UPPZY_BASE_URL") or ""
    need(base.startswith("http://mock:8080/"), "worker: UPPZY_BASE_URL must point at http://mock:8080/")
    if base.startswith("http://"):
        need(env.get("UPPZY_ALLOW_INSECURE_HTTP") == "1",
             "worker: an http:// UPPZY_BASE_URL to a non-loopback host needs UPPZY_ALLOW_INSECURE_HTTP=1")
    need((env.get("UPPZY_HTTP_ADDR") or "").endswith(":9464"), "worker: UPPZY_HTTP_ADDR must listen on :9464")
    hc = healthcheck_text(w) or ""
    need("curl" in hc and "9464/healthz" in hc, "worker: healthcheck must curl http://localhost:9464/healthz")

if "mock" in services:
    cmd = command_of(services["mock"])
    need(cmd[:1] == ["uppzy-mock"], "mock: command must run uppzy-mock")
    need("--host" in cmd and "0.0.0.0" in cmd, "mock: must listen on --host 0.0.0.0")
    need("--port" in cmd and "8080" in cmd, "mock: must listen on --port 8080")
    need("--api-key" in cmd, "mock: --api-key is not set")

if "prometheus" in services:
    p = services["prometheus"]
    need(str(p.get("image", "")).startswith("prom/prometheus"), "prometheus: image must be prom/prometheus")
    need(any("deploy/prometheus.yml" in str(v) for v in p.get("volumes", []) or []),
         "prometheus: must mount deploy/prometheus.yml")

prom = load("deploy/prometheus.yml") or {}
targets = [t for sc in prom.get("scrape_configs", []) or [] for s in sc.get("static_configs", []) or []
           for t in s.get("targets", []) or []]
need("worker:9464" in targets, "deploy/prometheus.yml: must scrape worker:9464")

try:
    with open("Dockerfile") as f:
        dockerfile = f.read()
except OSError as e:
    dockerfile = ""
    problems.append(f"Dockerfile: {e}")
froms = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M | re.I)
need(len(froms) >= 2, "Dockerfile: must be multi-stage (a build and a runtime stage)")
need(all(f.startswith("debian:12") or f.startswith("debian:bookworm") for f in froms),
     "Dockerfile: every stage must be debian:12 (bookworm)")
need("-DUPPZY_BUILD_TESTS=OFF" in dockerfile, "Dockerfile: build with -DUPPZY_BUILD_TESTS=OFF")
need("CMAKE_BUILD_TYPE=Release" in dockerfile, "Dockerfile: build with CMAKE_BUILD_TYPE=Release")
for binary in ("uppzy-worker", "uppzy-mock"):
    need(re.search(r"^COPY\s+--from=\S+.*" + binary, dockerfile, re.M) is not None,
         f"Dockerfile: the runtime stage must copy {binary}")
for lib in ("libpqxx-6.4", "libcurl4", "libspdlog1.10", "libmicrohttpd12", "libprometheus-cpp-core1.0",
            "ca-certificates", "curl"):
    need(re.search(r"(^|\s)" + re.escape(lib) + r"(\s|$)", dockerfile) is not None,
         f"Dockerfile: the runtime stage must install {lib}")

if problems:
    print("check_compose: FAILED", file=sys.stderr)
    for p in problems:
        print("  - " + p, file=sys.stderr)
    sys.exit(1)
print("check_compose: structure of docker-compose.yml, Dockerfile and deploy/prometheus.yml: OK")
EOF

exit "$status"
