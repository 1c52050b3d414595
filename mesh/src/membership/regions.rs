//! Regions: which nodes of a region are its gateways, which connections between regions are
//! kept, and the summary a gateway gives the other regions of what its own region hosts.
//!
//! A region is a full mesh. Between regions only gateways connect, each to every other region's
//! gateways, so that a node's connections and adverts grow with its region and the number of
//! regions, never with the whole mesh. Gateways are chosen without talking: the top
//! [`GATEWAYS_PER_REGION`] of the region's members by rendezvous hashing on the region's name,
//! so every member computes the same set from the same members, and a gateway that dies is
//! replaced by the next in rank as soon as its peers drop it.

use serde::{Deserialize, Serialize};

use super::ModelLoad;
use crate::routing::rendezvous;

/// Gateways per region: two, so that one dying leaves the region reachable while the next in
/// rank takes its place.
pub const GATEWAYS_PER_REGION: usize = 2;

/// The region of a node whose configuration names none.
pub const DEFAULT_REGION: &str = "default";

/// Longest region name.
pub const MAX_REGION_NAME: usize = 64;

/// Most models a region summary lists; a region hosting more lists those with most hosts, and
/// the gateway says so (see [`summarize`]).
pub const MAX_SUMMARY_MODELS: usize = 256;

/// Whether `region` is a valid region name: 1 to 64 of `a-z`, `0-9`, `-`, `_`, `.`.
pub fn region_ok(region: &str) -> bool {
    (1..=MAX_REGION_NAME).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

/// The gateways of `region` among its `members` (this node included), best first.
pub fn gateways<'a>(region: &str, members: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    rendezvous::top(region.as_bytes(), members, GATEWAYS_PER_REGION)
}

/// Whether a connection between a node of `region` and a peer of `peer_region` is kept: always
/// inside a region; between regions only from gateway to gateway.
pub fn keep_connection(region: &str, gateway: bool, peer_region: &str, peer_gateway: bool) -> bool {
    region == peer_region || (gateway && peer_gateway)
}

/// What a region hosts, as its gateways tell the other regions: per model, how many of its
/// nodes serve it and their load added up. Its size follows the catalog, not the region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSummary {
    /// The region.
    pub region: String,
    /// Models served in the region, by id.
    pub models: Vec<RegionModel>,
}

/// One model a region serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionModel {
    /// Nodes serving it.
    pub hosts: u32,
    /// Their load added up: queued, in flight and slots summed, the fastest service time.
    pub load: ModelLoad,
}

/// The summary of `region` from the loads of every model its members serve (one entry per
/// member and model), and whether models were left out to stay within
/// [`MAX_SUMMARY_MODELS`].
pub fn summarize<'a>(
    region: &str,
    loads: impl IntoIterator<Item = &'a ModelLoad>,
) -> (RegionSummary, bool) {
    let mut models: std::collections::BTreeMap<&str, RegionModel> = Default::default();
    for load in loads {
        let entry = models
            .entry(load.model.as_str())
            .or_insert_with(|| RegionModel {
                hosts: 0,
                load: ModelLoad {
                    model: load.model.clone(),
                    queued: 0,
                    in_flight: 0,
                    concurrency: 0,
                    service_ms: f64::INFINITY,
                    warm: Vec::new(),
                },
            });
        entry.hosts = entry.hosts.saturating_add(1);
        let sum = &mut entry.load;
        sum.queued = sum.queued.saturating_add(load.queued);
        sum.in_flight = sum.in_flight.saturating_add(load.in_flight);
        sum.concurrency = sum.concurrency.saturating_add(load.concurrency.max(1));
        if load.service_ms.is_finite() {
            sum.service_ms = sum.service_ms.min(load.service_ms.max(0.0));
        }
    }
    let mut models: Vec<RegionModel> = models
        .into_values()
        .map(|mut m| {
            if !m.load.service_ms.is_finite() {
                m.load.service_ms = 0.0;
            }
            m
        })
        .collect();
    let cut = models.len() > MAX_SUMMARY_MODELS;
    if cut {
        models.sort_by(|a, b| {
            b.hosts
                .cmp(&a.hosts)
                .then_with(|| a.load.model.cmp(&b.load.model))
        });
        models.truncate(MAX_SUMMARY_MODELS);
        models.sort_by(|a, b| a.load.model.cmp(&b.load.model));
    }
    let summary = RegionSummary {
        region: region.to_owned(),
        models,
    };
    (summary, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(model: &str, queued: u32, concurrency: u32, service_ms: f64) -> ModelLoad {
        ModelLoad {
            model: model.into(),
            queued,
            in_flight: 1,
            concurrency,
            service_ms,
            warm: Vec::new(),
        }
    }

    #[test]
    fn every_member_agrees_on_the_gateways_and_a_dead_one_is_replaced_by_the_next() {
        let members: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        let chosen = gateways("eu", members.iter().map(String::as_str));
        assert_eq!(chosen.len(), GATEWAYS_PER_REGION);
        let reversed = gateways("eu", members.iter().rev().map(String::as_str));
        assert_eq!(chosen, reversed);
        // Another region's name picks other gateways from the same names, most of the time.
        let without_first: Vec<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|m| *m != chosen[0])
            .collect();
        let after = gateways("eu", without_first);
        assert_eq!(after[0], chosen[1], "the second in rank takes the lead");
        assert_eq!(gateways("eu", ["alone"]), vec!["alone"]);
    }

    #[test]
    fn only_gateways_connect_across_regions() {
        assert!(keep_connection("eu", false, "eu", false));
        assert!(keep_connection("eu", true, "us", true));
        assert!(!keep_connection("eu", true, "us", false));
        assert!(!keep_connection("eu", false, "us", true));
    }

    #[test]
    fn a_summary_adds_up_its_hosts_and_stays_within_its_bound() {
        let loads = [
            load("a", 2, 2, 30.0),
            load("a", 0, 1, 20.0),
            load("b", 0, 1, f64::NAN),
        ];
        let (summary, cut) = summarize("eu", &loads);
        assert!(!cut);
        assert_eq!(summary.models.len(), 2);
        let a = &summary.models[0];
        assert_eq!(
            (a.hosts, a.load.queued, a.load.in_flight, a.load.concurrency),
            (2, 2, 2, 3)
        );
        assert_eq!(a.load.service_ms, 20.0);
        assert_eq!(summary.models[1].load.service_ms, 0.0);
        let many: Vec<ModelLoad> = (0..MAX_SUMMARY_MODELS + 5)
            .map(|i| load(&format!("m{i:04}"), 0, 1, 1.0))
            .collect();
        let (summary, cut) = summarize("eu", &many);
        assert!(cut);
        assert_eq!(summary.models.len(), MAX_SUMMARY_MODELS);
    }

    #[test]
    fn region_names_are_short_and_plain() {
        assert!(region_ok("eu-west-1"));
        assert!(region_ok(DEFAULT_REGION));
        assert!(!region_ok(""));
        assert!(!region_ok("EU"));
        assert!(!region_ok("a b"));
        assert!(!region_ok(&"a".repeat(65)));
    }
}
