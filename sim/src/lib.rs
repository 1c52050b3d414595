//! Ganglion's membership at scale, simulated: thousands of nodes, each running the node's own
//! membership code ([`ganglion::membership::view::View`]: gossip, dial plan, gateways, where a
//! request goes), its own adverts (built, bounds-checked and encoded as the node does), its own
//! placement ([`ganglion::routing::placement`]) and cache ownership
//! ([`ganglion::routing::rendezvous`]), over simulated links (latency per region pair, packet
//! loss) and simulated time. See [`world`] for what stands in for the node's actors.
//!
//! [`run`] forms a mesh, measures it at rest, then kills and adds nodes and measures how fast
//! everyone agrees again.

pub mod world;

use std::time::Instant;

use ganglion::membership::view::Candidates;
use ganglion::membership::{ModelLoad, regions};
use ganglion::routing::{placement, rendezvous};
use world::{MS, Micros, Network, SECOND, World, id_of};

/// The model every region serves (3 hosts per region).
pub const EVERYWHERE: &str = "@ganglion/smollm2-135m-instruct";
/// The model one region serves (3 hosts in region 0).
pub const ONE_REGION: &str = "@ganglion/qwen2.5-coder-0.5b-instruct";

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Nodes at the start.
    pub nodes: usize,
    /// Nodes per region (regions = nodes / region size, rounded up).
    pub region_size: usize,
    /// Packet loss.
    pub loss: f64,
    /// Nodes killed, and as many added, after the mesh formed.
    pub churn: usize,
    /// Randomness.
    pub seed: u64,
}

/// Five figures of a sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// Largest.
    pub max: f64,
    /// How many.
    pub count: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            p50: at(0.5),
            p95: at(0.95),
            max: at(1.0),
            count: values.len(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Nodes at the start.
    pub nodes: usize,
    /// Regions.
    pub regions: usize,
    /// Seconds from the last node's start until every region was a full mesh and every gateway
    /// linked to every other region's gateways.
    pub formation_s: Option<f64>,
    /// Nodes not in a full mesh with their region when formation ended.
    pub unjoined: usize,
    /// Seconds until a new node and its region know each other.
    pub join_s: Spread,
    /// Seconds until the last peer of a killed node noticed its death.
    pub death_s: Spread,
    /// Seconds until each peer of a killed node noticed.
    pub detect_s: Spread,
    /// Seconds until a region that lost a gateway has two gateways linked to every other
    /// region's gateways again.
    pub takeover_s: Spread,
    /// Bytes sent per second per node at rest: mean over all nodes.
    pub bytes_mean: f64,
    /// The same, for the busiest node (a gateway).
    pub bytes_max: f64,
    /// Connections per node at rest: mean and most.
    pub links_mean: f64,
    /// Most connections one node held.
    pub links_max: usize,
    /// Links dropped by the idle timeout while both ends lived, per link-hour.
    pub false_deaths_per_link_hour: f64,
    /// Link-hours observed.
    pub link_hours: f64,
    /// Requests placed (share served).
    pub placed: f64,
    /// Added time of the chosen executor against the best possible (RTT and queue), ms.
    pub added_ms: Spread,
    /// Share of (key, node) pairs where the node names the cache owner its region's true
    /// membership names.
    pub owner_agreement: f64,
    /// Adverts a receiver would refuse, of all sent.
    pub refused_adverts: u64,
    /// Adverts sent.
    pub adverts: u64,
    /// Dials refused at a connection cap.
    pub refused_dials: u64,
    /// Wall-clock seconds the run took.
    pub wall_s: f64,
}

