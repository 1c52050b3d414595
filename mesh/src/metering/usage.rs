//! Usage per account and UTC day, mesh-wide, and the quota decision.
//!
//! Each node counts what it executed as a grow-only counter per (day, account): its own totals
//! only ever grow. Nodes exchange their own totals; a node keeps, per peer, the highest totals
//! it has heard (merge = max per node), and an account's mesh-wide usage is the sum over nodes.
//! Merging is commutative, associative and idempotent, so adverts may arrive late, twice or out
//! of order. A day is the number of whole days since the Unix epoch (UTC); accounts reset at
//! 00:00 UTC because a new day starts a new counter.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::MICRO;

/// Free Neurons an account gets each UTC day (Workers AI's free allocation).
pub const FREE_DAILY_NEURONS: u64 = 10_000;

/// Seconds in a day.
const DAY_SECONDS: u64 = 86_400;

/// A UTC day: days since 1970-01-01.
pub type Day = u64;

/// The UTC day of Unix time `now` (seconds).
pub fn day_of(now: u64) -> Day {
    now / DAY_SECONDS
}

/// Unix time (seconds) at which `day` ends and the next allocation starts.
pub fn reset_at(day: Day) -> u64 {
    day.saturating_add(1).saturating_mul(DAY_SECONDS)
}

/// Latest time that can be shown (9999-12-31T23:59:59Z): RFC 3339 has four-digit years.
const LATEST_SHOWN: u64 = 253_402_300_799;

/// RFC 3339 text of Unix time `secs` (UTC, to the second; clamped to year 9999).
pub fn time_text(secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.min(LATEST_SHOWN));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `YYYY-MM-DD` of a UTC day.
pub fn day_text(day: Day) -> String {
    time_text(day.saturating_mul(DAY_SECONDS))[..10].to_owned()
}

/// The UTC day of `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<Day> {
    let at = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(day_of(secs))
}

/// One node's totals for one account and day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Micro-Neurons charged.
    pub micro: u64,
    /// Requests charged.
    pub requests: u64,
    /// Requests answered from the cache (free).
    pub cached: u64,
}

/// `node`'s totals for `account` on `day` in `counters`, zero until counted.
fn totals_of<'a>(
    counters: &'a mut BTreeMap<(Day, String), BTreeMap<String, Totals>>,
    day: Day,
    account: &str,
    node: &str,
) -> &'a mut Totals {
    counters
        .entry((day, account.to_owned()))
        .or_default()
        .entry(node.to_owned())
        .or_default()
}

impl Totals {
    /// One charged request of `micro` micro-Neurons.
    fn charge(micro: u64) -> Self {
        Self {
            micro,
            requests: 1,
            cached: 0,
        }
    }

    fn max(self, other: Self) -> Self {
        Self {
            micro: self.micro.max(other.micro),
            requests: self.requests.max(other.requests),
            cached: self.cached.max(other.cached),
        }
    }

    fn plus(self, other: Self) -> Self {
        Self {
            micro: self.micro.saturating_add(other.micro),
            requests: self.requests.saturating_add(other.requests),
            cached: self.cached.saturating_add(other.cached),
        }
    }
}

/// One node's own totals, as it advertises them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeUsage {
    /// The day.
    pub day: Day,
    /// The account.
    pub account: String,
    /// The node's totals for them.
    pub totals: Totals,
}

/// Which of a node's own totals its next advert carries, when there are more accounts than an
/// advert holds: first those that grew since they were last advertised (a charge reaches the
/// account's home within an advert or two), then the others in turn from where the last advert
/// stopped, so that every account is carried within `ceil(n / max)` adverts however many
/// there are. Merging is a max per node, so any subset in any order is safe. Pure.
#[derive(Debug, Default)]
pub struct AdvertWindow {
    /// Totals last advertised per account, for the day they were, and in which advert.
    sent: std::collections::HashMap<String, (Day, Totals, u64)>,
    /// Adverts picked for so far.
    adverts: u64,
    /// The account the last turn stopped after.
    cursor: String,
}

