//! The simulated world: nodes, links and time. Each node keeps the node's own
//! [`View`](ganglion::membership::view::View) and builds the node's own adverts; what stands in
//! for the node's actors here is only their loop: the cluster host's dial tick (every 250 ms:
//! liveness, the dial plan, at most 4 dials at once, seeds first, closing other regions'
//! connections after their grace) and the directory's advert tick (every second, to every
//! connected peer).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

// Maps with a fixed hash, so that a run is the same every time.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use ganglion::facts::ModelState;
use ganglion::hardware::Hardware;
use ganglion::membership::view::{Gossip, View};
use ganglion::membership::{KnownPeer, ModelLoad};
use ganglion::peer::advert::{AdvertisedModel, PeerAdvert};

/// Simulated time, in microseconds.
pub type Micros = u64;

/// One millisecond.
pub const MS: Micros = 1_000;
/// One second.
pub const SECOND: Micros = 1_000_000;
/// The directory's advert interval.
pub const ADVERT_INTERVAL: Micros = SECOND;
/// The cluster host's tick.
pub const DIAL_TICK: Micros = 250 * MS;
/// QUIC's idle timeout at the default liveness timeout of 5 s (4/5 of it).
pub const IDLE_TIMEOUT: Micros = 4 * SECOND;
/// Dials in flight at once per node.
pub const MAX_DIALS: usize = 4;
/// The grace before a connection the region rule does not keep is closed.
pub const OTHER_REGION_GRACE: Micros = 5 * SECOND;
/// Connections a node accepts (the default cap).
pub const MAX_CONNECTIONS: usize = ganglion::config::clients::DEFAULT_MAX_CONNECTIONS;
/// Bytes a QUIC stream and its packets add to an advert (stream frame, packet header, AEAD
/// tag, the stream's opening frame), and the acknowledgement it draws.
pub const ADVERT_OVERHEAD: u64 = 90;

/// A small deterministic random number generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// A link from one node's side.
#[derive(Debug, Clone)]
pub struct Link {
    /// When it came up.
    pub since: Micros,
    /// When QUIC's idle timer last started: at the last packet received, or at the first
    /// packet sent after it (RFC 9000, 10.1).
    pub idle_from: Micros,
    /// Whether a packet was sent since the last one received.
    pub sent_since_heard: bool,
}

/// One simulated node.
pub struct Node {
    /// Its name (`n<id>`).
    pub name: String,
    /// Its region's index.
    pub region: usize,
    /// Whether it runs.
    pub alive: bool,
    /// Its view, as the directory keeps it.
    pub view: View,
    /// Its connections, by peer.
    pub links: HashMap<usize, Link>,
    /// Dials in flight.
    dialing: HashSet<usize>,
    /// Failures and next attempt per address dialed.
    backoff: HashMap<usize, (u32, Micros)>,
    seed: Option<usize>,
    seed_other_region: bool,
    /// Since when each peer has been unwanted by the region rule.
    unwanted_since: HashMap<usize, Micros>,
    /// What it serves, with its load.
    pub serving: Arc<[ModelLoad]>,
    /// Bytes it sent and received since the counters were last reset.
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// When it died, if it did.
    pub died: Option<Micros>,
}

/// What happens at a point in simulated time.
enum Event {
    AdvertTick(usize),
    DialTick(usize),
    DialDone {
        from: usize,
        to: usize,
        ok: bool,
    },
    Deliver {
        from: usize,
        to: usize,
        gossip: Arc<Gossip>,
        serving: Arc<[ModelLoad]>,
        bytes: u64,
    },
}

/// Links between regions: one-way latency per region pair, and packet loss.
#[derive(Debug, Clone)]
pub struct Network {
    /// Regions.
    pub regions: usize,
    /// Probability that a packet is lost.
    pub loss: f64,
}

impl Network {
    /// One-way latency between two regions: 1 ms inside one, 10 to 40 ms between two, by
    /// their distance on a ring.
    pub fn one_way(&self, a: usize, b: usize) -> Micros {
        if a == b {
            return MS;
        }
        let d = a.abs_diff(b);
        let d = d.min(self.regions - d) as f64 / (self.regions as f64 / 2.0);
        10 * MS + (30.0 * d * MS as f64) as Micros
    }

