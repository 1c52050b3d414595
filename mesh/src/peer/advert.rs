//! `Advert` streams: what a node tells every peer about itself, once per advert interval, on a
//! unidirectional stream of the peer connection. An advert is filed under the certificate of
//! the connection it came on, and only after every field was checked against its bounds
//! ([`PeerAdvert::check`]); the directory ([`crate::actors::peer_directory`]) sends and files
//! them.

use std::net::SocketAddr;

use ganglion_client::protocol::{MAX_OPEN_FRAME_LEN, model_id_ok, node_name_ok};
use ganglion_client::{PeerStreamKind, read_frame, write_frame};
use serde::{Deserialize, Serialize};

use super::PeerError;
use crate::credentials::revoked::{self, MAX_RECENT};
use crate::facts::ModelState;
use crate::hardware::Hardware;
pub use crate::membership::ModelLoad;
use crate::membership::view::Gossip;
use crate::routing::placement::MAX_SERVICE_TIME;

/// Bound on an encoded advert; a larger one is refused on arrival. Every list in an advert is
/// bounded by the design (samples, the catalog, the accounts window), never by the mesh's size,
/// and their bounds together fit within it (about 150 KiB at most; a usual advert is well under
/// 1 KiB).
pub const MAX_ADVERT_LEN: usize = 256 * 1024;
/// Most models an advert may list.
pub const MAX_ADVERT_MODELS: usize = 64;
/// Most accounts whose usage an advert may carry.
pub const MAX_ADVERT_ACCOUNTS: usize = 256;
/// Most accelerators an advert may list, and the longest name of one.
const MAX_ACCELERATORS: usize = 16;
const MAX_ACCELERATOR_NAME: usize = 128;

/// What a node tells every peer about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerAdvert {
    /// The sender's name.
    pub name: String,
    /// The address peers should dial.
    pub addr: SocketAddr,
    /// Its region, gateway role, samples of the members and gateways it knows, and (from a
    /// gateway) its region's summary.
    pub membership: Gossip,
    /// The models the sender was configured to host, each with its live state.
    pub models: Vec<AdvertisedModel>,
    /// The sender's hardware.
    pub hardware: Hardware,
    /// Load of each hosted model, at most one advert interval old.
    pub loads: Vec<ModelLoad>,
    /// The sender's set of revoked API keys, summarised (a grow-only set: every node adds
    /// what it hears and pulls what it lacks, so a revocation reaches every live node and any
    /// that joins later).
    pub revoked: revoked::Summary,
    /// The sender's own usage totals per account, today (grow-only counters).
    pub usage: Vec<crate::metering::usage::NodeUsage>,
}

/// A model in an advert, with its live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertisedModel {
    /// Catalog id.
    pub id: String,
    /// Whether it serves now.
    pub state: ModelState,
}

/// Why an advert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdvertRefused {
    /// It names a node other than the certificate of the connection it came on.
    #[error("advert claims to be from `{claimed}` but arrived on the connection of `{peer}`")]
    WrongSender {
        /// The name in the advert.
        claimed: String,
        /// The certificate's name.
        peer: String,
    },
    /// A field is out of bounds.
    #[error("advert field `{0}` is out of bounds")]
    OutOfBounds(&'static str),
}

impl PeerAdvert {
    /// Checks that the advert is `peer`'s own and that every field is within its bounds.
    pub fn check(&self, peer: &str) -> Result<(), AdvertRefused> {
        let bad = |field| Err(AdvertRefused::OutOfBounds(field));
        if self.name != peer {
            return Err(AdvertRefused::WrongSender {
                claimed: self.name.clone(),
                peer: peer.to_owned(),
            });
        }
        // A node listening on a wildcard address without `--advertise` advertises it as is; its
        // peers then dial the address its packets come from (see `Entry::address`).
        if self.addr.port() == 0 || self.addr.ip().is_multicast() {
            return bad("addr");
        }
        let g = &self.membership;
        if !g.within_bounds(node_name_ok, model_id_ok)
            || g.peers
                .iter()
                .chain(g.gateways.iter().map(|c| &c.gateway))
                .any(|p| !dialable(p.addr))
        {
            return bad("membership");
        }
        if self.models.len() > MAX_ADVERT_MODELS || self.models.iter().any(|m| !model_id_ok(&m.id))
        {
            return bad("models");
        }
        let max_ms = MAX_SERVICE_TIME.as_secs_f64() * 1000.0;
        if self.loads.len() > MAX_ADVERT_MODELS
            || self.loads.iter().any(|l| {
                !model_id_ok(&l.model)
                    || l.warm.len() > crate::routing::prefix::WARM_PREFIXES
                    || !l.service_ms.is_finite()
                    || !(0.0..=max_ms).contains(&l.service_ms)
            })
        {
            return bad("loads");
        }
        if self.revoked.recent.len() > MAX_RECENT {
            return bad("revoked");
        }
        if self.usage.len() > MAX_ADVERT_ACCOUNTS {
            return bad("usage");
        }
        let h = &self.hardware;
        if h.accelerators.len() > MAX_ACCELERATORS
            || h.accelerators
                .iter()
                .any(|a| a.len() > MAX_ACCELERATOR_NAME)
        {
            return bad("hardware.accelerators");
        }
        Ok(())
    }

