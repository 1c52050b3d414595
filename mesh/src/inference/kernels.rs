//! Which of llama.cpp's CPU kernel builds a process runs, chosen at run time.
//!
//! llama.cpp is built once with every x86 variant of its CPU backend (`GGML_CPU_ALL_VARIANTS`:
//! `libggml-cpu-x64.so` up to `libggml-cpu-sapphirerapids.so`), so one build of the node runs
//! on any x86-64 machine and uses the best instructions each one has. The choice is made here
//! rather than by ggml's own loader so that it is known (logged, shown in `/admin/node` and
//! `/admin/models`) and can be stepped down: an engine worker that keeps faulting restarts on
//! the next variant below ([`ladder`]).
//!
//! The variants with AMX are never chosen: llama.cpp's AMX path faults on `ldtilecfg`
//! (ggml-org/llama.cpp#20824, unfixed upstream at the vendored version), so an AMX machine
//! runs the best AVX-512 variant instead. `docs/performance.md` says why.
//!
//! [`score`] mirrors ggml's `ggml_backend_cpu_x86_score` (ggml-cpu/arch/x86/cpu-feats.cpp), so
//! the variant chosen is the one ggml's own loader would pick among those allowed; the loaded
//! library still runs its own check and refuses a CPU that lacks what it was built for.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A feature ggml's x86 variants are built for, in ggml's scoring order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// FMA3.
    Fma,
    /// F16C.
    F16c,
    /// SSE4.2.
    Sse42,
    /// BMI2.
    Bmi2,
    /// AVX.
    Avx,
    /// AVX2.
    Avx2,
    /// AVX-VNNI (VEX-encoded).
    AvxVnni,
    /// AVX-512 F, CD, VL, DQ and BW together (what ggml calls AVX512).
    Avx512,
    /// AVX-512 VBMI.
    Avx512Vbmi,
    /// AVX-512 BF16.
    Avx512Bf16,
    /// AVX-512 VNNI.
    Avx512Vnni,
    /// AMX INT8 (with AMX tiles).
    AmxInt8,
}

impl Feature {
    /// ggml's score weight for it.
    fn weight(self) -> u32 {
        match self {
            Self::Fma => 1,
            Self::F16c => 1 << 1,
            Self::Sse42 => 1 << 2,
            Self::Bmi2 => 1 << 3,
            Self::Avx => 1 << 4,
            Self::Avx2 => 1 << 5,
            Self::AvxVnni => 1 << 6,
            Self::Avx512 => 1 << 7,
            Self::Avx512Vbmi => 1 << 8,
            Self::Avx512Bf16 => 1 << 9,
            Self::Avx512Vnni => 1 << 10,
            Self::AmxInt8 => 1 << 11,
        }
    }

    /// Its name in listings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fma => "fma",
            Self::F16c => "f16c",
            Self::Sse42 => "sse4.2",
            Self::Bmi2 => "bmi2",
            Self::Avx => "avx",
            Self::Avx2 => "avx2",
            Self::AvxVnni => "avxvnni",
            Self::Avx512 => "avx512",
            Self::Avx512Vbmi => "avx512vbmi",
            Self::Avx512Bf16 => "avx512bf16",
            Self::Avx512Vnni => "avx512vnni",
            Self::AmxInt8 => "amx-int8",
        }
    }
}

use Feature::*;

/// llama.cpp's x86 CPU variants (ggml/src/CMakeLists.txt, `GGML_CPU_ALL_VARIANTS`): each
/// library's name and what it was built for.
pub const VARIANTS: &[(&str, &[Feature])] = &[
    ("x64", &[]),
    ("sse42", &[Sse42]),
    ("sandybridge", &[Sse42, Avx]),
    ("ivybridge", &[Sse42, Avx, F16c]),
    ("piledriver", &[Sse42, Avx, F16c, Fma]),
    ("haswell", &[Sse42, Avx, F16c, Fma, Avx2, Bmi2]),
    ("skylakex", &[Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512]),
    (
        "cannonlake",
        &[Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vbmi],
    ),
    (
        "cascadelake",
        &[Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vnni],
    ),
    (
        "icelake",
        &[
            Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vbmi, Avx512Vnni,
        ],
    ),
    (
        "cooperlake",
        &[
            Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vnni, Avx512Bf16,
        ],
    ),
    (
        "zen4",
        &[
            Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vbmi, Avx512Vnni, Avx512Bf16,
        ],
    ),
    ("alderlake", &[Sse42, Avx, F16c, Fma, Avx2, Bmi2, AvxVnni]),
    (
        "sapphirerapids",
        &[
            Sse42, Avx, F16c, Fma, Avx2, Bmi2, Avx512, Avx512Vbmi, Avx512Vnni, Avx512Bf16, AmxInt8,
        ],
    ),
];

