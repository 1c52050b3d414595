//! Run with: cargo bench --workspace --profile dev --bench metering
//!
//! What metering adds to a request on the node that runs it, and how many ledger records a
//! node commits per second, in one run:
//! - `1 client`: reserve on the meter, commit the record durably (fsync), count the charge,
//!   release the hold: p50 and p99 per request;
//! - `32 clients`: records committed per second with 32 requests charging at once (the writer
//!   groups them, one fsync per group: durability per record is not negotiable).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ganglion::actors::meter::{self, MeterHandle};
use ganglion::metering::ledger::{Ledger, LedgerWriter, Record};
use ractor::Actor;

const SINGLE: usize = 300;
const CLIENTS: usize = 32;
const PER_CLIENT: usize = 150;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn record(charge: u128) -> Record {
    Record {
        charge_id: format!("{charge:x}"),
        request_id: "1".into(),
        account: "bench".into(),
        key_id: "0123456789abcdef".into(),
        model: "@ganglion/all-minilm-l6-v2".into(),
        input_tokens: 12,
        output_tokens: 0,
        micro_neurons: 1_000_000,
        entry: "bench".into(),
        executor: "bench".into(),
        at_ms: 0,
        day: 1,
    }
}

async fn run() {
    let dir = std::env::temp_dir().join(format!("ganglion-bench-metering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ledger = Arc::new(Ledger::open(&dir.join("ledger.redb")).expect("ledger"));
    let writer = LedgerWriter::start(ledger.clone());
    let (actor, _) = Actor::spawn(
        None,
        meter::Meter,
        meter::Arguments {
            node: "bench".into(),
            ledger,
            changed: Arc::default(),
        },
    )
    .await
    .expect("meter");
    let meter = MeterHandle::new(actor);

    let mut times = Vec::with_capacity(SINGLE);
    for i in 0..SINGLE {
        let start = Instant::now();
        let hold = meter
            .reserve("bench", None, 1, 1_000_000, i as u128)
            .await
            .expect("reserve");
        assert!(writer.commit(record(i as u128)).await.expect("commit"));
        meter.charged(i as u128, 1, "bench", 1_000_000);
        drop(hold);
        times.push(start.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "metering, 1 client:   p50 {:>8.3} ms   p99 {:>8.3} ms   ({SINGLE} requests)",
        ms(pct(0.50)),
        ms(pct(0.99))
    );

    let start = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (writer, meter) = (writer.clone(), meter.clone());
        clients.spawn(async move {
            for i in 0..PER_CLIENT {
                let charge = 1_000_000 + (c * PER_CLIENT + i) as u128;
                let hold = meter
                    .reserve("bench", None, 1, 1_000_000, charge)
                    .await
                    .expect("reserve");
                writer.commit(record(charge)).await.expect("commit");
                meter.charged(charge, 1, "bench", 1_000_000);
                drop(hold);
            }
        });
    }
    while clients.join_next().await.is_some() {}
    let took = start.elapsed();
    let records = CLIENTS * PER_CLIENT;
    println!(
        "ledger, {CLIENTS} clients:  {:>8.0} records/s   ({records} records in {:.2} s)",
        records as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
