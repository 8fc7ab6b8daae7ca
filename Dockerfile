# Dockerfile: builds uppzy-worker and uppzy-mock on Debian 12 (bookworm) and ships them in a slim
# runtime image. docker-compose.yml runs the same image as `migrate`, `worker` and `mock`.
#
#   docker build -t uppzy-worker .
#   docker run --rm uppzy-worker uppzy-worker --help
#
# No Docker engine runs on the project's CI machines: tests/compose/check_compose.sh checks this file
# and docker-compose.yml statically.

# ---- build stage: the same -dev packages that scripts/install-deps installs (tests excluded) ----
FROM debian:12 AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      libpqxx-dev libpq-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev libspdlog-dev \
      libcpp-httplib-dev libcli11-dev libmicrohttpd-dev prometheus-cpp-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DUPPZY_BUILD_TESTS=OFF \
 && cmake --build /build -j2 --target uppzy-worker uppzy-mock \
 && strip /build/uppzy-worker /build/uppzy-mock

# ---- runtime stage: shared libraries only, plus curl for the compose healthcheck ----
FROM debian:12-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libpqxx-6.4 libcurl4 libspdlog1.10 libmicrohttpd12 libprometheus-cpp-core1.0 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin uppzy
COPY --from=build /build/uppzy-worker /build/uppzy-mock /usr/local/bin/
USER uppzy
# 9464: /metrics and /healthz of `uppzy-worker run` (UPPZY_HTTP_ADDR); 8080: uppzy-mock in compose.
EXPOSE 9464 8080
CMD ["uppzy-worker", "run"]