    /// Drops usage records that name no valid account (one bad record costs itself, not the
    /// advert); returns how many were dropped.
    pub fn drop_bad_records(&mut self) -> usize {
        let before = self.usage.len();
        self.usage
            .retain(|u| ganglion_client::protocol::account_name_ok(&u.account));
        before - self.usage.len()
    }

    /// The load of every model the sender serves now (a served model it gave no load for
    /// counts as idle with one slot).
    pub fn serving_loads(&self) -> Vec<ModelLoad> {
        self.serving()
            .map(|model| {
                self.loads
                    .iter()
                    .find(|l| l.model == model)
                    .cloned()
                    .unwrap_or_else(|| ModelLoad::idle(model))
            })
            .collect()
    }

    /// Ids of the models the sender serves now.
    pub fn serving(&self) -> impl Iterator<Item = &str> {
        self.models
            .iter()
            .filter(|m| m.state == ModelState::Hosted)
            .map(|m| m.id.as_str())
    }
}

/// An address worth dialing: a concrete unicast address with a port.
fn dialable(addr: SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, std::net::IpAddr::V4(v4) if v4.is_broadcast())
}

/// Sends one encoded advert (see [`encode`]) on a fresh unidirectional stream.
pub async fn send(connection: &quinn::Connection, frame: &[u8]) -> Result<(), PeerError> {
    let mut stream = connection.open_uni().await?;
    write_frame(&mut stream, &PeerStreamKind::Advert, MAX_OPEN_FRAME_LEN).await?;
    stream.write_all(frame).await.map_err(PeerError::Write)?;
    stream.finish().map_err(|_| PeerError::Ended)
}

/// An advert as it goes on the wire, encoded once for every peer.
pub fn encode(advert: &PeerAdvert) -> Result<Vec<u8>, ganglion_client::FrameError> {
    ganglion_client::codec::encode(advert, MAX_ADVERT_LEN)
}