/// Runs the scenario of `setup`.
pub fn run(setup: &Setup) -> Report {
    let started = Instant::now();
    let regions = setup.nodes.div_ceil(setup.region_size).max(1);
    let mut world = World::new(
        Network {
            regions,
            loss: setup.loss,
        },
        setup.seed,
    );
    let mut report = Report {
        nodes: setup.nodes,
        regions,
        ..Report::default()
    };

    // Formation: nodes start over a window (about 500 a second), each with one seed: a node of
    // its region already started (as an operator lists a region's seeds), or, for a region's
    // first node, one of another region.
    let window = (setup.nodes as Micros * 2 * MS).max(2 * SECOND);
    for i in 0..setup.nodes {
        world.run_until(window * i as Micros / setup.nodes as Micros);
        let region = i % regions;
        let seed = seed_for(&mut world, region);
        let serving = hosted(&mut world, i / regions, region);
        world.add(region, seed, serving);
    }
    let last_start = world.now;
    for _ in 0..120 {
        world.run_until(world.now + SECOND);
        if std::env::var_os("SIM_DEBUG").is_some() {
            let unmeshed = (0..world.nodes.len())
                .filter(|&i| !in_full_mesh(&world, i))
                .count();
            let all = all_gateways(&world);
            let unrecovered: Vec<usize> = (0..regions)
                .filter(|&r| !gateways_recovered(&world, &all, r))
                .collect();
            eprintln!(
                "t={} unmeshed={unmeshed} regions without their gateway links={unrecovered:?}",
                world.now / SECOND
            );
        }
        if formed(&world) {
            report.formation_s = Some((world.now - last_start) as f64 / SECOND as f64);
            break;
        }
    }
    report.unjoined = (0..world.nodes.len())
        .filter(|&i| !in_full_mesh(&world, i))
        .count();

    // At rest: bytes, links, placement and cache owners.
    for node in &mut world.nodes {
        node.sent = 0;
    }
    let rest = 10;
    for _ in 0..rest {
        world.run_until(world.now + SECOND);
        world.tally.link_seconds += links(&world) as u64;
    }
    let sent: Vec<f64> = world
        .nodes
        .iter()
        .map(|n| n.sent as f64 / rest as f64)
        .collect();
    report.bytes_mean = sent.iter().sum::<f64>() / sent.len() as f64;
    report.bytes_max = sent.iter().copied().fold(0.0, f64::max);
    report.links_mean = 2.0 * links(&world) as f64 / world.nodes.len() as f64;
    report.links_max = world.nodes.iter().map(|n| n.links.len()).max().unwrap_or(0);
    place(&mut world, &mut report);
    report.owner_agreement = owner_agreement(&mut world);

    // Churn: kill nodes (the first two are gateways, one of them of the region that alone
    // serves ONE_REGION) and add as many, half a second apart.
    // A join: the node, when, and the members its region had then.
    let mut joins: Vec<(usize, Micros, Vec<usize>)> = Vec::new();
    // A death: the node, when, whether all have forgotten it, the region whose gateway it was.
    let mut deaths: Vec<(usize, Micros, bool, Option<usize>)> = Vec::new();
    let (mut join_s, mut takeover_s) = (Vec::new(), Vec::new());
    // A kill or a join every quarter second, while what earlier ones did is measured every
    // tenth of a second.
    let (mut step, steps) = (0, 2 * setup.churn);
    let deadline = world.now + steps as Micros * 250 * MS + 60 * SECOND;
    let mut next_step = world.now;
    while world.now < deadline && (step < steps || !(joins.is_empty() && deaths.is_empty())) {
        if step < steps && world.now >= next_step {
            if step % 2 == 0 {
                let k = step / 2;
                let victim = if k < 2.min(regions) {
                    true_gateways(&world, k)[0]
                } else {
                    // One of the nodes that formed the mesh (a node added since is measured
                    // by its join).
                    loop {
                        let v = world.rng.below(setup.nodes);
                        if world.nodes[v].alive {
                            break v;
                        }
                    }
                };
                let region = world.nodes[victim].region;
                let gateway = true_gateways(&world, region).contains(&victim);
                world.kill(victim);
                deaths.push((victim, world.now, false, gateway.then_some(region)));
            } else {
                let region = world.rng.below(regions);
                let seed = seed_for(&mut world, region);
                let before: Vec<usize> = world.members(region).collect();
                let id = world.add(region, seed, Vec::new());
                joins.push((id, world.now, before));
            }
            step += 1;
            next_step += 250 * MS;
        }
        world.run_until(world.now + 100 * MS);
        let now = world.now;
        let all = all_gateways(&world);
        joins.retain(|(id, at, before)| {
            let (id, at) = (*id, *at);
            // The new node and the members its region had when it joined (still alive) know
            // each other; nodes that joined after it are counted by their own joins.
            let node = &world.nodes[id];
            let done = before.iter().all(|&m| {
                let member = &world.nodes[m];
                !member.alive
                    || (member.view.in_region(&node.name) && node.view.in_region(&member.name))
            });
            if done {
                join_s.push((now - at) as f64 / SECOND as f64);
            }
            !done
        });
        deaths.retain_mut(|(id, at, forgotten, gateway_of)| {
            let since = (now - *at) as f64 / SECOND as f64;
            let name = &world.nodes[*id].name;
            if !*forgotten
                && world
                    .nodes
                    .iter()
                    .all(|n| !n.alive || n.view.region_of(name).is_none())
            {
                *forgotten = true;
            }
            if let Some(r) = *gateway_of
                && gateways_recovered(&world, &all, r)
            {
                *gateway_of = None;
                takeover_s.push(since);
            }
            !*forgotten || gateway_of.is_some()
        });
    }
    report.join_s = Spread::of(join_s);
    // When the last peer of each killed node noticed (QUIC's idle timer, as the node's).
    let mut last_noticed: std::collections::BTreeMap<usize, Micros> = Default::default();
    for &(node, after) in &world.tally.detections {
        let at = last_noticed.entry(node).or_default();
        *at = (*at).max(after);
    }
    report.death_s = Spread::of(
        last_noticed
            .values()
            .map(|&t| t as f64 / SECOND as f64)
            .collect(),
    );
    report.detect_s = Spread::of(
        world
            .tally
            .detections
            .iter()
            .map(|&(_, t)| t as f64 / SECOND as f64)
            .collect(),
    );
    report.takeover_s = Spread::of(takeover_s);
    let link_hours = world.tally.link_seconds as f64 / 3600.0;
    report.link_hours = link_hours;
    report.false_deaths_per_link_hour = world.tally.false_deaths as f64 / link_hours.max(1e-9);
    report.refused_adverts = world.tally.refused_adverts;
    report.adverts = world.tally.adverts;
    report.refused_dials = world.tally.refused_dials;
    report.wall_s = started.elapsed().as_secs_f64();
    report
}

