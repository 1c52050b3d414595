//! A node's view of the mesh, as adverts build it: the peers it has a session with and what they
//! last said, the addresses it has heard of, and from these what it tells others
//! ([`View::gossip`]), whom it dials ([`View::dial_targets`]), which connections it lets go
//! ([`View::unwanted`]) and where a request for a model can go ([`View::candidates`]).
//!
//! Pure: no sockets and no clock (time is counted in advert rounds). The peer directory keeps one
//! for the node; the scale simulation (`sim/`) keeps one per simulated node and drives it with
//! simulated links, so what it measures is this code.
//!
//! What a node sends per advert is bounded whatever the mesh's size: a rotating sample of its
//! region's members and of the gateways it knows ([`SAMPLE`] each), and, from gateways, a
//! summary of their region sized by the catalog. Rotation means every member is named to every
//! peer within `region size / SAMPLE` rounds, and a new member is named by many peers at once.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::regions::{self, RegionSummary};
use super::{KnownPeer, ModelLoad};

/// Entries of each sampled list in one advert (and as many more members that just arrived).
pub const SAMPLE: usize = 8;
/// Most entries of a sampled list an advert may carry (a peer's may sample more than ours).
pub const MAX_SAMPLE: usize = 32;
/// Most models a gateway lists as served in other regions.
pub const MAX_ELSEWHERE: usize = 256;
/// Most addresses heard of and not connected that a view keeps.
pub const MAX_HEARD: usize = 4096;
/// Seconds an address is kept after it was last heard of.
pub const HEARD_FOR: u64 = 120;
/// Seconds in which a member that just arrived is named in every advert, ahead of the rotation.
pub const FRESH_FOR: u64 = 3;
/// Seconds a gateway's claim is believed after it was made.
pub const CLAIM_TTL: u64 = 15;
/// A claim dated further ahead of this node's clock than this is refused.
pub const MAX_CLOCK_SKEW: u64 = 10;
/// Most gateway claims a view keeps.
pub const MAX_CLAIMS: usize = 4096;

/// The membership part of an advert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gossip {
    /// The sender's region.
    pub region: String,
    /// Whether the sender is one of its region's gateways (by its own view).
    pub gateway: bool,
    /// Members of its region it has a session with, itself included.
    pub region_size: u32,
    /// A rotating sample of its region's members.
    pub peers: Vec<KnownPeer>,
    /// Gateways it knows of, of any region, each with the beat its claim last carried: its
    /// own claim when it is a gateway, its region's gateways', then others' in turn.
    pub gateways: Vec<Claim>,
    /// A gateway's summary of what its region serves.
    pub summary: Option<RegionSummary>,
    /// A gateway's list of models served in other regions (from their gateways' summaries).
    pub elsewhere: Vec<String>,
}

/// A gateway's claim to be one: who, and when it claimed (its clock, in seconds since the Unix
/// epoch). A claim passed on keeps its beat, so a node that stops being a gateway stops
/// renewing it, and its claim expires everywhere [`CLAIM_TTL`] seconds after it was made,
/// however often others repeat it (clocks are assumed within [`MAX_CLOCK_SKEW`] of each other).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The gateway.
    pub gateway: KnownPeer,
    /// Its beat when it made this claim.
    pub beat: u64,
}

impl Gossip {
    /// Whether every list is within its bound and every name is well formed.
    pub fn within_bounds(
        &self,
        name_ok: impl Fn(&str) -> bool,
        model_ok: impl Fn(&str) -> bool,
    ) -> bool {
        let peers_ok = |list: &[KnownPeer]| {
            list.len() <= MAX_SAMPLE
                && list
                    .iter()
                    .all(|p| name_ok(&p.name) && regions::region_ok(&p.region))
        };
        regions::region_ok(&self.region)
            && peers_ok(&self.peers)
            && self.gateways.len() <= MAX_SAMPLE
            && self
                .gateways
                .iter()
                .all(|c| name_ok(&c.gateway.name) && regions::region_ok(&c.gateway.region))
            && self.elsewhere.len() <= MAX_ELSEWHERE
            && self.elsewhere.iter().all(|m| model_ok(m))
            && self.summary.as_ref().is_none_or(|s| {
                s.region == self.region
                    && s.models.len() <= regions::MAX_SUMMARY_MODELS
                    // A summary adds loads up; it names no prefix (`summarize` sends none).
                    && s.models.iter().all(|m| model_ok(&m.load.model) && m.load.warm.is_empty())
            })
    }
}