    /// Round-trip time between two regions.
    pub fn rtt(&self, a: usize, b: usize) -> Micros {
        2 * self.one_way(a, b)
    }
}

/// Counters of what happened.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Adverts a receiver would refuse ([`PeerAdvert::check`]).
    pub refused_adverts: u64,
    /// Adverts sent.
    pub adverts: u64,
    /// Links dropped by the idle timeout while both ends were alive.
    pub false_deaths: u64,
    /// Dials refused at the connection cap.
    pub refused_dials: u64,
    /// Link-seconds observed (for the false death rate), sampled once a second.
    pub link_seconds: u64,
    /// Times (after death) at which peers noticed each dead node: (node, delay).
    pub detections: Vec<(usize, Micros)>,
}

/// The world.
pub struct World {
    /// Nodes by id.
    pub nodes: Vec<Node>,
    /// Their names (apart, so that a node's view can be changed while another's name is read).
    names: Vec<String>,
    /// Live nodes of each region.
    by_region: Vec<Vec<usize>>,
    /// The network.
    pub net: Network,
    /// Now.
    pub now: Micros,
    queue: BinaryHeap<Reverse<(Micros, u64, usize)>>,
    events: HashMap<usize, Event>,
    seq: u64,
    /// Randomness.
    pub rng: Rng,
    /// What happened.
    pub tally: Tally,
    hardware: Hardware,
}

/// The address of node `id`.
pub fn addr(id: usize) -> SocketAddr {
    let id = id as u32;
    SocketAddr::from(([10, (id >> 16) as u8, (id >> 8) as u8, id as u8], 7400))
}

/// The id of the node called `name`.
pub fn id_of(name: &str) -> usize {
    name[1..].parse().expect("a simulated node's name")
}

/// The name of region `r`.
pub fn region_name(r: usize) -> String {
    format!("r{r}")
}

impl World {
    /// An empty world.
    pub fn new(net: Network, seed: u64) -> Self {
        Self {
            nodes: Vec::new(),
            names: Vec::new(),
            by_region: vec![Vec::new(); net.regions],
            net,
            now: 0,
            queue: BinaryHeap::new(),
            events: HashMap::default(),
            seq: 0,
            rng: Rng::new(seed),
            tally: Tally::default(),
            hardware: Hardware {
                cores: 8,
                memory_total: 32 << 30,
                memory_available: 24 << 30,
                memory_limit: None,
                accelerators: Vec::new(),
            },
        }
    }

    fn at(&mut self, time: Micros, event: Event) {
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(key, event);
        self.queue.push(Reverse((time, self.seq, key)));
    }

    /// Adds a node of `region` serving `serving`, which starts now, dialing `seed`.
    pub fn add(&mut self, region: usize, seed: Option<usize>, serving: Vec<ModelLoad>) -> usize {
        let id = self.nodes.len();
        let name = format!("n{id}");
        self.names.push(name.clone());
        self.by_region[region].push(id);
        self.nodes.push(Node {
            view: View::new(
                KnownPeer {
                    name: name.clone(),
                    addr: addr(id),
                    region: region_name(region),
                },
                self.now / SECOND,
            ),
            name,
            region,
            alive: true,
            links: HashMap::default(),
            dialing: HashSet::default(),
            backoff: HashMap::default(),
            seed,
            seed_other_region: false,
            unwanted_since: HashMap::default(),
            serving: serving.into(),
            sent: 0,
            received: 0,
            died: None,
        });
        let (advert_phase, dial_phase) = (
            self.rng.below(ADVERT_INTERVAL as usize) as Micros,
            self.rng.below(DIAL_TICK as usize) as Micros,
        );
        self.at(self.now + advert_phase, Event::AdvertTick(id));
        self.at(self.now + dial_phase, Event::DialTick(id));
        id
    }

    /// Kills node `id` (kill -9: it sends nothing more).
    pub fn kill(&mut self, id: usize) {
        let node = &mut self.nodes[id];
        node.alive = false;
        node.died = Some(self.now);
        self.by_region[node.region].retain(|&m| m != id);
    }

