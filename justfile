# TrueValue tasks. `just run` starts the platform; `just test` runs every test.

set shell := ["bash", "-euo", "pipefail", "-c"]

target := env("CARGO_TARGET_DIR", "target")

# First-party components (components/), the Rust example plugin (examples/contacts-rust) and
# the test fixtures (tests/components/).
components := "hello auth org permission audit analytics contacts"
fixtures := "greeter hostile data_thief attacker bad_migration vault hog sql_console db_hog relay mailer http_hello publisher outbound"

default:
    @just --list

# Build the release host (debug info stripped) and every component. The git commit, when there
# is one, becomes the `commit` label of `truevalue_build_info`.
build: components
    TRUEVALUE_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)" cargo build --release -p truevalue

# The release host with its line tables kept (same code, ~4.7x larger): for a debugger, `perf`,
# or `addr2line -e` on an address from the shipped binary of the same commit.
build-debug:
    TRUEVALUE_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || true)" CARGO_PROFILE_RELEASE_STRIP=none cargo build --release -p truevalue

# Build every component for wasm32-wasip2 into dist/components/.
components:
    rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
    mkdir -p dist/components
    cargo build --profile component --target wasm32-wasip2 {{ prepend("-p ", components) }} {{ prepend("-p ", fixtures) }}
    for name in {{ components }} {{ fixtures }}; do cp "{{ target }}/wasm32-wasip2/component/$name.wasm" dist/components/; done
    cargo build --profile component --target wasm32-wasip2 -p greeter --features v2
    cp {{ target }}/wasm32-wasip2/component/greeter.wasm dist/components/greeter_v2.wasm
    cargo build --profile component --target wasm32-wasip2 -p hostile --features backfill
    cp {{ target }}/wasm32-wasip2/component/hostile.wasm dist/components/hostile_backfill.wasm

# The example plugins, built from source with their languages' toolchains, as plugin authors
# build them: Python with componentize-py (`pip install componentize-py`), JavaScript with
# componentize-js (from npm, pinned in sdk/js/package-lock.json).
plugins:
    mkdir -p dist/components
    componentize-py -d wit -w plugin componentize app -p examples/contacts-python -p sdk/python -o dist/components/contacts_py.wasm
    componentize-py -d wit -w plugin componentize app -p tests/plugins/wasi_py -p sdk/python -o dist/components/wasi_py.wasm
    test sdk/js/node_modules/.package-lock.json -nt sdk/js/package-lock.json || npm ci --prefix sdk/js --silent --no-audit --no-fund
    node sdk/js/build.mjs examples/contacts-js/app.js dist/components/contacts_js.wasm

# Start the whole platform on the embedded default (SQLite files, in-memory cache).
run: build
    {{ target }}/release/truevalue serve

# Every test: unit tests, and black-box tests of the real binary (SQLite and PostgreSQL).
test: components plugins
    cargo test --release -p truevalue -p truevalue-sdk -p auth -p org -p permission -p audit -p analytics

# Gateway + Wasm against a native handler, instantiate + call, logins against raw Argon2id, the
# members list (org + auth + permission) against the same SQL run natively, fairness, events,
# and the example plugin in Rust, Python and JavaScript against a native handler.
bench: components plugins
    cargo bench -p truevalue --bench hello --bench auth --bench members --bench fairness --bench events --bench plugins

# Formatting and lints, as CI expects them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --target wasm32-wasip2 -p truevalue-sdk -p hello -p auth -p org -p permission -p audit -p analytics -p contacts -- -D warnings

# Start Postgres 16, Redis 7, Kafka and the host in containers.
up:
    docker compose up --build
