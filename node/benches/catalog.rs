//! Run with: cargo bench --workspace --profile dev --bench catalog
//! (models must be pulled first: `ganglion-node models pull`)
//!
//! The classifiers, image models and speech model through a real node, in one run: for each, the size of its
//! files, its worker's resident memory once warm, the latency of one typical input through the
//! node (p50 and p95, the cache skipped, one request at a time) and its throughput with as
//! many requests at once as the model has slots. Workers AI publishes 30–80 ms for text
//! classification and 100–300 ms for image analysis.
//! Speech reads Moonshine's own 10 s test recording.

#![allow(clippy::unwrap_used)] // a benchmark may panic on the unexpected

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ganglion::models::catalog::{
    IMAGE_MODERATION, LANGUAGE, MODERATION, OCR, ORIENTATION, SENTIMENT, SPEECH,
};
use ganglion_client::protocol::CachePolicy;
use ganglion_client::{ClassifyRequest, Client};
use ganglion_testkit::{Cluster, KEYS_REQUIRED, QUIET, ensure_models};

const RUNS: usize = 40;
const THROUGHPUT_FOR: Duration = Duration::from_secs(5);

#[derive(Clone)]
enum Input {
    Text(&'static str),
    Image(Vec<u8>),
    Audio(Vec<u8>),
}

async fn once(client: &Client, model: &str, input: &Input) {
    let skip = CachePolicy {
        skip: true,
        ..CachePolicy::default()
    };
    match input {
        Input::Text(text) => {
            let request = ClassifyRequest::new(model, vec![(*text).to_owned()]).cache(skip);
            client.classify_request(request).await.unwrap();
        }
        Input::Image(bytes) => {
            client.image(model, bytes.clone(), skip).await.unwrap();
        }
        Input::Audio(bytes) => {
            client.transcribe(model, bytes.clone(), skip).await.unwrap();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn rss_mib(pid: u64) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_mib(dir: &std::path::Path) -> f64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    ensure_models();
    let page =
        std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ocr_page.png"))
            .unwrap();
    let sentence = "The food was wonderful, but the service was painfully slow.";
    let (catalog, store) = ganglion::config::ModelsSection::default()
        .catalog_and_store()
        .unwrap();
    let recording = std::fs::read(
        store
            .locate(catalog.get(SPEECH).unwrap())
            .unwrap()
            .join("beckett.wav"),
    )
    .unwrap();
    let models: [(&str, Input); 7] = [
        (SENTIMENT, Input::Text(sentence)),
        (MODERATION, Input::Text(sentence)),
        (
            LANGUAGE,
            Input::Text("Il fait très beau aujourd'hui et nous allons à la plage."),
        ),
        (OCR, Input::Image(page.clone())),
        (ORIENTATION, Input::Image(page.clone())),
        (IMAGE_MODERATION, Input::Image(page)),
        (SPEECH, Input::Audio(recording)),
    ];
    let cluster = Cluster::new("bench-catalog");
    let mut flags = Vec::new();
    for (model, _) in &models {
        flags.extend(["--host", model]);
    }
    flags.extend([QUIET, KEYS_REQUIRED]);
    let node = cluster.start("edge", &[], &flags);
    // A paid account: the run spends more than a free day's Neurons.
    let key = cluster.issue_key("bench", &["--plan", "paid"]);
    let client = cluster.keyed_client(&node, Some(&key)).await;
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>9} {:>6} {:>10}",
        "model", "size MiB", "RSS MiB", "p50 ms", "p95 ms", "slots", "req/s"
    );
    for (model, input) in &models {
        for _ in 0..3 {
            once(&client, model, input).await;
        }
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let started = Instant::now();
            once(&client, model, input).await;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        let status = node.model_status(model).await;
        let slots = status["stats"]["concurrency"].as_u64().unwrap_or(1).max(1) as usize;
        let started = Instant::now();
        let mut done = 0usize;
        while started.elapsed() < THROUGHPUT_FOR {
            let batch = (0..slots).map(|_| once(&client, model, input));
            futures::future::join_all(batch).await;
            done += slots;
        }
        let rate = done as f64 / started.elapsed().as_secs_f64();
        let rss = status["stats"]["worker"]["pid"]
            .as_u64()
            .map_or(0.0, rss_mib);
        let spec = catalog.get(model).unwrap();
        let size = store.locate(spec).map_or(0.0, |dir| dir_mib(&dir));
        println!(
            "{:<32} {:>9.1} {:>9.0} {:>9.1} {:>9.1} {:>6} {:>10.1}",
            model,
            size,
            rss,
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            slots,
            rate
        );
    }
    println!(
        "(ONNX Runtime's library, shared by the image models: {:.1} MiB)",
        store
            .onnx_runtime()
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
    );
}
