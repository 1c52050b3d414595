//! Waiting without sleeping for a fixed time: a condition is polled until it holds, within a
//! deadline.

use std::time::{Duration, Instant};

/// How often a condition is checked again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Polls `check` every 100 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Polls `check` every 100 ms for `period`, panicking the first time it fails: for what must
/// stay true, not merely become true.
pub async fn stays<F, Fut>(period: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < period {
        assert!(
            check().await,
            "stopped holding after {:?}: {what}",
            start.elapsed()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
