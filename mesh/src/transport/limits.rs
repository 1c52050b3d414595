//! Caps on incoming connections: in total, and per source address (IPv6 per /64, what one host
//! usually holds), so that one host cannot take every place; and whether clients may connect
//! from beyond loopback. Loopback counts only toward the total: local processes (tests, a
//! co-located front end) are not one hostile host. Counting is plain data behind a mutex; a
//! [`Place`] gives its place back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::clients::ConnectionSettings;

/// Shared caps on incoming connections (as configured in [`ConnectionSettings`]), and the
/// connections counted against them.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    inner: Arc<Mutex<Counts>>,
    refused: Arc<std::sync::atomic::AtomicU64>,
    max_total: usize,
    max_per_address: usize,
    remote_clients: bool,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Place {
    inner: Arc<Mutex<Counts>>,
    address: IpAddr,
}

impl ConnectionLimits {
    /// Caps of `max_total` connections, `max_per_address` from one address; clients from
    /// beyond loopback only with `remote_clients`.
    pub fn new(max_total: usize, max_per_address: usize, remote_clients: bool) -> Self {
        Self {
            inner: Arc::default(),
            refused: Arc::default(),
            max_total,
            max_per_address,
            remote_clients,
        }
    }

    /// Caps as configured.
    pub fn from_settings(settings: ConnectionSettings) -> Self {
        Self::new(
            settings.max_total,
            settings.max_per_address,
            settings.remote_clients,
        )
    }

    /// A place for a connection from `address`, or `None` when a cap is reached.
    pub fn admit(&self, address: IpAddr) -> Option<Place> {
        let loopback = is_loopback(address);
        let address = source_key(address);
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let from_address = counts.per_address.get(&address).copied().unwrap_or(0);
        let capped = !loopback && from_address >= self.max_per_address;
        if counts.total >= self.max_total || capped {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        counts.total += 1;
        counts.per_address.insert(address, from_address + 1);
        Some(Place {
            inner: self.inner.clone(),
            address,
        })
    }

    /// Whether a client may connect from `address`.
    pub fn client_allowed(&self, address: IpAddr) -> bool {
        self.remote_clients || is_loopback(address)
    }

    /// Whether clients from beyond loopback are served (the HTTP door keeps the same promise).
    pub fn remote_clients(&self) -> bool {
        self.remote_clients
    }

    /// More than half the places are taken: new sources should prove their address first.
    pub fn under_pressure(&self) -> bool {
        self.open() * 2 >= self.max_total
    }

    /// Connections refused because a cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The cap on connections in total.
    pub fn max_total(&self) -> usize {
        self.max_total
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Whether `address` is loopback, IPv4-mapped loopback included.
pub(crate) fn is_loopback(address: IpAddr) -> bool {
    match address {
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

/// What counts as one source: an IPv4 address, or an IPv6 /64.
fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        IpAddr::V4(_) => address,
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut counts = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_per_address_and_in_total_and_places_come_back() {
        let limits = ConnectionLimits::new(3, 2, false);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.admit(a).expect("room");
        let _second = limits.admit(a).expect("room");
        assert!(limits.admit(a).is_none(), "per-address cap");
        let _third = limits.admit(b).expect("room");
        assert!(limits.admit(b).is_none(), "total cap");
        drop(first);
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.refused(), 2);
        assert!(limits.admit(a).is_some(), "a freed place is reusable");
    }

    #[test]
    fn an_ipv6_host_is_one_source_and_loopback_only_counts_toward_the_total() {
        let limits = ConnectionLimits::new(4, 1, false);
        let _one = limits
            .admit("2001:db8::1".parse().expect("ip"))
            .expect("room");
        assert!(
            limits.admit("2001:db8::2".parse().expect("ip")).is_none(),
            "same /64"
        );
        let _other = limits
            .admit("2001:db8:0:1::1".parse().expect("ip"))
            .expect("room");
        let _l1 = limits
            .admit("127.0.0.1".parse().expect("ip"))
            .expect("room");
        let _l2 = limits
            .admit("127.0.0.1".parse().expect("ip"))
            .expect("room");
        assert!(limits.under_pressure());
        assert!(
            limits.admit("127.0.0.1".parse().expect("ip")).is_none(),
            "total cap"
        );
    }

    #[test]
    fn clients_from_beyond_loopback_need_permission() {
        let local = ConnectionLimits::new(1, 1, false);
        assert!(local.client_allowed("127.0.0.1".parse().expect("ip")));
        assert!(local.client_allowed("::1".parse().expect("ip")));
        assert!(local.client_allowed("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!local.client_allowed("192.168.1.5".parse().expect("ip")));
        let open = ConnectionLimits::new(1, 1, true);
        assert!(open.client_allowed("192.168.1.5".parse().expect("ip")));
    }
}