/// A seed for a node joining `region`: a live member of it, or a live node of any region when
/// it has none; none for the very first node.
fn seed_for(world: &mut World, region: usize) -> Option<usize> {
    let members: Vec<usize> = world.members(region).collect();
    if !members.is_empty() {
        return Some(members[world.rng.below(members.len())]);
    }
    let alive: Vec<usize> = (0..world.nodes.len())
        .filter(|&i| world.nodes[i].alive)
        .collect();
    (!alive.is_empty()).then(|| alive[world.rng.below(alive.len())])
}

/// What node number `index` of `region` serves: the first three of every region serve
/// [`EVERYWHERE`], and those of region 0 also [`ONE_REGION`]; each with a random queue.
fn hosted(world: &mut World, index: usize, region: usize) -> Vec<ModelLoad> {
    let mut serving = Vec::new();
    let load = |model: &str, world: &mut World| ModelLoad {
        model: model.to_owned(),
        queued: world.rng.below(6) as u32,
        in_flight: 2,
        concurrency: 2,
        service_ms: 300.0,
        warm: Vec::new(),
    };
    if index < 3 {
        serving.push(load(EVERYWHERE, world));
        if region == 0 {
            serving.push(load(ONE_REGION, world));
        }
    }
    serving
}

/// Connections in the world.
fn links(world: &World) -> usize {
    world.nodes.iter().map(|n| n.links.len()).sum::<usize>() / 2
}

