//! Stage 3, at the entry node: the mesh's result cache.
//!
//! A request with a cache key ([`crate::cache::key`]) is looked up at the shard that owns the
//! key ([`crate::cache::owner_of`] over every live shard of the mesh), on this node or over a
//! `Cache` stream to a peer. A hit is replayed here, with the framing of a live answer, for
//! 0 Neurons (counted as a cached request of the account). A miss leads the key's fill:
//! the request runs as usual, and its final frame, complete and successful, is stored on the
//! way out. Identical requests meanwhile wait at the shard for that answer; if the run fails,
//! the next one leads. A request without a key, or when no shard can be asked, runs without
//! the cache (`BYPASS`, or `MISS` when the shard could not be reached). Losing a shard never
//! fails a request. A hit found at a peer's shard is kept here as a near copy
//! ([`crate::cache::near`]): this node's next hits for the key are answered without the trip.

use std::time::{Duration, Instant};

use ganglion_client::protocol::{
    CacheReport, CacheStatus, Input, Output, ResponseFrame, Timings, Usage,
};

use super::admit::Admitted;
use super::authenticate::ANONYMOUS;
use super::{Context, Flow, Gone, Origin, Responder, final_frame, ms};
use crate::actors::cache_shard::{LocalLease, Lookup, now_ms};
use crate::cache::flight::Patience;
use crate::cache::key::{CacheKey, key_of};
use crate::cache::store::{Answer, Found};
use crate::cache::{ShardId, owner_of};
use crate::peer::cache::{self as remote, RemoteLease, RemoteLookup};

/// Most bytes of text in one replayed delta. The whole answer is at hand, so a typical one
/// goes as one delta: each frame more costs the client a wake-up (tens of microseconds on a
/// virtual machine), and a longer one still streams in pieces a client can show early.
const REPLAY_CHUNK: usize = 16 * 1024;

/// Cache settings of this node.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's shards, and the mesh's.
    pub shards: crate::actors::cache_shard::Shards,
    /// How long answers are kept when a request does not say.
    pub default_ttl: Duration,
}

/// How the cache lookup ended.
#[derive(Debug)]
// Returned once per request and moved straight on: its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Began {
    /// Answered from the cache (or the requester left meanwhile).
    Answered,
    /// Run the request, with this report and lease.
    Run(Filler),
}

/// What the cache lookup leaves for the rest of the pipeline: the report for the final frame,
/// and, when this request leads its key's fill, the lease to fill under.
#[derive(Debug)]
struct Filler {
    report: CacheReport,
    fill: Option<Fill>,
}

/// The lease under which this request fills its key with its answer ([`Filling`]).
#[derive(Debug)]
pub struct Fill {
    lease: Lease,
    key: CacheKey,
    ttl_ms: u64,
}

#[derive(Debug)]
enum Lease {
    Local(LocalLease),
    Remote(RemoteLease),
}

impl Filler {
    fn without_cache(status: CacheStatus, shard: Option<&ShardId>) -> Self {
        Self {
            report: CacheReport {
                status,
                shard: shard.map(|s| s.label().to_owned()),
                age_ms: None,
            },
            fill: None,
        }
    }
}

/// Looks a client's request up: answers a hit, or goes on with the lease to fill its key
/// under, if this request leads the fill, and the cache's report in `admitted` for its final
/// frame. A request handed over by a peer goes on untouched (its entry node did all this).
pub async fn run(
    ctx: &Context,
    admitted: &mut Admitted<'_>,
    out: &mut impl Responder,
) -> Flow<Option<Fill>> {
    if admitted.origin != Origin::Client {
        return Flow::Next(None);
    }
    match begin(ctx, admitted, out).await {
        Began::Answered => Flow::Ended,
        Began::Run(Filler { report, fill }) => {
            admitted.cache_report = Some(report);
            Flow::Next(fill)
        }
    }
}

