//! Calls to a node's admin endpoint from the command line (`ganglion-node revoke-key`).

use std::net::SocketAddr;
use std::time::Duration;

/// How long an admin call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminCallError {
    /// The node could not be reached or did not answer in time.
    #[error("cannot reach the admin endpoint at {addr}: {source}")]
    Unreachable {
        /// The admin address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The node answered with an error.
    #[error("the node refused ({status}): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// What it said.
        body: String,
    },
}

/// Revokes `key` (the key, or its id) through the admin endpoint at `addr`; returns the key id.
pub async fn revoke_key(
    addr: SocketAddr,
    token: &str,
    key: &str,
) -> Result<String, AdminCallError> {
    let unreachable = |source| AdminCallError::Unreachable { addr, source };
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/admin/keys/revoke"))
        .bearer_auth(token)
        .timeout(TIMEOUT)
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(AdminCallError::Refused {
            status: status.as_u16(),
            body: body.to_string(),
        });
    }
    Ok(body["kid"].as_str().unwrap_or_default().to_owned())
}

/// The ledger records of the node whose admin endpoint is at `addr`, filtered by `day`
/// (`YYYY-MM-DD`) and `account`.
pub async fn ledger(
    addr: SocketAddr,
    token: &str,
    day: Option<&str>,
    account: Option<&str>,
) -> Result<Vec<crate::metering::ledger::Record>, AdminCallError> {
    let unreachable = |source| AdminCallError::Unreachable { addr, source };
    let mut query = Vec::new();
    if let Some(day) = day {
        query.push(("day", day));
    }
    if let Some(account) = account {
        query.push(("account", account));
    }
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/admin/ledger"))
        .query(&query)
        .bearer_auth(token)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    if !status.is_success() {
        return Err(AdminCallError::Refused {
            status: status.as_u16(),
            body: response.text().await.unwrap_or_default(),
        });
    }
    response.json().await.map_err(unreachable)
}
