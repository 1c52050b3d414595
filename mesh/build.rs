//! Puts llama.cpp's shared libraries beside the binaries this build makes (`target/<profile>/`),
//! so that `ganglion-node` runs from there (its run path is `$ORIGIN`) and that folder is all
//! a deployment needs: the libraries by the names the binaries ask for (`libllama.so.0`,
//! `libggml.so.0`, ...), and the CPU variants of ggml's backend (`libggml-cpu-*.so`) the node
//! picks from at run time (`src/inference/kernels.rs`).
//!
//! llama-cpp-sys-2 links only the unversioned names there, as symbolic links to versioned
//! ones it leaves behind, so the binaries could not start outside `cargo run`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_BACKENDS_DIR");
    let Some(backends) = std::env::var_os("DEP_LLAMA_BACKENDS_DIR").map(PathBuf::from) else {
        return;
    };
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    // OUT_DIR is <target>/<profile>/build/ganglion-<hash>/out.
    let Some(profile) = out.ancestors().nth(3) else {
        return;
    };
    let mut files = Vec::new();
    if let Some(lib) = backends.parent().map(|out| out.join("lib")) {
        // The names binaries ask for: `libX.so.<major>`.
        files.extend(entries(&lib).into_iter().filter(|p| {
            name(p)
                .split_once(".so.")
                .is_some_and(|(_, v)| !v.contains('.'))
        }));
    }
    // Not the AMX variant, which the node never loads (src/inference/kernels.rs).
    files.extend(
        entries(&backends)
            .into_iter()
            .filter(|p| name(p).ends_with(".so") && !name(p).contains("sapphirerapids")),
    );
    for file in files {
        println!("cargo:rerun-if-changed={}", file.display());
        let to = profile.join(name(&file));
        if same(&file, &to) {
            continue;
        }
        // Written beside and renamed: a running node keeps the file it mapped.
        let part = profile.join(format!(".{}.part", name(&file)));
        if let Err(e) = std::fs::copy(&file, &part).and_then(|_| std::fs::rename(&part, &to)) {
            println!(
                "cargo:warning=cannot copy {} to {}: {e}",
                file.display(),
                to.display()
            );
        }
    }
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `to` is already a copy of `from` (same size, not older).
fn same(from: &Path, to: &Path) -> bool {
    let (Ok(a), Ok(b)) = (std::fs::metadata(from), std::fs::symlink_metadata(to)) else {
        return false;
    };
    b.is_file()
        && a.len() == b.len()
        && matches!((a.modified(), b.modified()), (Ok(x), Ok(y)) if y >= x)
}
