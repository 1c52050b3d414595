#!/usr/bin/env bash
# Run with: ./examples/edge-mesh.sh
# Builds the workspace (the same build as the tests) and runs examples/edge-mesh.rs: two edge
# nodes too small for the LLM, two regional nodes at different emulated distances, a client
# asking an edge node, and the route each answer took.
set -euo pipefail
cd "$(dirname "$0")/.."
# The same target folder as `cargo test` (./target unless CARGO_TARGET_DIR says otherwise), so
# the README's two commands share one build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --quiet --workspace --all-targets
exec "$CARGO_TARGET_DIR/debug/examples/edge-mesh"