/// ggml's score of a variant built for `needs` on a CPU with `has`: 0 when it cannot run.
pub fn score(needs: &[Feature], has: &[Feature]) -> u32 {
    if needs.iter().any(|f| !has.contains(f)) {
        return 0;
    }
    1 + needs.iter().map(|f| f.weight()).sum::<u32>()
}

/// The variants a CPU with `has` runs, best first, without the AMX ones (see the module's
/// documentation): what an engine starts on, and what it steps down to after crashes.
pub fn ladder(has: &[Feature]) -> Vec<&'static str> {
    let mut usable: Vec<(u32, &'static str)> = VARIANTS
        .iter()
        .filter(|(_, needs)| !needs.contains(&AmxInt8))
        .map(|(name, needs)| (score(needs, has), *name))
        .filter(|(score, _)| *score > 0)
        .collect();
    usable.sort_by_key(|(score, _)| std::cmp::Reverse(*score));
    usable.into_iter().map(|(_, name)| name).collect()
}

/// What this CPU has, as its CPUID says (also under an emulator, which answers CPUID as the
/// CPU it emulates).
pub fn detect() -> Vec<Feature> {
    let mut has = Vec::new();
    let mut add = |feature, present| {
        if present {
            has.push(feature);
        }
    };
    add(Fma, std::arch::is_x86_feature_detected!("fma"));
    add(F16c, std::arch::is_x86_feature_detected!("f16c"));
    add(Sse42, std::arch::is_x86_feature_detected!("sse4.2"));
    add(Bmi2, std::arch::is_x86_feature_detected!("bmi2"));
    add(Avx, std::arch::is_x86_feature_detected!("avx"));
    add(Avx2, std::arch::is_x86_feature_detected!("avx2"));
    add(AvxVnni, std::arch::is_x86_feature_detected!("avxvnni"));
    add(
        Avx512,
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512cd")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512bw"),
    );
    add(
        Avx512Vbmi,
        std::arch::is_x86_feature_detected!("avx512vbmi"),
    );
    add(
        Avx512Bf16,
        std::arch::is_x86_feature_detected!("avx512bf16"),
    );
    add(
        Avx512Vnni,
        std::arch::is_x86_feature_detected!("avx512vnni"),
    );
    // Rust's AMX detection is unstable; the kernel's flags say it (for listings only: AMX
    // variants are never chosen).
    add(
        AmxInt8,
        std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|info| info.split_whitespace().any(|flag| flag == "amx_int8")),
    );
    has
}

/// This machine's CPU features and the kernel variant its engines start on, for `/admin/node`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpuKernels {
    /// Features found, in ggml's terms.
    pub features: Vec<String>,
    /// The llama.cpp CPU variant engines start on (the best allowed one).
    pub variant: String,
}

impl CpuKernels {
    /// Reads this machine's.
    pub fn detect() -> Self {
        let has = detect();
        Self {
            features: has.iter().map(|f| f.name().to_owned()).collect(),
            variant: ladder(&has).first().copied().unwrap_or("x64").to_owned(),
        }
    }
}

/// The kernels a process loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The variant's name.
    pub variant: String,
    /// Whether it is the last rung of this CPU's ladder (nothing lower to step down to).
    pub lowest: bool,
}

/// The variant this process loaded, once it has.
static LOADED: OnceLock<Result<Loaded, String>> = OnceLock::new();

