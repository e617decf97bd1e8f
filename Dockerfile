# engram-store, built from source (multi-stage).
#
#   docker build -t engram-store .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v /srv/engram:/data engram-store
#
# The build stage compiles the server with the GPU tier (cudarc loads libcuda at run time, so no
# CUDA toolkit is needed to build; without a GPU, or without --gpu-budget, it is never loaded).
# Our own protos build with a vendored protoc; etcd-client (the cluster's etcd v3 client) needs
# the system's, hence protobuf-compiler in the build stage.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
ARG FEATURES=cuda
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --locked -p engram-store --features "${FEATURES}" \
 && install -D -m 0755 target/release/engram-store /out/engram-store

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin engram \
 && mkdir -p /data \
 && chown 10001:10001 /data
COPY --from=build /out/engram-store /usr/local/bin/engram-store
USER 10001
VOLUME /data
# gRPC, Prometheus /metrics
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/engram-store"]
CMD ["serve", "--data", "/data", "--listen", "0.0.0.0:50051", "--metrics-listen", "0.0.0.0:9090"]