impl AdvertWindow {
    /// At most `max` of `own` (one day's totals, sorted by account) for the next advert.
    pub fn pick(&mut self, own: Vec<NodeUsage>, max: usize) -> Vec<NodeUsage> {
        self.adverts += 1;
        if let Some(day) = own.first().map(|u| u.day) {
            self.sent.retain(|_, (d, _, _)| *d == day);
        }
        let (mut grown, rest): (Vec<_>, Vec<_>) = own.into_iter().partition(|u| {
            self.sent
                .get(&u.account)
                .is_none_or(|(d, t, _)| (*d, *t) != (u.day, u.totals))
        });
        // Those advertised longest ago first, so that however many grow at once, each is
        // carried in turn.
        grown.sort_by_key(|u| self.sent.get(&u.account).map_or(0, |(_, _, at)| *at));
        grown.truncate(max);
        if grown.len() < max && !rest.is_empty() {
            let start = rest.partition_point(|u| u.account <= self.cursor);
            let mut turn: Vec<NodeUsage> = rest[start..]
                .iter()
                .chain(&rest[..start])
                .cloned()
                .collect();
            turn.truncate(max - grown.len());
            if let Some(last) = turn.last() {
                self.cursor = last.account.clone();
            }
            grown.extend(turn);
        }
        for u in &grown {
            self.sent
                .insert(u.account.clone(), (u.day, u.totals, self.adverts));
        }
        grown
    }
}

/// Every node's totals per (day, account), as this node knows them: from the node's adverts,
/// and, at an account's home, from the charges reported when holds are released (a lower
/// bound of the same counter, so the larger of the two counts).
#[derive(Debug, Clone, Default)]
pub struct UsageCounters {
    counters: BTreeMap<(Day, String), BTreeMap<String, Totals>>,
    reported: BTreeMap<(Day, String), BTreeMap<String, Totals>>,
    /// Accounts heard of from each peer, per day: bounded, so that a member cannot grow this
    /// node's counters without end by advertising made-up accounts.
    heard: std::collections::HashMap<(String, Day), usize>,
}

/// Most accounts a node takes from one peer's adverts for one day.
pub const MAX_ACCOUNTS_HEARD: usize = 65_536;

impl UsageCounters {
    /// Adds a charge executed by `node` (this node) to its own counter.
    pub fn charge(&mut self, node: &str, day: Day, account: &str, micro: u64) {
        let own = totals_of(&mut self.counters, day, account, node);
        *own = own.plus(Totals::charge(micro));
    }

    /// Counts a request `node` (this node) answered from the cache, free.
    pub fn cached(&mut self, node: &str, day: Day, account: &str) {
        let own = totals_of(&mut self.counters, day, account, node);
        *own = own.plus(Totals {
            cached: 1,
            ..Totals::default()
        });
    }

    /// Merges what `node` says its totals are (max per node: never goes back).
    /// Returns how many records were dropped because `node` advertised more than
    /// [`MAX_ACCOUNTS_HEARD`] accounts that day.
    pub fn merge(&mut self, node: &str, usage: &[NodeUsage]) -> usize {
        let mut dropped = 0;
        for u in usage {
            let heard_before = self
                .counters
                .get(&(u.day, u.account.clone()))
                .is_some_and(|nodes| nodes.contains_key(node));
            if !heard_before {
                let heard = self.heard.entry((node.to_owned(), u.day)).or_default();
                if *heard >= MAX_ACCOUNTS_HEARD {
                    dropped += 1;
                    continue;
                }
                *heard += 1;
            }
            let known = totals_of(&mut self.counters, u.day, &u.account, node);
            *known = known.max(u.totals);
        }
        dropped
    }

    /// A charge `node` made, as reported to this node (the account's home) when its hold was
    /// released: counts even if `node`'s adverts never carry the account.
    pub fn report(&mut self, node: &str, day: Day, account: &str, micro: u64) {
        let reported = totals_of(&mut self.reported, day, account, node);
        *reported = reported.plus(Totals::charge(micro));
    }

