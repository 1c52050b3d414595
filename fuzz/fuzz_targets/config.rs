//! A node's TOML config file, parsed and validated as `ganglion-node run --config` does. The
//! identity is always a real one (made once per run, in a temporary folder), so that validation goes
//! on to every other field. Validation reads files and binds nothing. Nothing may panic.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use ganglion::ConfigFile;

static IDENTITY: LazyLock<PathBuf> = LazyLock::new(|| {
    // One folder, made again by each run (its keys are throwaway).
    let dir = std::env::temp_dir().join("ganglion-fuzz-config");
    let _ = std::fs::remove_dir_all(&dir);
    ganglion::init_cluster(&dir.join("cluster")).expect("cluster credentials");
    let identity = dir.join("node");
    ganglion::issue_cert(&dir.join("cluster"), "fuzz", &identity).expect("node identity");
    identity
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut file) = toml::from_str::<ConfigFile>(text) else {
        return;
    };
    file.node.identity = Some(IDENTITY.clone());
    let _ = file.validate();
});
