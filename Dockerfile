# redis-qa in the official Redis 7 image. Mirrors `make build`: a release build of the module
# (bindgen needs libclang; the semantic index's usearch is C++, built with g++), then
# redis-server with the repository's redis.conf (the module links libstdc++, which the Redis
# image has: apt needs it).
# Not built where this project is developed (no Docker engine there).

FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY tests ./tests
RUN cargo build --release --lib

FROM redis:7-bookworm
COPY --from=build /src/target/release/libredis_qa.so /usr/local/lib/redis/libredis_qa.so
COPY redis.conf /usr/local/etc/redis/redis.conf
# The image's config differs from make run's in three lines: the module path (make run
# passes it on the command line), listen on all interfaces inside the container, and keep
# data (the AOF) in the image's /data volume.
RUN sed -i \
      -e 's#^\# loadmodule .*#loadmodule /usr/local/lib/redis/libredis_qa.so#' \
      -e 's#^bind 127.0.0.1#bind 0.0.0.0#' \
      -e 's#^dir .*#dir /data#' \
      /usr/local/etc/redis/redis.conf
# Set the backend at run time: docker run -e QA_API_KEY=... redis-qa \
#   redis-server /usr/local/etc/redis/redis.conf --qa.backend-url https://api.openai.com/v1
CMD ["redis-server", "/usr/local/etc/redis/redis.conf"]