/// Reads the advert a unidirectional stream carries (its opening frame, then the advert),
/// unchecked: the caller checks it against the connection's certificate.
pub async fn receive(recv: &mut quinn::RecvStream) -> Result<PeerAdvert, PeerError> {
    match read_frame::<_, PeerStreamKind>(recv, MAX_OPEN_FRAME_LEN).await? {
        Some(PeerStreamKind::Advert) => {}
        Some(_) => return Err(PeerError::Unexpected("not an advert stream")),
        None => return Err(PeerError::Ended),
    }
    read_frame::<_, PeerAdvert>(recv, MAX_ADVERT_LEN)
        .await?
        .ok_or(PeerError::Ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::api_keys::MAX_ACCOUNT_LEN;
    use crate::credentials::revoked::KeyId;
    use crate::membership::KnownPeer;
    use crate::membership::regions::{MAX_SUMMARY_MODELS, RegionModel, RegionSummary};
    use crate::membership::view::{MAX_ELSEWHERE, MAX_SAMPLE};
    use ganglion_client::protocol::{MAX_MODEL_ID_BYTES, MAX_NODE_NAME_BYTES};

    fn advert() -> PeerAdvert {
        PeerAdvert {
            name: "a".into(),
            addr: "127.0.0.1:7400".parse().expect("addr"),
            membership: Gossip {
                region: "eu".into(),
                gateway: true,
                region_size: 2,
                peers: vec![KnownPeer {
                    name: "b".into(),
                    addr: "127.0.0.1:7401".parse().expect("addr"),
                    region: "eu".into(),
                }],
                gateways: Vec::new(),
                summary: None,
                elsewhere: Vec::new(),
            },
            models: vec![AdvertisedModel {
                id: "@ganglion/all-minilm-l6-v2".into(),
                state: ModelState::Hosted,
            }],
            hardware: Hardware {
                cores: 2,
                memory_total: 8 << 30,
                memory_available: 6 << 30,
                memory_limit: None,
                accelerators: Vec::new(),
            },
            loads: vec![ModelLoad {
                model: "@ganglion/all-minilm-l6-v2".into(),
                queued: 1,
                in_flight: 2,
                concurrency: 2,
                service_ms: 12.5,
                warm: Vec::new(),
            }],
            revoked: revoked::Summary {
                count: 1,
                digest: [7; 16],
                recent: vec![KeyId(0x0123456789abcdef)],
            },
            usage: vec![],
        }
    }

    #[test]
    fn adverts_survive_the_wire() {
        let frame = ganglion_client::codec::encode(&advert(), MAX_ADVERT_LEN).expect("encode");
        let back: PeerAdvert = ganglion_client::codec::decode_payload(&frame[5..]).expect("decode");
        assert_eq!(back, advert());
        assert!(back.check("a").is_ok());
    }

    #[test]
    fn an_advert_over_its_bound_is_refused_before_it_is_decoded() {
        let mut a = advert();
        a.usage = vec![
            crate::metering::usage::NodeUsage {
                day: 1,
                account: "a".repeat(64),
                totals: Default::default(),
            };
            MAX_ADVERT_LEN / 32
        ];
        let frame = ganglion_client::codec::encode(&a, 4 * MAX_ADVERT_LEN).expect("encode");
        assert!(frame.len() > MAX_ADVERT_LEN);
        let read = futures::executor::block_on(ganglion_client::read_frame::<_, PeerAdvert>(
            &mut frame.as_slice(),
            MAX_ADVERT_LEN,
        ));
        assert!(
            matches!(read, Err(ganglion_client::FrameError::TooLarge { .. })),
            "{read:?}"
        );
    }

    #[test]
    fn an_advert_with_every_list_full_still_fits_its_frame() {
        let mut a = advert();
        let name = "n".repeat(MAX_NODE_NAME_BYTES);
        let id = "m".repeat(MAX_MODEL_ID_BYTES);
        let region = "r".repeat(crate::membership::regions::MAX_REGION_NAME);
        let known = KnownPeer {
            name: name.clone(),
            addr: "[2001:db8::1]:65535".parse().expect("addr"),
            region: region.clone(),
        };
        let full_load = ModelLoad {
            model: id.clone(),
            queued: u32::MAX,
            in_flight: u32::MAX,
            concurrency: u32::MAX,
            service_ms: 1e6,
            warm: Vec::new(),
        };
        a.membership = Gossip {
            region: region.clone(),
            gateway: true,
            region_size: u32::MAX,
            peers: vec![known.clone(); MAX_SAMPLE],
            gateways: vec![
                crate::membership::view::Claim {
                    gateway: known,
                    beat: u64::MAX,
                };
                MAX_SAMPLE
            ],
            summary: Some(RegionSummary {
                region,
                models: vec![
                    RegionModel {
                        hosts: u32::MAX,
                        load: full_load,
                    };
                    MAX_SUMMARY_MODELS
                ],
            }),
            elsewhere: vec![id.clone(); MAX_ELSEWHERE],
        };
        a.models = vec![
            AdvertisedModel {
                id: id.clone(),
                state: ModelState::Restarting,
            };
            MAX_ADVERT_MODELS
        ];
        a.loads = vec![
            ModelLoad {
                model: id,
                queued: u32::MAX,
                in_flight: u32::MAX,
                concurrency: u32::MAX,
                service_ms: 1e6,
                warm: vec![u64::MAX; crate::routing::prefix::WARM_PREFIXES],
            };
            MAX_ADVERT_MODELS
        ];
        a.revoked.recent = vec![KeyId(u64::MAX); MAX_RECENT];
        a.usage = vec![
            crate::metering::usage::NodeUsage {
                day: u64::MAX,
                account: "a".repeat(MAX_ACCOUNT_LEN),
                totals: crate::metering::usage::Totals {
                    micro: u64::MAX,
                    requests: u64::MAX,
                    cached: u64::MAX,
                },
            };
            MAX_ADVERT_ACCOUNTS
        ];
        a.hardware.accelerators = vec!["x".repeat(MAX_ACCELERATOR_NAME); MAX_ACCELERATORS];
        assert!(a.check("a").is_ok());
        let frame = ganglion_client::codec::encode(&a, MAX_ADVERT_LEN).expect("fits");
        assert!(frame.len() < MAX_ADVERT_LEN, "{} bytes", frame.len());
    }

    #[test]
    fn a_node_on_a_wildcard_address_is_heard() {
        let mut a = advert();
        a.addr = "0.0.0.0:7400".parse().expect("addr");
        assert!(a.check("a").is_ok());
    }

    #[test]
    fn an_advert_counts_only_for_the_connection_it_came_on() {
        assert!(matches!(
            advert().check("b"),
            Err(AdvertRefused::WrongSender { .. })
        ));
    }

    #[test]
    fn out_of_bounds_adverts_are_refused() {
        let refused = |change: &dyn Fn(&mut PeerAdvert), field: &str| {
            let mut a = advert();
            change(&mut a);
            assert_eq!(
                a.check("a"),
                Err(AdvertRefused::OutOfBounds(match field {
                    "addr" => "addr",
                    "membership" => "membership",
                    "models" => "models",
                    "loads" => "loads",
                    "revoked" => "revoked",
                    _ => "hardware.accelerators",
                })),
                "{field}"
            );
        };
        refused(&|a| a.loads[0].service_ms = f64::INFINITY, "loads");
        refused(&|a| a.loads[0].service_ms = f64::NAN, "loads");
        refused(&|a| a.loads[0].service_ms = -1.0, "loads");
        refused(&|a| a.loads[0].service_ms = 1e300, "loads");
        refused(
            &|a| a.loads[0].warm = vec![1; crate::routing::prefix::WARM_PREFIXES + 1],
            "loads",
        );
        refused(
            &|a| a.addr = "224.0.0.1:7400".parse().expect("addr"),
            "addr",
        );
        refused(&|a| a.addr.set_port(0), "addr");
        let m = "membership";
        refused(
            &|a| a.membership.peers = vec![a.membership.peers[0].clone(); MAX_SAMPLE + 1],
            m,
        );
        refused(
            &|a| a.membership.peers[0].addr = "224.0.0.1:5".parse().expect("addr"),
            m,
        );
        refused(
            &|a| a.membership.peers[0].name = "x".repeat(MAX_NODE_NAME_BYTES + 1),
            m,
        );
        refused(&|a| a.membership.region = "EU".into(), m);
        refused(&|a| a.membership.peers[0].region = String::new(), m);
        refused(&|a| a.membership.elsewhere = vec![String::new()], m);
        refused(
            &|a| a.membership.elsewhere = vec!["@m/x".into(); MAX_ELSEWHERE + 1],
            m,
        );
        refused(
            &|a| {
                a.membership.summary = Some(RegionSummary {
                    region: "us".into(),
                    models: Vec::new(),
                })
            },
            m,
        );
        refused(&|a| a.models[0].id = String::new(), "models");
        refused(
            &|a| a.models = vec![a.models[0].clone(); MAX_ADVERT_MODELS + 1],
            "models",
        );
        refused(
            &|a| a.hardware.accelerators = vec![String::new(); MAX_ACCELERATORS + 1],
            "accelerators",
        );
        refused(
            &|a| a.revoked.recent = vec![KeyId(1); MAX_RECENT + 1],
            "revoked",
        );
    }

    #[test]
    fn a_usage_record_naming_no_account_costs_itself_not_the_advert() {
        let record = |account: &str| crate::metering::usage::NodeUsage {
            day: 1,
            account: account.to_owned(),
            totals: Default::default(),
        };
        let mut a = advert();
        a.usage = vec![
            record(""),
            record("acme"),
            record(&"x".repeat(MAX_ACCOUNT_LEN + 1)),
            record("a\u{7}"),
        ];
        assert!(a.check("a").is_ok());
        assert_eq!(a.drop_bad_records(), 3);
        assert_eq!(a.usage, [record("acme")]);
    }

    #[test]
    fn only_hosted_models_count_as_served() {
        let mut a = advert();
        assert_eq!(
            a.serving().collect::<Vec<_>>(),
            ["@ganglion/all-minilm-l6-v2"]
        );
        a.models[0].state = ModelState::Restarting;
        assert_eq!(a.serving().count(), 0);
    }
}