/// Looks the request up; replays a hit, or says how to run it.
async fn begin(ctx: &Context, admitted: &Admitted<'_>, out: &mut impl Responder) -> Began {
    let settings = &ctx.cache;
    let request = &admitted.request;
    let mut bypass = || {
        settings.shards.bypassed();
        let filler = Filler::without_cache(CacheStatus::Bypass, None);
        out.cache_decided(&filler.report);
        Began::Run(filler)
    };
    // Keyless callers share the account `anonymous` but are different people: their
    // answers are not shared.
    let Some(account) = request.account.as_ref().filter(|a| a.name != ANONYMOUS) else {
        return bypass();
    };
    let Some(secret) = admitted.cache_secret.as_ref() else {
        return bypass();
    };
    // Admission gave a chat request its `max_tokens`: the default here is never used.
    let default_max_tokens = admitted.spec.default_max_tokens;
    let Ok(key) = key_of(&account.name, secret, request, default_max_tokens) else {
        return bypass();
    };
    let members = settings.shards.members();
    let Some(shard) = owner_of(&key.hash, &members) else {
        return bypass();
    };
    // Waiting for another request's fill takes at most half of what is left, so that the
    // request can still run by itself in the other half.
    let left = admitted.deadline.saturating_duration_since(Instant::now());
    let patience = Patience {
        wait_ms: u64::try_from(left.as_millis() / 2).unwrap_or(u64::MAX),
        lease_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
    };
    // A key a peer's shard owns may have a copy here, from an earlier hit.
    let near = (shard.node != ctx.node).then(|| settings.shards.near());
    let copy = near.and_then(|near| near.hit(&key, now_ms()));
    let copied = copy.is_some();
    let looked = match copy {
        Some(found) => Ok(found),
        None => {
            let lookup = lookup(ctx, shard, &key, patience);
            let gone = out.gone();
            tokio::select! {
                looked = lookup => looked,
                () = gone => return Began::Answered,
            }
        }
    };
    match looked {
        // An answer is replayed only when it answers this request (a peer's fill is checked
        // for its bounds at the shard; this checks its shape against the input too).
        Ok(found) if found.answer.output.answers(&admitted.request.input) => {
            if let Some(near) = near.filter(|_| !copied) {
                near.keep(&key, &found, now_ms());
            }
            replay(ctx, admitted, shard, found, out).await;
            Began::Answered
        }
        Ok(_) => {
            tracing::warn!(shard = %shard.label(), "a cached answer does not fit its request; running the model");
            let filler = Filler::without_cache(CacheStatus::Miss, Some(shard));
            out.cache_decided(&filler.report);
            Began::Run(filler)
        }
        Err(lease) => {
            let ttl = request
                .cache
                .ttl_secs
                .map_or(settings.default_ttl, |s| Duration::from_secs(u64::from(s)));
            let mut filler = Filler::without_cache(CacheStatus::Miss, Some(shard));
            out.cache_decided(&filler.report);
            filler.fill = lease.map(|lease| Fill {
                lease,
                key,
                ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            });
            Began::Run(filler)
        }
    }
}

/// Asks the shard that owns `key`: the stored answer, or (as `Err`) the lease to fill it under,
/// if this request is to fill it.
async fn lookup(
    ctx: &Context,
    shard: &ShardId,
    key: &CacheKey,
    patience: Patience,
) -> Result<Found, Option<Lease>> {
    let settings = &ctx.cache;
    if shard.node == ctx.node {
        match settings.shards.local(shard.index) {
            Some(handle) => match handle.lookup(key, patience).await {
                Ok(Lookup::Hit(found)) => Ok(found),
                Ok(Lookup::Lead(lease)) => Err(Some(Lease::Local(lease))),
                Ok(Lookup::Busy) => Err(None),
                Err(e) => {
                    tracing::debug!(error = %e, "local cache shard did not answer");
                    Err(None)
                }
            },
            None => Err(None),
        }
    } else {
        match remote_lookup(ctx, shard, key, patience).await {
            // A peer's answer is kept only within the protocol's bounds.
            Ok(RemoteLookup::Hit(found)) if found.answer.output.within_bounds() => Ok(found),
            Ok(RemoteLookup::Hit(_)) => {
                tracing::warn!(shard = %shard.label(), "a peer's cache shard answered out of bounds; running without it");
                Err(None)
            }
            Ok(RemoteLookup::Lead(lease)) => Err(Some(Lease::Remote(lease))),
            Ok(RemoteLookup::Busy) => Err(None),
            Err(e) => {
                tracing::debug!(shard = %shard.label(), error = %e, "cache shard could not be asked; running without it");
                Err(None)
            }
        }
    }
}