/// Where a request for a model can go from this node.
#[derive(Debug, Clone, PartialEq)]
pub enum Candidates {
    /// Peers of this region that serve it, with their load.
    Hosts(Vec<(String, ModelLoad)>),
    /// Other regions' gateways whose region serves it, with the region's load (this node is a
    /// gateway).
    Regions(Vec<(String, ModelLoad)>),
    /// This region's gateways, which know another region that serves it.
    Gateways(Vec<String>),
    /// Nowhere known.
    None,
}

/// Bounds a view reached, counted (shown in `/admin/membership`; each is logged when reached).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BoundsReached {
    /// Addresses not kept because [`MAX_HEARD`] were.
    pub heard_full: u64,
    /// Rounds in which this gateway's summary left models out.
    pub summary_cut: u64,
    /// Rounds in which this gateway's list of models served elsewhere was cut.
    pub elsewhere_cut: u64,
}

/// What a view keeps of a connected peer.
#[derive(Debug, Clone)]
struct Peer {
    addr: SocketAddr,
    gossip: Arc<Gossip>,
    serving: Arc<[ModelLoad]>,
    /// The round its first advert arrived in.
    since: u64,
}

/// An address heard of in a sample.
#[derive(Debug, Clone)]
struct Heard {
    peer: KnownPeer,
    /// The round it was last heard of.
    round: u64,
}

/// A node's view of the mesh.
#[derive(Debug, Clone)]
pub struct View {
    me: KnownPeer,
    /// The latest time given (seconds since the Unix epoch): what heard addresses, fresh
    /// members and claims are aged by.
    round: u64,
    /// Adverts made: what the samples rotate by.
    turn: u64,
    peers: HashMap<String, Peer>,
    heard: HashMap<String, Heard>,
    claims: HashMap<String, Claim>,
    /// Nodes that said themselves they are not gateways, and when: older claims of theirs
    /// that others still repeat are refused.
    denied: HashMap<String, u64>,
    bounds: BoundsReached,
    /// This region's gateways, computed again whenever its members change.
    gateways: Vec<String>,
}

impl View {
    /// The view of a node `me` that knows no peer yet, at `now` (seconds since the Unix epoch).
    pub fn new(me: KnownPeer, now: u64) -> Self {
        Self {
            me,
            round: now,
            turn: 0,
            peers: HashMap::default(),
            heard: HashMap::default(),
            claims: HashMap::default(),
            denied: HashMap::default(),
            bounds: BoundsReached::default(),
            gateways: Vec::new(),
        }
        .with_gateways()
    }

    /// Computes this region's gateways from its members (this node and its region's peers).
    fn with_gateways(mut self) -> Self {
        self.choose_gateways();
        self
    }

    fn choose_gateways(&mut self) {
        let members = std::iter::once(self.me.name.as_str()).chain(
            self.peers
                .iter()
                .filter(|(_, p)| p.gossip.region == self.me.region)
                .map(|(name, _)| name.as_str()),
        );
        self.gateways = regions::gateways(&self.me.region, members)
            .into_iter()
            .map(str::to_owned)
            .collect();
    }

    /// This node.
    pub fn me(&self) -> &KnownPeer {
        &self.me
    }

    /// Bounds reached so far.
    pub fn bounds(&self) -> &BoundsReached {
        &self.bounds
    }

