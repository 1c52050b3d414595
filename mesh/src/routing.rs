//! Where a request runs: pure placement logic (no sockets, no clock), so it can be tested
//! exhaustively and simulated over thousands of virtual peers.
//!
//! - [`placement`]: scores peers that host a model by RTT, expected queue wait and health, and
//!   ranks the candidates a request may be handed to, never a node already on its path.
//! - [`rendezvous`]: which member owns a key (account homes, cache shards, prefixes).
//! - [`prefix`]: a request's prefix, the prefixes a host holds, and what holding one saves.

pub mod placement;
pub mod prefix;
pub mod rendezvous;
