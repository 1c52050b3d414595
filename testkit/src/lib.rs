//! The one harness of Ganglion's cross-process tests, benchmarks and examples: real
//! `ganglion-node` processes on loopback, with OS-chosen ports.
//!
//! - [`Cluster`]: a scratch folder with a cluster CA; issues identities and API keys, starts
//!   nodes and connects clients to them.
//! - [`Node`]: a running node process, killed when dropped. Each node prints one JSON "ready"
//!   line on stdout once its sockets are bound; [`Node::start`] reads the actual addresses
//!   from it, within a deadline. Flags such as [`KEYS_REQUIRED`] change how it is started.
//! - [`eventually`] and [`stays`]: every wait polls a condition with a deadline; nothing
//!   sleeps for a fixed time.
//! - [`binary`], [`succeed`], [`output_within`], [`first_match`]: the workspace's binaries and
//!   the processes a test runs.
//! - [`LlamaServer`] and [`stream_chat`]: llama.cpp's own server, the reference of the serving
//!   benchmarks, a timed streaming OpenAI client for it and the node, and [`percentile`].
//! - [`UdpRelay`]: a socket of the test's own that a node can advertise, adding a delay and
//!   partitions between processes on one machine.
//! - `raw_quic` (feature `raw-quic`): QUIC endpoints built by hand, for tests that speak the
//!   wire protocol themselves.
//!
//! A dev-dependency only: the harness panics on anything unexpected, as tests do.

#![allow(clippy::unwrap_used)] // a harness panics on the unexpected, as the tests it serves

mod cluster;
mod llama_server;
mod models;
mod node;
mod poll;
mod process;
#[cfg(feature = "raw-quic")]
pub mod raw_quic;
mod relay;
mod tools;

pub use cluster::Cluster;
pub use llama_server::{
    LlamaServer, Streamed, llama_cpp_tools, percentile, smollm2_q8_0, stream_chat,
};
pub use models::{
    LONG_STORY, MINILM, QWEN_05B, SMOLLM2, ensure_models, running_generation, system_prompt,
};
pub use node::{KEYS_REQUIRED, NO_ADMIN_TOKEN, Node, QUIET, TOKEN, WITH_CACHE, names};
pub use poll::{eventually, stays};
pub use process::{binary, cli_binary, first_match, output_within, succeed};
pub use relay::UdpRelay;
pub use tools::{chromium, npm_package};
