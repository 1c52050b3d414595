//! The model store: a cache folder (default `~/.cache/ganglion/models`) with one folder per
//! model holding its verified files.
//!
//! A model counts as present only when its folder holds the `complete` marker, which `pull`
//! writes last, after every checksum matched; an interrupted pull never looks done.

use std::path::{Path, PathBuf};

use super::catalog::{ModelSpec, Source};

/// Marker file written after every file of a model was verified.
pub const COMPLETE_MARKER: &str = "complete";

/// Why a model cannot be used from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The model has not been pulled (or its pull did not finish).
    #[error(
        "model `{id}` is not in the model store at {dir}; run `ganglion-node models pull {id}`"
    )]
    NotPulled {
        /// The model id.
        id: String,
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// An operator's local model path does not exist.
    #[error("model `{id}`: local path {path} does not exist")]
    MissingLocal {
        /// The model id.
        id: String,
        /// The configured path.
        path: PathBuf,
    },
}

/// The user's home folder (`HOME`), for default state locations (this store's, and the node's
/// data folder; `config::env` lists it with the other variables the node reads).
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(Into::into)
}

/// The cache folder of model files.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// A store rooted at `root` (created on first pull).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The default location: `$HOME/.cache/ganglion/models`.
    pub fn default_root() -> Option<PathBuf> {
        home_dir().map(|h| h.join(".cache/ganglion/models"))
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one model (`@ganglion/x` becomes `ganglion--x`).
    pub fn model_dir(&self, id: &str) -> PathBuf {
        let mut safe = String::new();
        for c in id.trim_start_matches('@').chars() {
            match c {
                '/' => safe.push_str("--"),
                c if c.is_ascii_alphanumeric() || "._-".contains(c) => safe.push(c),
                _ => safe.push('-'),
            }
        }
        self.root.join(safe)
    }

    /// Whether every file of `spec` is present and verified.
    pub fn is_complete(&self, spec: &ModelSpec) -> bool {
        let files = match &spec.source {
            Source::Local(path) => path.exists(),
            Source::Compiled { .. } => true,
            Source::PypiWheel { .. } | Source::PypiWheels(_) | Source::PypiChunks { .. } => {
                self.model_dir(&spec.id).join(COMPLETE_MARKER).exists()
            }
        };
        // A model on ONNX Runtime needs its library too.
        files && (!spec.task.on_onnx_runtime() || self.onnx_runtime().is_ok())
    }

    /// ONNX Runtime's library, once pulled ([`super::catalog::onnx_runtime`]).
    pub fn onnx_runtime(&self) -> Result<PathBuf, StoreError> {
        let runtime = super::catalog::onnx_runtime();
        let dir = self.model_dir(&runtime.id);
        if dir.join(COMPLETE_MARKER).exists() {
            // An absolute path: the loader would look beside the executable for a relative one.
            Ok(
                std::path::absolute(dir.join(super::catalog::ONNX_RUNTIME_LIBRARY))
                    .unwrap_or_else(|_| dir.join(super::catalog::ONNX_RUNTIME_LIBRARY)),
            )
        } else {
            Err(StoreError::NotPulled {
                id: runtime.id,
                dir,
            })
        }
    }

    /// The folder (or, for a local GGUF, the file) to load `spec` from.
    pub fn locate(&self, spec: &ModelSpec) -> Result<PathBuf, StoreError> {
        match &spec.source {
            Source::Local(path) if path.exists() => Ok(path.clone()),
            // Nothing on disk: the loader knows it by its library (`LoadPlan::compiled`).
            Source::Compiled { .. } => Ok(self.model_dir(&spec.id)),
            Source::Local(path) => Err(StoreError::MissingLocal {
                id: spec.id.clone(),
                path: path.clone(),
            }),
            Source::PypiWheel { .. } | Source::PypiWheels(_) | Source::PypiChunks { .. }
                if self.is_complete(spec) =>
            {
                Ok(self.model_dir(&spec.id))
            }
            Source::PypiWheel { .. } | Source::PypiWheels(_) | Source::PypiChunks { .. } => {
                Err(StoreError::NotPulled {
                    id: spec.id.clone(),
                    dir: self.model_dir(&spec.id),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_folders_are_safe_names() {
        let store = ModelStore::new("/cache");
        assert_eq!(
            store.model_dir("@ganglion/smollm2-135m-instruct"),
            PathBuf::from("/cache/ganglion--smollm2-135m-instruct")
        );
        assert_eq!(
            store.model_dir("../../etc"),
            PathBuf::from("/cache/..--..--etc")
        );
    }
}