    /// Records an advert from connected `peer`, reachable at `addr`: its gossip and the load of
    /// each model it serves. Returns whether an address heard of was not kept (the bound
    /// [`MAX_HEARD`] is reached; the caller logs it).
    pub fn learn(
        &mut self,
        peer: &str,
        addr: SocketAddr,
        gossip: Arc<Gossip>,
        serving: Arc<[ModelLoad]>,
    ) -> bool {
        let mut full = false;
        // Of members named, only this region's are worth keeping (a gateway of another region
        // names its own).
        for known in gossip.peers.iter().filter(|p| p.region == self.me.region) {
            if known.name == self.me.name || self.peers.contains_key(&known.name) {
                continue;
            }
            let room = self.heard.len() < MAX_HEARD;
            match self.heard.get_mut(&known.name) {
                // The address first heard is kept: a peer cannot move another member's.
                Some(h) => h.round = self.round,
                None if !room => full = true,
                None => {
                    self.heard.insert(
                        known.name.clone(),
                        Heard {
                            peer: known.clone(),
                            round: self.round,
                        },
                    );
                }
            }
        }
        for claim in &gossip.gateways {
            full |= self.take_claim(peer, claim);
        }
        // The peer's own word on its role overrides what others repeat.
        if !gossip.gateway && self.claims.remove(peer).is_some() {
            self.denied.insert(peer.to_owned(), self.round);
        }
        if full {
            self.bounds.heard_full += 1;
        }
        let member = gossip.region == self.me.region;
        if let Some(known) = self.peers.get_mut(peer) {
            let was_member = known.gossip.region == self.me.region;
            known.addr = addr;
            known.gossip = gossip;
            known.serving = serving;
            if was_member != member {
                self.choose_gateways();
            }
            return full;
        }
        self.heard.remove(peer);
        self.peers.insert(
            peer.to_owned(),
            Peer {
                addr,
                gossip,
                serving,
                since: self.round,
            },
        );
        if member {
            self.choose_gateways();
        }
        full
    }

    /// Keeps `claim`, passed on by `from`, if it is current (made within [`CLAIM_TTL`], not dated ahead by more than
    /// [`MAX_CLOCK_SKEW`]) and newer than the one kept; returns whether it was new and not kept
    /// because [`MAX_CLAIMS`] are.
    fn take_claim(&mut self, from: &str, claim: &Claim) -> bool {
        let name = &claim.gateway.name;
        let current = claim.beat.saturating_add(CLAIM_TTL) >= self.round
            && claim.beat <= self.round.saturating_add(MAX_CLOCK_SKEW);
        let denied = self.denied.get(name).is_some_and(|at| claim.beat <= *at);
        // A connected peer speaks for itself (its own advert's claim comes first in it): what
        // others repeat about it is not taken.
        let speaks_for_itself = *name != from && self.peers.contains_key(name.as_str());
        if *name == self.me.name || !current || denied || speaks_for_itself {
            return false;
        }
        if let Some(kept) = self.claims.get_mut(name) {
            if claim.beat > kept.beat {
                *kept = claim.clone();
            }
            return false;
        }
        if self.claims.len() >= MAX_CLAIMS {
            return true;
        }
        self.claims.insert(name.clone(), claim.clone());
        false
    }

    /// Forgets `peer` (its connection or session ended).
    pub fn forget(&mut self, peer: &str) {
        if self.peers.remove(peer).is_some() {
            self.choose_gateways();
        }
    }

    /// Forgets every peer.
    pub fn clear(&mut self) {
        self.peers.clear();
        self.choose_gateways();
    }

    /// Connected peers of this node's region.
    pub fn region_peers(&self) -> impl Iterator<Item = &str> {
        self.peers
            .iter()
            .filter(|(_, p)| p.gossip.region == self.me.region)
            .map(|(name, _)| name.as_str())
    }

