#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: first what the build and the browser test need
# (cmake and libclang for llama.cpp, Debian's chromium; installed only when missing, as root),
# then every test of the workspace. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-build-deps.sh
./scripts/install-chromium.sh
cargo test --workspace "$@"