/// Loads llama.cpp's CPU backend for this CPU into this process: `rung` steps down this CPU's
/// [`ladder`] (0: the best). The first call decides, later ones return its outcome. Must run
/// before llama.cpp is initialised; fails rather than let llama.cpp pick kernels itself.
pub fn load(rung: usize) -> Result<Loaded, String> {
    LOADED
        .get_or_init(|| {
            let ladder = ladder(&detect());
            let at = rung.min(ladder.len().saturating_sub(1));
            let variant = ladder.get(at).copied().unwrap_or("x64");
            load_variant(variant)?;
            Ok(Loaded {
                variant: variant.to_owned(),
                lowest: at + 1 >= ladder.len(),
            })
        })
        .clone()
}

/// The folder holding `libggml-cpu-*.so`: `GANGLION_GGML_BACKENDS` when set, else beside the
/// executable (a deployed node), else where this build put them.
fn backends_dir() -> Option<PathBuf> {
    let has_cpu = |dir: &Path| dir.join("libggml-cpu-x64.so").is_file();
    if let Some(dir) = std::env::var_os("GANGLION_GGML_BACKENDS") {
        return Some(PathBuf::from(dir));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned));
    beside
        .filter(|dir| has_cpu(dir))
        .or_else(|| llama_cpp_sys_2::BACKENDS_DIR.map(PathBuf::from))
}

/// ggml loads the best backend of a folder; a private folder holding only `variant` makes
/// that the one. The folder is new (created, not reused: nobody else can have put a library
/// in it) and readable by this user only.
fn load_variant(variant: &str) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if !VARIANTS.iter().any(|(name, _)| *name == variant) {
        return Err(format!("unknown CPU kernel variant `{variant}`"));
    }
    let source = backends_dir()
        .ok_or("llama.cpp's CPU backends were not found (set GANGLION_GGML_BACKENDS)")?
        .join(format!("libggml-cpu-{variant}.so"));
    if !source.is_file() {
        return Err(format!("{} is missing", source.display()));
    }
    let dir = std::env::temp_dir().join(format!(
        "ganglion-ggml-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let link = dir.join(source.file_name().unwrap_or_default());
    let linked = std::os::unix::fs::symlink(&source, &link);
    if linked.is_ok() {
        llama_cpp_2::llama_backend::load_backends_from_path(&dir);
    }
    // The library is mapped now; the folder was only its address.
    let _ = std::fs::remove_dir_all(&dir);
    linked.map_err(|e| format!("{}: {e}", link.display()))?;
    // ggml refuses a variant this CPU cannot run (its score is 0) and registers nothing;
    // llama.cpp would then load whatever it finds itself.
    if !llama_cpp_2::list_llama_ggml_backend_devices()
        .iter()
        .any(|d| d.backend == "CPU")
    {
        return Err(format!(
            "llama.cpp's `{variant}` CPU kernels did not load (this CPU cannot run them?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(of: &str) -> Vec<Feature> {
        VARIANTS
            .iter()
            .find(|(name, _)| *name == of)
            .map(|(_, needs)| needs.to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn each_cpu_gets_the_variant_built_for_it() {
        for (name, needs) in VARIANTS {
            let best = ladder(needs);
            if needs.contains(&AmxInt8) {
                assert_eq!(best[0], "zen4", "AMX is never chosen");
            } else {
                assert_eq!(best[0], *name);
            }
        }
    }

    #[test]
    fn the_ladder_steps_down_to_the_baseline() {
        let haswell = ladder(&features("haswell"));
        assert_eq!(
            haswell,
            [
                "haswell",
                "piledriver",
                "ivybridge",
                "sandybridge",
                "sse42",
                "x64"
            ]
        );
        // x86-64-v2 (Nehalem): no AVX.
        assert_eq!(ladder(&[Sse42]), ["sse42", "x64"]);
        assert_eq!(ladder(&[]), ["x64"]);
    }

    #[test]
    fn a_variant_needing_a_missing_feature_scores_zero() {
        assert_eq!(score(&[Avx2], &[Avx]), 0);
        assert!(score(&[Avx2], &[Avx, Avx2]) > score(&[Avx], &[Avx, Avx2]));
        // Both AVX-512 and AVX-VNNI: AVX-512 wins, as in ggml.
        let both = [Sse42, Avx, F16c, Fma, Avx2, Bmi2, AvxVnni, Avx512];
        assert_eq!(ladder(&both)[0], "skylakex");
    }
}
