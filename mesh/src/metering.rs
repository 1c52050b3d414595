//! Neurons metering. Pure cores, no sockets and no clock (time is a parameter):
//!
//! - [`pricing`]: what a request costs, in fixed-point micro-Neurons, by its model's rule;
//! - [`usage`]: usage per account and UTC day as grow-only counters per node, merged from
//!   peers, and the quota decision with reservations;
//! - [`home`]: which node decides an account's quota (rendezvous hashing);
//!
//! and the durable [`ledger`] of every executed request (redb).
//!
//! Amounts are `u64` micro-Neurons everywhere they are stored or summed: no floating point.

pub mod home;
pub mod ledger;
pub mod pricing;
pub mod usage;

/// Unix time now, in seconds: the clock the actors read and pass to the pure cores.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Micro-Neurons in one Neuron.
pub const MICRO: u64 = 1_000_000;

/// Formats micro-Neurons as a decimal number of Neurons, exactly (`3.000001`).
pub fn neurons_text(micro: u64) -> String {
    let whole = micro / MICRO;
    let fraction = micro % MICRO;
    if fraction == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{}", format!("{fraction:06}").trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_exactly() {
        assert_eq!(neurons_text(3 * MICRO), "3");
        assert_eq!(neurons_text(3 * MICRO + 1), "3.000001");
        assert_eq!(neurons_text(2_457), "0.002457");
        assert_eq!(neurons_text(0), "0");
    }
}