/// Whether live node `id` and every live member of its region know each other.
fn in_full_mesh(world: &World, id: usize) -> bool {
    let node = &world.nodes[id];
    if !node.alive {
        return true;
    }
    // Every live member and this node know each other (a killed member it still counts until
    // its connection times out does not matter here).
    world.members(node.region).all(|m| {
        m == id
            || (world.nodes[m].view.in_region(&node.name)
                && node.view.in_region(&world.nodes[m].name))
    })
}

/// The gateways of region `r` by its live members.
fn true_gateways(world: &World, r: usize) -> Vec<usize> {
    let members: Vec<&str> = world
        .members(r)
        .map(|i| world.nodes[i].name.as_str())
        .collect();
    regions::gateways(&world::region_name(r), members)
        .into_iter()
        .map(id_of)
        .collect()
}

/// The gateways of every region, by their live members.
fn all_gateways(world: &World) -> Vec<Vec<usize>> {
    (0..world.net.regions)
        .map(|r| true_gateways(world, r))
        .collect()
}

/// Whether every member of region `r` agrees on its gateways (`all[r]`, those its live members
/// give), and each is linked to every other region's gateways.
fn gateways_recovered(world: &World, all: &[Vec<usize>], r: usize) -> bool {
    let gateways = &all[r];
    let names: Vec<&str> = gateways
        .iter()
        .map(|&g| world.nodes[g].name.as_str())
        .collect();
    let agreed = world
        .members(r)
        .all(|m| world.nodes[m].view.gateways() == names);
    agreed
        && (0..world.net.regions).filter(|&o| o != r).all(|o| {
            let others = &all[o];
            gateways.iter().all(|&g| {
                others
                    .iter()
                    .all(|other| world.nodes[g].links.contains_key(other))
            })
        })
}

/// Whether every region is a full mesh and its gateways are linked to every other region's.
fn formed(world: &World) -> bool {
    if !(0..world.nodes.len()).all(|i| in_full_mesh(world, i)) {
        return false;
    }
    let all = all_gateways(world);
    (0..world.net.regions).all(|r| gateways_recovered(world, &all, r))
}

/// Places requests entering at random nodes, walking them hop by hop as the nodes would (each
/// asks its view where the model can go and ranks the candidates by placement's score), and
/// compares the executor reached with the best one possible.
fn place(world: &mut World, report: &mut Report) {
    let requests = 2000;
    let mut added = Vec::new();
    let mut served = 0;
    let score =
        |load: &ModelLoad| placement::expected_wait(&candidate("", 0, load)).as_secs_f64() * 1000.0;
    for k in 0..requests {
        let model = if k % 2 == 0 { EVERYWHERE } else { ONE_REGION };
        let entry = loop {
            let e = world.rng.below(world.nodes.len());
            let n = &world.nodes[e];
            if n.alive && n.serving.is_empty() {
                break e;
            }
        };
        let best = world
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive)
            .filter_map(|(i, n)| {
                let load = n.serving.iter().find(|l| l.model == model)?;
                Some(rtt_ms(world, entry, i) + score(load))
            })
            .fold(f64::INFINITY, f64::min);
        let (mut at, mut path, mut budget, mut cost) = (
            entry,
            vec![world.nodes[entry].name.clone()],
            ganglion_client_hop_budget(),
            0.0,
        );
        loop {
            if let Some(load) = world.nodes[at].serving.iter().find(|l| l.model == model) {
                cost += score(load);
                served += 1;
                added.push(cost - best);
                break;
            }
            let options: Vec<(String, ModelLoad)> =
                match world.nodes[at].view.candidates(model, &path, budget) {
                    Candidates::Hosts(c) | Candidates::Regions(c) => c,
                    Candidates::Gateways(g) => {
                        g.into_iter().map(|n| (n, ModelLoad::idle(model))).collect()
                    }
                    Candidates::None => break,
                };
            let candidates: Vec<placement::Candidate> = options
                .iter()
                .map(|(name, load)| {
                    let rtt = (rtt_ms(world, at, id_of(name)) * 1000.0) as u64;
                    candidate(name, rtt, load)
                })
                .collect();
            let Some(next) = placement::rank(&candidates, &path, 1)
                .first()
                .map(|c| c.name.clone())
            else {
                break;
            };
            let next = id_of(&next);
            cost += rtt_ms(world, at, next);
            path.push(world.nodes[next].name.clone());
            budget -= 1;
            at = next;
        }
    }
    report.placed = served as f64 / requests as f64;
    report.added_ms = Spread::of(added);
}