    /// Per node, the larger of what it advertised and what was reported of it.
    fn per_node(&self, key: &(Day, String)) -> BTreeMap<&str, Totals> {
        let mut nodes: BTreeMap<&str, Totals> = BTreeMap::new();
        for source in [&self.counters, &self.reported] {
            for (node, totals) in source.get(key).into_iter().flatten() {
                let known = nodes.entry(node.as_str()).or_default();
                *known = known.max(*totals);
            }
        }
        nodes
    }

    /// `node`'s own totals for `day` (what it advertises).
    pub fn own(&self, node: &str, day: Day) -> Vec<NodeUsage> {
        self.counters
            .range((day, String::new())..(day + 1, String::new()))
            .filter_map(|((day, account), nodes)| {
                Some(NodeUsage {
                    day: *day,
                    account: account.clone(),
                    totals: *nodes.get(node)?,
                })
            })
            .collect()
    }

    /// Mesh-wide totals of `account` on `day`.
    pub fn total(&self, day: Day, account: &str) -> Totals {
        self.per_node(&(day, account.to_owned()))
            .values()
            .fold(Totals::default(), |a, t| a.plus(*t))
    }

    /// Mesh-wide totals of every account on `day`.
    pub fn accounts(&self, day: Day) -> BTreeMap<String, Totals> {
        let range = (day, String::new())..(day.saturating_add(1), String::new());
        let keys: std::collections::BTreeSet<&(Day, String)> = self
            .counters
            .range(range.clone())
            .chain(self.reported.range(range))
            .map(|(key, _)| key)
            .collect();
        keys.into_iter()
            .map(|key| (key.1.clone(), self.total(key.0, &key.1)))
            .collect()
    }

    /// Keeps only days `from` to `to` (older ones can no longer affect a quota; later ones
    /// are not real yet).
    pub fn keep_days(&mut self, from: Day, to: Day) {
        self.counters.retain(|(d, _), _| (from..=to).contains(d));
        self.reported.retain(|(d, _), _| (from..=to).contains(d));
        self.heard.retain(|(_, d), _| (from..=to).contains(d));
    }
}