    /// Runs until `until`.
    pub fn run_until(&mut self, until: Micros) {
        while let Some(Reverse((time, _, key))) = self.queue.peek().copied() {
            if time > until {
                break;
            }
            self.queue.pop();
            let event = self.events.remove(&key).expect("a queued event");
            self.now = time;
            self.handle(event);
        }
        self.now = until;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::AdvertTick(id) => {
                if self.nodes[id].alive {
                    self.advertise(id);
                    self.at(self.now + ADVERT_INTERVAL, Event::AdvertTick(id));
                }
            }
            Event::DialTick(id) => {
                if self.nodes[id].alive {
                    self.dial_tick(id);
                    self.at(self.now + DIAL_TICK, Event::DialTick(id));
                }
            }
            Event::DialDone { from, to, ok } => self.dial_done(from, to, ok),
            Event::Deliver {
                from,
                to,
                gossip,
                serving,
                bytes,
            } => {
                let now = self.now;
                let node = &mut self.nodes[to];
                if !node.alive {
                    return;
                }
                let Some(link) = node.links.get_mut(&from) else {
                    return;
                };
                link.idle_from = now;
                link.sent_since_heard = false;
                node.received += bytes;
                node.view
                    .learn(&self.names[from], addr(from), gossip, serving);
            }
        }
    }

    /// The directory's tick: build this round's advert as the node does, check it as a receiver
    /// would, and send it on every link.
    fn advertise(&mut self, id: usize) {
        let node = &mut self.nodes[id];
        let serving = node.serving.clone();
        let gossip = Arc::new(node.view.gossip(self.now / SECOND, &serving));
        let advert = PeerAdvert {
            name: node.name.clone(),
            addr: addr(id),
            membership: (*gossip).clone(),
            models: serving
                .iter()
                .map(|l| AdvertisedModel {
                    id: l.model.clone(),
                    state: ModelState::Hosted,
                })
                .collect(),
            hardware: self.hardware.clone(),
            loads: serving.to_vec(),
            revoked: Default::default(),
            usage: Vec::new(),
        };
        self.tally.adverts += 1;
        if advert.check(&node.name).is_err() {
            self.tally.refused_adverts += 1;
        }
        let bytes = ganglion::peer::advert::encode(&advert)
            .map(|f| f.len() as u64)
            .unwrap_or(u64::MAX / 4)
            + ADVERT_OVERHEAD;
        let peers: Vec<usize> = node.links.keys().copied().collect();
        for to in peers {
            if let Some(link) = self.nodes[id].links.get_mut(&to)
                && !link.sent_since_heard
            {
                link.sent_since_heard = true;
                link.idle_from = self.now;
            }
            let delay = self.transit(id, to);
            self.nodes[id].sent += bytes;
            self.at(
                self.now + delay,
                Event::Deliver {
                    from: id,
                    to,
                    gossip: gossip.clone(),
                    serving: serving.clone(),
                    bytes,
                },
            );
        }
    }

    /// How long a reliable message takes from `a` to `b`: the one-way latency, plus a probe
    /// timeout (3 round trips, at least 10 ms) for every time its packet is lost.
    fn transit(&mut self, a: usize, b: usize) -> Micros {
        let (ra, rb) = (self.nodes[a].region, self.nodes[b].region);
        let mut delay = self.net.one_way(ra, rb);
        let pto = (3 * self.net.rtt(ra, rb)).max(10 * MS);
        while self.rng.chance(self.net.loss) {
            delay += pto;
        }
        delay
    }

    /// The cluster host's tick: liveness, connections the region rule does not keep, dials.
    fn dial_tick(&mut self, id: usize) {
        let now = self.now;
        // Liveness: QUIC's idle timer fired (at `idle_from + IDLE_TIMEOUT`, noticed here at
        // the tick; the time recorded is the timer's).
        let silent: Vec<(usize, Micros)> = self.nodes[id]
            .links
            .iter()
            .filter(|(_, l)| now >= l.idle_from + IDLE_TIMEOUT)
            .map(|(p, l)| (*p, l.idle_from + IDLE_TIMEOUT))
            .collect();
        for (peer, fired) in silent {
            self.drop_link(id, peer);
            match self.nodes[peer].died {
                Some(died) if !self.nodes[peer].alive => {
                    self.tally
                        .detections
                        .push((peer, fired.saturating_sub(died)));
                }
                _ => self.tally.false_deaths += 1,
            }
        }
        let node = &self.nodes[id];
        let targets = node.view.dial_targets(|peer| {
            let p = id_of(peer);
            node.links.contains_key(&p) || node.dialing.contains(&p)
        });
        let unwanted = node.view.unwanted();
        let unwanted: Vec<usize> = unwanted.iter().map(|p| id_of(p)).collect();
        let node = &mut self.nodes[id];
        node.unwanted_since.retain(|p, _| unwanted.contains(p));
        for &peer in &unwanted {
            node.unwanted_since.entry(peer).or_insert(now);
        }
        for peer in unwanted {
            let since = self.nodes[id].unwanted_since[&peer];
            let old_enough = now - since >= OTHER_REGION_GRACE
                && self.nodes[id]
                    .links
                    .get(&peer)
                    .is_some_and(|l| now - l.since >= OTHER_REGION_GRACE);
            if old_enough {
                self.drop_link(id, peer);
                self.drop_link(peer, id);
                for (a, b) in [(id, peer), (peer, id)] {
                    if self.nodes[a].seed == Some(b) {
                        self.nodes[a].seed_other_region = true;
                    }
                }
            }
        }
        // Seeds first, then the plan's targets, a few at a time.
        let node = &self.nodes[id];
        let mut due: Vec<usize> = Vec::new();
        if let Some(seed) = node.seed
            && !node.links.contains_key(&seed)
            && (!node.seed_other_region || node.links.is_empty())
        {
            due.push(seed);
        }
        due.extend(targets.iter().map(|t| id_of(&t.name)));
        let mut room = MAX_DIALS.saturating_sub(node.dialing.len());
        for to in due {
            if room == 0 {
                break;
            }
            let node = &self.nodes[id];
            if to == id || node.dialing.contains(&to) || node.links.contains_key(&to) {
                continue;
            }
            if node.backoff.get(&to).is_some_and(|(_, next)| *next > now) {
                continue;
            }
            room -= 1;
            self.dial(id, to);
        }
    }

    fn dial(&mut self, from: usize, to: usize) {
        self.nodes[from].dialing.insert(to);
        let reachable = self.nodes[to].alive;
        if !reachable {
            self.at(
                self.now + IDLE_TIMEOUT,
                Event::DialDone {
                    from,
                    to,
                    ok: false,
                },
            );
            return;
        }
        // The handshake: two round trips (QUIC and TLS, then the cluster session), plus a
        // second for every lost handshake packet (QUIC's initial probe timeout).
        let (ra, rb) = (self.nodes[from].region, self.nodes[to].region);
        let mut took = 2 * self.net.rtt(ra, rb);
        for _ in 0..4 {
            if self.rng.chance(self.net.loss) {
                took += SECOND;
            }
        }
        self.at(self.now + took, Event::DialDone { from, to, ok: true });
    }

    fn dial_done(&mut self, from: usize, to: usize, ok: bool) {
        let now = self.now;
        self.nodes[from].dialing.remove(&to);
        if !self.nodes[from].alive {
            return;
        }
        let full = self.nodes[to].links.len() >= MAX_CONNECTIONS;
        if !ok || !self.nodes[to].alive || full {
            if full {
                self.tally.refused_dials += 1;
            }
            let entry = self.nodes[from].backoff.entry(to).or_insert((0, 0));
            entry.0 += 1;
            let delay = (250 * MS) << entry.0.saturating_sub(1).min(3);
            entry.1 = now + delay.min(2 * SECOND);
            return;
        }
        self.nodes[from].backoff.remove(&to);
        if self.nodes[from].links.contains_key(&to) {
            return;
        }
        let link = Link {
            since: now,
            idle_from: now,
            sent_since_heard: false,
        };
        self.nodes[from].links.insert(to, link.clone());
        self.nodes[to].links.insert(from, link);
    }

    fn drop_link(&mut self, id: usize, peer: usize) {
        let node = &mut self.nodes[id];
        node.links.remove(&peer);
        node.view.forget(&self.names[peer]);
    }

    /// Live nodes of region `r`.
    pub fn members(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        self.by_region[r].iter().copied()
    }
}