async fn remote_lookup(
    ctx: &Context,
    shard: &ShardId,
    key: &CacheKey,
    patience: Patience,
) -> Result<RemoteLookup, String> {
    let slot = ctx
        .cache
        .shards
        .remote_slot()
        .ok_or("this node has as many cache streams open as it allows")?;
    let connection = ctx
        .cache
        .shards
        .connection(&shard.node)
        .ok_or_else(|| format!("no connection to `{}`", shard.node))?;
    remote::lookup(&connection, shard.index, key, patience, slot)
        .await
        .map_err(|e| e.to_string())
}

/// Answers from the cache: the text as deltas (as a live answer streams), then the final
/// frame, free; the hit is counted for the account.
async fn replay(
    ctx: &Context,
    admitted: &Admitted<'_>,
    shard: &ShardId,
    found: Found,
    out: &mut impl Responder,
) {
    let report = CacheReport {
        status: CacheStatus::Hit,
        shard: Some(shard.label().to_owned()),
        age_ms: Some(found.age_ms),
    };
    out.cache_decided(&report);
    let mut first_token_ms = None;
    // A chat's answer streams, as it did live; a transcript comes whole, as it did live.
    if let (Output::Text { text, .. }, Input::Chat(_)) =
        (&found.answer.output, &admitted.request.input)
    {
        first_token_ms = Some(ms(admitted.received.elapsed()));
        for chunk in chunks(text, REPLAY_CHUNK) {
            if out
                .send(ResponseFrame::Delta(chunk.to_owned()))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    let total_ms = ms(admitted.received.elapsed());
    let Answer {
        output,
        input_tokens,
        output_tokens,
    } = found.answer;
    let usage = Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    };
    let timings = Timings {
        queue_ms: 0.0,
        first_token_ms,
        total_ms,
    };
    let response = final_frame::answered_here(
        &ctx.node,
        &admitted.spec.id,
        admitted.request.id,
        output,
        usage,
        timings,
        report,
    );
    count_hit(ctx, admitted);
    let _ = out.send(ResponseFrame::Final(response)).await;
}

/// The hit counts as a cached request of the account today. It writes no ledger record: it
/// cost nothing, and an account past its quota could otherwise grow every ledger without
/// bound through hits alone.
fn count_hit(ctx: &Context, admitted: &Admitted<'_>) {
    if let Some(account) = &admitted.request.account {
        let day = crate::metering::usage::day_of(crate::metering::unix_now());
        ctx.meter.cached(day, &account.name);
    }
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn chunks(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // A character longer than `max` bytes goes out whole.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// A responder that, when this request leads its key's fill, stores the answer as its final
/// frame passes. A request that ends any other way drops the lease, and the next waiting
/// request leads.
pub struct Filling<'a, R> {
    /// Where frames go.
    pub inner: &'a mut R,
    /// The lease to fill under (`None` when this request does not fill: a request handed over
    /// by a peer, whose entry node fills, or one that runs without the cache).
    pub fill: Option<Fill>,
}

impl<R: Responder> Responder for Filling<'_, R> {
    async fn send(&mut self, frame: ResponseFrame) -> Result<(), Gone> {
        if let ResponseFrame::Final(response) = &frame
            && let Some(fill) = self.fill.take()
        {
            let answer = Answer {
                output: response.output.clone(),
                input_tokens: response.usage.input_tokens,
                output_tokens: response.usage.output_tokens,
            };
            match fill.lease {
                Lease::Local(lease) => lease.fill(fill.key, answer, fill.ttl_ms),
                Lease::Remote(lease) => lease.fill(answer, fill.ttl_ms),
            }
        }
        self.inner.send(frame).await
    }

    fn gone(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.inner.gone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_text_is_cut_at_character_boundaries() {
        let text = "héllo wörld, ünïcode ✓ text";
        let pieces: Vec<&str> = chunks(text, 4).collect();
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| p.len() <= 4 && !p.is_empty()));
        assert_eq!(chunks("", 4).count(), 0);
        assert_eq!(chunks("✓", 1).collect::<Vec<_>>(), vec!["✓"]);
    }
}
