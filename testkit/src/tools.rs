//! Programs from outside the workspace that some tests drive: npm packages and Chromium.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::succeed;

/// An npm package at a pinned version, installed once into a folder cached outside the repo;
/// returns its `node_modules` (for `NODE_PATH`).
pub fn npm_package(name: &str, version: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap();
    let prefix = Path::new(&home)
        .join(".cache/ganglion/node")
        .join(format!("{name}-{version}"));
    let modules = prefix.join("node_modules");
    if !modules.join(name).join("package.json").exists() {
        std::fs::create_dir_all(&prefix).unwrap();
        succeed(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("{name}@{version}")),
        );
    }
    modules
}

/// Debian's Chromium, installed with apt-get when missing and running as root (as on CI);
/// otherwise the test says how to install it.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    let root = succeed(Command::new("id").arg("-u")).trim() == "0";
    assert!(
        path.exists() || root,
        "the dashboard test needs Debian's chromium: run scripts/install-chromium.sh as root"
    );
    if !path.exists() {
        // This crate sits at the workspace's root, beside `scripts/`.
        succeed(&mut Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-chromium.sh"),
        ));
    }
    assert!(path.exists(), "chromium was not installed");
    path
}
