//! Every environment variable the node reads, in one place.

/// The admin bearer token, used when neither the config file nor a flag gives one.
pub const ADMIN_TOKEN: &str = "GANGLION_ADMIN_TOKEN";

/// Tracing filter (read by the binary's subscriber).
pub const LOG_FILTER: &str = "RUST_LOG";

/// The admin token from the environment, if set and non-empty.
pub fn admin_token() -> Option<String> {
    std::env::var(ADMIN_TOKEN).ok().filter(|t| !t.is_empty())
}

/// The user's home folder, for default state locations.
pub fn home_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(Into::into)
}
