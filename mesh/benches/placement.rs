//! Run with: cargo bench --workspace --profile dev --bench placement
//!
//! Time of one placement decision over 1,000 simulated peers: ranking the best three
//! candidates (what the router does per request) and picking the single best.

use std::time::{Duration, Instant};

use ganglion::routing::placement::{Candidate, best, rank};

fn main() {
    let peers: Vec<Candidate> = (0..1000)
        .map(|i| Candidate {
            name: format!("peer-{i:04}"),
            rtt: Duration::from_micros(500 + (i * 7919 % 50_000) as u64),
            queued: (i % 5) as u32,
            in_flight: (i % 3) as u32,
            concurrency: 2,
            service_time: Duration::from_millis(200 + (i % 11) as u64 * 10),
            sent_by_us: (i % 2) as u32,
            recent_failures: u32::from(i % 97 == 0),
            warm: false,
        })
        .collect();
    let path = vec!["edge-1".to_owned(), "peer-0007".to_owned()];
    for (label, decide) in [
        (
            "rank top 3 of 1,000",
            &(|| rank(&peers, &path, 3).len()) as &dyn Fn() -> usize,
        ),
        (
            "best of 1,000",
            &(|| usize::from(best(&peers, &path).is_some())),
        ),
    ] {
        let mut times = Vec::with_capacity(2000);
        let mut sink = 0;
        for _ in 0..2000 {
            let t = Instant::now();
            sink += decide();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{label:<22} p50 {:>7.1} µs  p99 {:>7.1} µs  ({} decisions, checksum {sink})",
            times[times.len() / 2].as_secs_f64() * 1e6,
            times[times.len() * 99 / 100].as_secs_f64() * 1e6,
            times.len()
        );
    }
}