    /// Whether `peer` is a connected peer of this node's region.
    pub fn in_region(&self, peer: &str) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.gossip.region == self.me.region)
    }

    /// The region a connected peer says it is in.
    pub fn region_of(&self, peer: &str) -> Option<&str> {
        self.peers.get(peer).map(|p| p.gossip.region.as_str())
    }

    /// Whether a connected peer says it is a gateway.
    pub fn is_gateway_peer(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.gossip.gateway)
    }

    /// This region's gateways as this node sees its members, best first.
    pub fn gateways(&self) -> Vec<&str> {
        self.gateways.iter().map(String::as_str).collect()
    }

    /// Whether this node is one of its region's gateways.
    pub fn is_gateway(&self) -> bool {
        self.gateways.contains(&self.me.name)
    }

    /// Regions this node knows of: its own, its peers', and those of the gateways claimed.
    pub fn regions_known(&self) -> usize {
        let mut regions: BTreeSet<&str> = BTreeSet::from([self.me.region.as_str()]);
        regions.extend(self.peers.values().map(|p| p.gossip.region.as_str()));
        regions.extend(self.claims.values().map(|c| c.gateway.region.as_str()));
        regions.len()
    }

    /// Gossip for an advert sent at `now` (seconds since the Unix epoch), given the load of
    /// each model this node serves. Addresses not heard of for [`HEARD_FOR`] seconds and claims
    /// older than [`CLAIM_TTL`] are forgotten.
    pub fn gossip(&mut self, now: u64, own: &[ModelLoad]) -> Gossip {
        self.round = self.round.max(now);
        self.turn += 1;
        let (round, turn) = (self.round, self.turn);
        self.heard
            .retain(|_, h| round.saturating_sub(h.round) <= HEARD_FOR);
        self.claims
            .retain(|_, c| c.beat.saturating_add(CLAIM_TTL) >= round);
        self.denied
            .retain(|_, at| at.saturating_add(CLAIM_TTL) >= round);
        let gateway = self.is_gateway();
        // Members that arrived in the last few rounds are named first (a join spreads to the
        // whole region in one round), then the rotation names every member in turn.
        let mut fresh: Vec<KnownPeer> = Vec::new();
        let mut members: Vec<KnownPeer> = Vec::new();
        for (name, p) in &self.peers {
            if p.gossip.region != self.me.region {
                continue;
            }
            if round.saturating_sub(p.since) <= FRESH_FOR && fresh.len() < SAMPLE {
                fresh.push(self.known(name, p));
            } else {
                members.push(self.known(name, p));
            }
        }
        // Maps keep no order: sort, so that the rotation goes through every member in turn.
        fresh.sort();
        members.sort();
        let region_size = fresh.len() + members.len() + 1;
        // Claims: this node's own (a gateway's), its region's gateways' (so that another
        // region's gateway hears at once who replaced one), then every other claim kept, in
        // turn.
        let mut claims: Vec<Claim> = Vec::new();
        if gateway {
            claims.push(Claim {
                gateway: self.me.clone(),
                beat: round,
            });
        }
        claims.extend(
            self.gateways
                .iter()
                .filter_map(|name| self.claims.get(name))
                .cloned(),
        );
        let mut others: Vec<KnownPeer> = self
            .claims
            .iter()
            .filter(|(name, _)| !self.gateways.contains(name))
            .map(|(_, c)| c.gateway.clone())
            .collect();
        others.sort();
        let room = SAMPLE.saturating_sub(claims.len());
        for gateway in rotate(others, turn, room) {
            if let Some(claim) = self.claims.get(&gateway.name) {
                claims.push(claim.clone());
            }
        }
        let (summary, elsewhere) = if gateway {
            let loads = own.iter().chain(
                self.peers
                    .values()
                    .filter(|p| p.gossip.region == self.me.region)
                    .flat_map(|p| p.serving.iter()),
            );
            let (summary, cut) = regions::summarize(&self.me.region, loads);
            if cut {
                self.bounds.summary_cut += 1;
            }
            let mut elsewhere: BTreeSet<&str> = BTreeSet::new();
            for p in self.peers.values() {
                if p.gossip.region != self.me.region
                    && let Some(s) = &p.gossip.summary
                {
                    elsewhere.extend(s.models.iter().map(|m| m.load.model.as_str()));
                }
            }
            if elsewhere.len() > MAX_ELSEWHERE {
                self.bounds.elsewhere_cut += 1;
            }
            let elsewhere = elsewhere
                .into_iter()
                .take(MAX_ELSEWHERE)
                .map(str::to_owned)
                .collect();
            (Some(summary), elsewhere)
        } else {
            (None, Vec::new())
        };
        Gossip {
            region: self.me.region.clone(),
            gateway,
            region_size: u32::try_from(region_size).unwrap_or(u32::MAX),
            peers: {
                fresh.extend(rotate(members, turn, SAMPLE));
                fresh
            },
            gateways: claims,
            summary,
            elsewhere,
        }
    }

    fn known(&self, name: &str, peer: &Peer) -> KnownPeer {
        KnownPeer {
            name: name.to_owned(),
            addr: peer.addr,
            region: peer.gossip.region.clone(),
        }
    }

    /// Addresses worth dialing, this region's first: every member of this region heard of and
    /// every gateway of it claimed, and (for a gateway) every other region's gateway claimed;
    /// never one `connected` says is connected (or being dialed).
    pub fn dial_targets(&self, connected: impl Fn(&str) -> bool) -> Vec<KnownPeer> {
        let gateway = self.is_gateway();
        // This region's first, then claims newest first: a gateway renews its claim every
        // advert, while the claims of nodes that were gateways for a moment grow old.
        let members = self.heard.values().map(|h| (&h.peer, u64::MAX));
        let claimed = self
            .claims
            .values()
            .filter(|c| gateway || c.gateway.region == self.me.region)
            .map(|c| (&c.gateway, c.beat));
        let mut targets: Vec<(bool, std::cmp::Reverse<u64>, &KnownPeer)> = members
            .chain(claimed)
            .filter(|(p, _)| !connected(&p.name))
            .map(|(p, beat)| (p.region != self.me.region, std::cmp::Reverse(beat), p))
            .collect();
        targets.sort_by(|a, b| (a.0, a.1, &a.2.name).cmp(&(b.0, b.1, &b.2.name)));
        let mut seen = BTreeSet::new();
        targets
            .into_iter()
            .filter(|(_, _, p)| seen.insert(p.name.as_str()))
            .map(|(_, _, p)| p.clone())
            .collect()
    }

    /// Connected peers whose connection the region rule does not keep (see
    /// [`regions::keep_connection`]): another region's, unless both ends are gateways.
    pub fn unwanted(&self) -> Vec<String> {
        let gateway = self.is_gateway();
        self.peers
            .iter()
            .filter(|(_, p)| {
                !regions::keep_connection(
                    &self.me.region,
                    gateway,
                    &p.gossip.region,
                    p.gossip.gateway,
                )
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Where a request for `model` that has visited `path` and may take `hop_budget` more hops
    /// can go: this region's hosts; else, from a gateway, the gateways of regions that serve it
    /// (two hops: theirs and their host); else this region's gateways (three hops).
    pub fn candidates(&self, model: &str, path: &[String], hop_budget: u8) -> Candidates {
        let off_path = |name: &&String| !path.contains(name);
        let hosts: Vec<(String, ModelLoad)> = self
            .peers
            .iter()
            .filter(|(name, p)| p.gossip.region == self.me.region && off_path(name))
            .filter_map(|(name, p)| {
                let load = p.serving.iter().find(|l| l.model == model)?;
                Some((name.clone(), load.clone()))
            })
            .collect();
        if !hosts.is_empty() {
            return Candidates::Hosts(hosts);
        }
        if self.is_gateway() {
            if hop_budget < 2 {
                return Candidates::None;
            }
            let regions: Vec<(String, ModelLoad)> = self
                .peers
                .iter()
                .filter(|(name, p)| {
                    p.gossip.region != self.me.region && p.gossip.gateway && off_path(name)
                })
                .filter_map(|(name, p)| {
                    let summary = p.gossip.summary.as_ref()?;
                    let m = summary.models.iter().find(|m| m.load.model == model)?;
                    Some((name.clone(), m.load.clone()))
                })
                .collect();
            return if regions.is_empty() {
                Candidates::None
            } else {
                Candidates::Regions(regions)
            };
        }
        if hop_budget < 3 {
            return Candidates::None;
        }
        let gateways: Vec<String> = self
            .peers
            .iter()
            .filter(|(name, p)| {
                p.gossip.region == self.me.region
                    && p.gossip.gateway
                    && self.gateways.contains(name)
                    && off_path(name)
                    && p.gossip.elsewhere.iter().any(|m| m == model)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if gateways.is_empty() {
            Candidates::None
        } else {
            Candidates::Gateways(gateways)
        }
    }
}

/// At most `n` of `list`, starting at an offset that moves by `n` each round, so that every
/// entry is sent within `len / n` rounds.
fn rotate(list: Vec<KnownPeer>, round: u64, n: usize) -> Vec<KnownPeer> {
    if list.len() <= n {
        return list;
    }
    let len = list.len();
    let start = ((round as usize).wrapping_mul(n)) % len;
    (0..n).map(|i| list[(start + i) % len].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(name: &str, region: &str, port: u16) -> KnownPeer {
        KnownPeer {
            name: name.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            region: region.into(),
        }
    }

    fn load(model: &str) -> ModelLoad {
        ModelLoad {
            model: model.into(),
            queued: 0,
            in_flight: 0,
            concurrency: 1,
            service_ms: 10.0,
            warm: Vec::new(),
        }
    }

    /// Nodes `n0..n{size}` of each region; every node of a region connected to every other, and
    /// each gateway to the other regions' gateways; adverts exchanged `rounds` times.
    fn mesh(regions: &[(&str, usize)], serving: &[(&str, &str)], rounds: usize) -> Vec<View> {
        let mut views: Vec<View> = Vec::new();
        for (region, size) in regions {
            for i in 0..*size {
                let port = views.len() as u16 + 1;
                views.push(View::new(known(&format!("{region}{i}"), region, port), 0));
            }
        }
        let own = |v: &View| -> Vec<ModelLoad> {
            serving
                .iter()
                .filter(|(n, _)| *n == v.me().name)
                .map(|(_, m)| load(m))
                .collect()
        };
        for round in 0..rounds {
            let adverts: Vec<(KnownPeer, Gossip, Vec<ModelLoad>)> = views
                .iter_mut()
                .map(|v| {
                    let o = own(v);
                    (v.me().clone(), v.gossip(round as u64, &o), o)
                })
                .collect();
            for v in &mut views {
                for (from, gossip, serving) in &adverts {
                    if from.name == v.me().name {
                        continue;
                    }
                    let gateways = regions::keep_connection(
                        &v.me().region,
                        v.is_gateway(),
                        &from.region,
                        gossip.gateway,
                    );
                    if gateways {
                        v.learn(
                            &from.name,
                            from.addr,
                            Arc::new(gossip.clone()),
                            serving.clone().into(),
                        );
                    } else {
                        v.forget(&from.name);
                    }
                }
            }
        }
        views
    }

    #[test]
    fn gossip_is_bounded_and_names_every_member_within_a_few_rounds() {
        let views = mesh(&[("eu", 40)], &[], 1);
        let mut v = views[0].clone();
        let mut named = BTreeSet::new();
        for t in 0..FRESH_FOR + 5 {
            let g = v.gossip(1 + t, &[]);
            assert!(g.peers.len() <= 2 * SAMPLE && g.gateways.len() <= SAMPLE);
            assert_eq!(g.region_size, 40);
            named.extend(g.peers.into_iter().map(|p| p.name));
        }
        assert_eq!(
            named.len(),
            39,
            "every other member named within 39/8 rounds"
        );
    }

    #[test]
    fn a_joiner_learns_its_region_from_a_seed_of_another_region() {
        let mut views = mesh(&[("eu", 10), ("us", 10)], &[], 3);
        let seed = views
            .iter()
            .position(|v| v.me().name == "us3")
            .expect("us3");
        let mut joiner = View::new(known("eu-new", "eu", 999), 0);
        let g = views[seed].gossip(3, &[]);
        joiner.learn("us3", views[seed].me().addr, Arc::new(g), Arc::from([]));
        // Alone in its region, the joiner is its region's gateway, so it keeps the other
        // regions' gateways as targets, and it heard of its own region's gateways.
        assert!(joiner.is_gateway());
        let targets = joiner.dial_targets(|p| p == "us3");
        assert!(targets.iter().any(|t| t.region == "eu"), "{targets:?}");
        // The seed is not a gateway of "us": the joiner lets that connection go.
        if !views[seed].is_gateway() {
            assert_eq!(joiner.unwanted(), vec!["us3".to_owned()]);
        }
        let _ = &mut views;
    }

    #[test]
    fn only_gateways_keep_connections_across_regions_and_they_route_between_regions() {
        let views = mesh(
            &[("eu", 6), ("us", 6)],
            &[("us4", "@m/llm"), ("eu1", "@m/embed")],
            4,
        );
        for v in &views {
            assert_eq!(v.gateways().len(), regions::GATEWAYS_PER_REGION);
            for peer in v.peers.keys() {
                let same = v.in_region(peer);
                assert!(
                    same || (v.is_gateway() && v.is_gateway_peer(peer)),
                    "{} → {peer}",
                    v.me().name
                );
            }
            assert!(v.unwanted().is_empty());
        }
        let member = views
            .iter()
            .find(|v| v.me().region == "eu" && !v.is_gateway() && v.me().name != "eu1")
            .expect("a member");
        // In the region: its host.
        match member.candidates("@m/embed", &[member.me().name.clone()], 3) {
            Candidates::Hosts(h) => assert_eq!(h[0].0, "eu1"),
            other => panic!("{other:?}"),
        }
        // Elsewhere: this region's gateways, then from a gateway the other region's gateways.
        let path = vec![member.me().name.clone()];
        let Candidates::Gateways(gateways) = member.candidates("@m/llm", &path, 3) else {
            panic!("no gateway knows the model");
        };
        assert_eq!(gateways.len(), regions::GATEWAYS_PER_REGION);
        assert_eq!(
            member.candidates("@m/llm", &path, 2),
            Candidates::None,
            "not enough hops"
        );
        let gateway = views
            .iter()
            .find(|v| v.me().name == gateways[0])
            .expect("gw");
        let Candidates::Regions(remote) = gateway.candidates("@m/llm", &path, 2) else {
            panic!("the gateway knows no region serving it");
        };
        for (name, load) in &remote {
            assert!(name.starts_with("us"));
            assert_eq!(load.concurrency, 1);
        }
        for (name, _) in remote.iter().filter(|(name, _)| name != "us4") {
            // Another region's gateway that does not host it passes it to its host.
            let remote_gw = views.iter().find(|v| v.me().name == *name).expect("gw");
            match remote_gw.candidates("@m/llm", &[gateway.me().name.clone()], 1) {
                Candidates::Hosts(h) => assert_eq!(h[0].0, "us4"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(member.candidates("@m/none", &path, 3), Candidates::None);
    }

    #[test]
    fn heard_addresses_are_bounded_and_expire() {
        let mut v = View::new(known("a", "eu", 1), 0);
        let many: Vec<KnownPeer> = (0..MAX_SAMPLE)
            .map(|i| known(&format!("p{i}"), "eu", 10 + i as u16))
            .collect();
        for chunk in 0..(MAX_HEARD / MAX_SAMPLE + 2) {
            let gossip = Gossip {
                region: "eu".into(),
                gateway: false,
                region_size: 1,
                peers: many
                    .iter()
                    .map(|p| KnownPeer {
                        name: format!("{}-{chunk}", p.name),
                        ..p.clone()
                    })
                    .collect(),
                gateways: Vec::new(),
                summary: None,
                elsewhere: Vec::new(),
            };
            v.learn("b", many[0].addr, Arc::new(gossip), Arc::from([]));
        }
        assert_eq!(v.heard.len(), MAX_HEARD);
        assert!(v.bounds().heard_full > 0);
        v.gossip(HEARD_FOR + 1, &[]);
        assert!(v.heard.is_empty(), "forgotten after {HEARD_FOR} rounds");
    }
}
