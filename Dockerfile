# The TrueValue host with its shipped components and policies.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release -p truevalue \
 && cargo build --profile component --target wasm32-wasip2 \
      -p hello -p auth -p org -p permission -p audit -p analytics \
 && mkdir -p dist/components \
 && for name in hello auth org permission audit analytics; do \
      cp "target/wasm32-wasip2/component/$name.wasm" dist/components/; done

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /var/lib/truevalue truevalue
WORKDIR /opt/truevalue
COPY --from=build /src/target/release/truevalue /usr/local/bin/truevalue
COPY --from=build /src/dist/components dist/components
COPY policies policies
RUN mkdir -p /var/lib/truevalue && chown truevalue /var/lib/truevalue
USER truevalue
EXPOSE 8000 8010
ENTRYPOINT ["truevalue", "serve", "--listen", "0.0.0.0:8000", "--admin-listen", "0.0.0.0:8010", "--data-dir", "/var/lib/truevalue"]