/// What an account may use a day, in micro-Neurons: a free account its free allocation, a
/// paid one without bound; either at most its key's daily limit.
pub fn daily_limit(plan: ganglion_client::protocol::Plan, key_limit: Option<u64>) -> Option<u64> {
    let plan_limit = match plan {
        ganglion_client::protocol::Plan::Free => Some(FREE_DAILY_NEURONS * MICRO),
        ganglion_client::protocol::Plan::Paid => None,
    };
    let key_limit = key_limit.map(|neurons| neurons.saturating_mul(MICRO));
    match (plan_limit, key_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The part of a daily `limit` that one region's home may grant, with `regions` regions known:
/// each region decides at a home of its own, so each gets an equal share and together they never
/// grant more than the limit (a key used in one region of three gets a third there).
pub fn regional_share(limit: Option<u64>, regions: usize) -> Option<u64> {
    limit.map(|l| l / regions.max(1) as u64)
}

/// Why a request may not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverQuota {
    /// Micro-Neurons used (and reserved) today.
    pub used: u64,
    /// The day's limit.
    pub limit: u64,
    /// When it resets (Unix seconds).
    pub reset_at: u64,
}

/// Whether a request costing at most `max_cost` may run, given what the account has used
/// mesh-wide today, what is reserved here for requests still running, and its limit.
pub fn admit(
    used: u64,
    reserved: u64,
    max_cost: u64,
    limit: Option<u64>,
    day: Day,
) -> Result<(), OverQuota> {
    let Some(limit) = limit else { return Ok(()) };
    let committed = used.saturating_add(reserved);
    // In u128, so that no sum can wrap or saturate into "fits".
    if u128::from(used) + u128::from(reserved) + u128::from(max_cost) > u128::from(limit) {
        return Err(OverQuota {
            used: committed,
            limit,
            reset_at: reset_at(day),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_share_a_daily_limit_and_never_grant_more_than_it() {
        assert_eq!(regional_share(Some(100), 1), Some(100));
        assert_eq!(regional_share(Some(100), 3), Some(33));
        assert_eq!(regional_share(Some(100), 0), Some(100));
        assert_eq!(regional_share(None, 3), None);
        for regions in 1..50 {
            let share = regional_share(Some(10_000), regions).expect("a share");
            assert!(share * regions as u64 <= 10_000);
        }
    }

    #[test]
    fn an_advert_window_carries_grown_accounts_first_and_every_account_in_turn() {
        let usage = |account: String, micro: u64| NodeUsage {
            day: 9,
            account,
            totals: Totals {
                micro,
                requests: 1,
                cached: 0,
            },
        };
        let all = |bump: Option<usize>| -> Vec<NodeUsage> {
            (0..10)
                .map(|n| usage(format!("acct-{n}"), if Some(n) == bump { 2 } else { 1 }))
                .collect()
        };
        let mut window = AdvertWindow::default();
        let names = |v: Vec<NodeUsage>| v.into_iter().map(|u| u.account).collect::<Vec<_>>();
        // Everything is new at first: the first four, then the next, then the rest.
        assert_eq!(
            names(window.pick(all(None), 4)),
            ["acct-0", "acct-1", "acct-2", "acct-3"]
        );
        assert_eq!(
            names(window.pick(all(None), 4)),
            ["acct-4", "acct-5", "acct-6", "acct-7"]
        );
        assert_eq!(
            names(window.pick(all(None), 4)),
            ["acct-8", "acct-9", "acct-0", "acct-1"]
        );
        // The turn goes on from where it stopped, wrapping around.
        assert_eq!(
            names(window.pick(all(None), 4)),
            ["acct-2", "acct-3", "acct-4", "acct-5"]
        );
        // An account that grew goes first.
        assert_eq!(
            names(window.pick(all(Some(9)), 4)),
            ["acct-9", "acct-6", "acct-7", "acct-8"]
        );
        // When more grow at once than an advert holds, each is carried in turn.
        let mut busy = AdvertWindow::default();
        let grow = |micro: u64| -> Vec<NodeUsage> {
            (0..10).map(|n| usage(format!("acct-{n}"), micro)).collect()
        };
        assert_eq!(
            names(busy.pick(grow(1), 4)),
            ["acct-0", "acct-1", "acct-2", "acct-3"]
        );
        assert_eq!(
            names(busy.pick(grow(2), 4)),
            ["acct-4", "acct-5", "acct-6", "acct-7"]
        );
        assert_eq!(
            names(busy.pick(grow(3), 4)),
            ["acct-8", "acct-9", "acct-0", "acct-1"]
        );
        // A new day forgets what was sent.
        let tomorrow: Vec<NodeUsage> = all(None)
            .into_iter()
            .map(|u| NodeUsage { day: 10, ..u })
            .collect();
        assert_eq!(names(window.pick(tomorrow, 2)), ["acct-0", "acct-1"]);
    }
    use ganglion_client::protocol::Plan;

    #[test]
    fn days_and_times_read_and_print_as_people_write_them() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(day_text(20_000), "2024-10-04");
        assert_eq!(parse_day(&day_text(20_000)), Some(20_000));
        assert_eq!(parse_day("tomorrow"), None);
        assert_eq!(time_text(reset_at(0)), "1970-01-02T00:00:00Z");
        assert_eq!(time_text(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(day_text(u64::MAX), "9999-12-31");
    }

    #[test]
    fn days_turn_at_midnight_utc() {
        let noon = 20_000 * DAY_SECONDS + 43_200;
        assert_eq!(day_of(noon), 20_000);
        assert_eq!(reset_at(day_of(noon)), 20_001 * DAY_SECONDS);
        assert_eq!(day_of(20_001 * DAY_SECONDS - 1), 20_000);
        assert_eq!(day_of(20_001 * DAY_SECONDS), 20_001);
    }

    #[test]
    fn counters_merge_by_max_per_node_and_sum_across_nodes() {
        let mut here = UsageCounters::default();
        here.charge("a", 1, "acme", 3);
        here.charge("a", 1, "acme", 3);
        let from_b = [NodeUsage {
            day: 1,
            account: "acme".into(),
            totals: Totals {
                micro: 10,
                requests: 2,
                cached: 0,
            },
        }];
        here.merge("b", &from_b);
        // Late, duplicated and stale adverts change nothing.
        here.merge("b", &from_b);
        here.merge(
            "b",
            &[NodeUsage {
                day: 1,
                account: "acme".into(),
                totals: Totals {
                    micro: 4,
                    requests: 1,
                    cached: 0,
                },
            }],
        );
        assert_eq!(
            here.total(1, "acme"),
            Totals {
                micro: 16,
                requests: 4,
                cached: 0,
            }
        );
        assert_eq!(
            here.own("a", 1),
            vec![NodeUsage {
                day: 1,
                account: "acme".into(),
                totals: Totals {
                    micro: 6,
                    requests: 2,
                    cached: 0,
                },
            }]
        );
        assert!(here.own("a", 2).is_empty(), "a new day starts from nothing");
        // A charge reported to the home counts even before (or without) the node's advert,
        // and not twice once the advert carries it.
        here.report("c", 1, "acme", 5);
        assert_eq!(
            here.total(1, "acme"),
            Totals {
                micro: 21,
                requests: 5,
                cached: 0,
            }
        );
        here.merge(
            "c",
            &[NodeUsage {
                day: 1,
                account: "acme".into(),
                totals: Totals {
                    micro: 5,
                    requests: 1,
                    cached: 0,
                },
            }],
        );
        assert_eq!(
            here.total(1, "acme"),
            Totals {
                micro: 21,
                requests: 5,
                cached: 0,
            }
        );
        assert_eq!(here.accounts(1).len(), 1);
        here.keep_days(2, 3);
        assert_eq!(here.total(1, "acme"), Totals::default());
    }

    #[test]
    fn merging_is_order_independent() {
        let updates = [(5, 1), (9, 2), (7, 2)];
        let mut forward = UsageCounters::default();
        let mut backward = UsageCounters::default();
        let usage = |(micro, requests)| {
            [NodeUsage {
                day: 0,
                account: "x".into(),
                totals: Totals {
                    micro,
                    requests,
                    cached: 0,
                },
            }]
        };
        for u in updates {
            forward.merge("n", &usage(u));
        }
        for u in updates.iter().rev() {
            backward.merge("n", &usage(*u));
        }
        assert_eq!(forward.total(0, "x"), backward.total(0, "x"));
    }

    #[test]
    fn limits_and_the_quota_decision() {
        assert_eq!(
            daily_limit(Plan::Free, None),
            Some(FREE_DAILY_NEURONS * MICRO)
        );
        assert_eq!(daily_limit(Plan::Free, Some(30)), Some(30 * MICRO));
        assert_eq!(daily_limit(Plan::Paid, None), None);
        assert_eq!(daily_limit(Plan::Paid, Some(50_000)), Some(50_000 * MICRO));
        let limit = Some(30 * MICRO);
        assert!(admit(24 * MICRO, 3 * MICRO, 3 * MICRO, limit, 7).is_ok());
        let over = admit(24 * MICRO, 3 * MICRO, 4 * MICRO, limit, 7).expect_err("over");
        assert_eq!(over.used, 27 * MICRO);
        assert_eq!(over.reset_at, reset_at(7));
        assert!(admit(u64::MAX, u64::MAX, u64::MAX, None, 7).is_ok());
        assert!(admit(u64::MAX, 1, 1, Some(u64::MAX), 7).is_err());
    }
}