/// The default hop budget a client's request gets.
fn ganglion_client_hop_budget() -> u8 {
    3
}

fn candidate(name: &str, rtt_micros: u64, load: &ModelLoad) -> placement::Candidate {
    placement::Candidate {
        name: name.to_owned(),
        rtt: std::time::Duration::from_micros(rtt_micros),
        queued: load.queued,
        in_flight: load.in_flight,
        concurrency: load.concurrency,
        service_time: placement::service_time(load.service_ms),
        sent_by_us: 0,
        recent_failures: 0,
        warm: false,
    }
}

fn rtt_ms(world: &World, a: usize, b: usize) -> f64 {
    world.net.rtt(world.nodes[a].region, world.nodes[b].region) as f64 / MS as f64
}

/// Of 200 cache keys, each asked of 10 random live nodes: the share of answers naming the owner
/// that the region's true live membership names.
fn owner_agreement(world: &mut World) -> f64 {
    let (mut agree, mut asked) = (0usize, 0usize);
    for key in 0..200u32 {
        let key = key.to_be_bytes();
        for _ in 0..10 {
            let i = world.rng.below(world.nodes.len());
            let node = &world.nodes[i];
            if !node.alive {
                continue;
            }
            let seen = std::iter::once(node.name.as_str()).chain(node.view.region_peers());
            let truth: Vec<&str> = world
                .members(node.region)
                .map(|m| world.nodes[m].name.as_str())
                .collect();
            asked += 1;
            if rendezvous::owner(&key, seen) == rendezvous::owner(&key, truth) {
                agree += 1;
            }
        }
    }
    agree as f64 / asked.max(1) as f64
}

/// The report as one row of the table [`header`] heads.
pub fn row(r: &Report) -> String {
    let s = |x: Option<f64>| x.map_or("—".to_owned(), |v| format!("{v:.1}"));
    format!(
        "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {:.0} / {} | {:.2} ({:.0}) | {:.1} % | {:.1} / {:.1} | {:.2} % | {} / {} | {} | {:.0} |",
        r.nodes,
        r.regions,
        s(r.formation_s),
        r.unjoined,
        r.join_s.p50,
        r.join_s.max,
        r.death_s.p50,
        r.death_s.max,
        r.takeover_s.p50,
        r.takeover_s.max,
        r.bytes_mean,
        r.bytes_max,
        r.links_mean,
        r.links_max,
        r.false_deaths_per_link_hour,
        r.link_hours,
        r.placed * 100.0,
        r.added_ms.p50,
        r.added_ms.p95,
        r.owner_agreement * 100.0,
        r.refused_adverts,
        r.adverts,
        r.refused_dials,
        r.wall_s,
    )
}

/// The table's header.
pub fn header() -> String {
    "| nodes | regions | formed in (s) | unjoined | join converged p50 / max (s) | death converged p50 / max (s) | gateway replaced p50 / max (s) | bytes/s per node mean / max | links per node mean / max | false deaths per link-hour (link-hours) | requests placed | added RTT+queue p50 / p95 (ms) | cache owner agreement | refused adverts / sent | refused dials | wall (s) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".to_owned()
}
