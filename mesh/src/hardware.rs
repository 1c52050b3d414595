//! What this machine has, and which configured models fit in it. Detection reads the OS
//! (`/proc/meminfo` and the process's cgroup memory limits); the parsing, [`plan_hosting`] and
//! [`parse_size`] are pure.
//!
//! Sizes: `GB` is 10^9 bytes and `GiB` is 2^30 bytes, as everywhere in Ganglion.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::models::ModelSpec;

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Limits at or above this (1 EiB) mean "no limit": cgroup v1 reports an unlimited group as a
/// number near `i64::MAX` rounded down to a page.
const NO_LIMIT_FROM: u64 = 1 << 60;

/// A node's hardware, as detected and as capped by configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hardware {
    /// Logical cores available to the process.
    pub cores: usize,
    /// Total memory the process may use, in bytes: the machine's, or its cgroup's limit when
    /// that is lower.
    pub memory_total: u64,
    /// Memory available when the node started, in bytes: the machine's available memory, or
    /// what is left under the cgroup's limit when that is lower.
    pub memory_available: u64,
    /// Operator's cap (`--memory-limit`), to emulate a small edge box.
    pub memory_limit: Option<u64>,
    /// Accelerators usable by the inference backends (none in CPU builds).
    pub accelerators: Vec<String>,
}

impl Hardware {
    /// Reads cores and memory from the OS, honouring cgroup (v2 and v1) memory limits.
    pub fn detect(memory_limit: Option<u64>) -> Self {
        let meminfo = read("/proc/meminfo").unwrap_or_default();
        let host = HostMemory {
            total: meminfo_field(&meminfo, "MemTotal"),
            available: meminfo_field(&meminfo, "MemAvailable"),
        };
        let (memory_total, memory_available) = effective_memory(host, &detect_cgroups());
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_total,
            memory_available,
            memory_limit,
            accelerators: Vec::new(),
        }
    }

    /// Memory the node may spend on models: what is available, capped by the limit.
    pub fn memory_budget(&self) -> u64 {
        match self.memory_limit {
            Some(limit) => limit.min(self.memory_available),
            None => self.memory_available,
        }
    }
}

/// The host's memory figures from `/proc/meminfo` (absent when unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct HostMemory {
    total: Option<u64>,
    available: Option<u64>,
}

/// One cgroup level that limits memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CgroupMemory {
    /// The limit (`memory.max` or `memory.limit_in_bytes`).
    limit: u64,
    /// Memory charged to the group (`memory.current` or `memory.usage_in_bytes`), if known.
    usage: Option<u64>,
    /// Page cache the kernel reclaims before hitting the limit (`inactive_file` of
    /// `memory.stat`): the usage counts it, but it does not stand in a model's way.
    reclaimable: u64,
}

impl CgroupMemory {
    /// What the group can still take: the limit less its working set.
    fn headroom(&self) -> u64 {
        let working_set = self.usage.unwrap_or(0).saturating_sub(self.reclaimable);
        self.limit.saturating_sub(working_set)
    }
}

/// Total and available memory: the host's figures, lowered by every cgroup level's limit and
/// headroom. An unknown host figure counts as no bound; with no bound at all the result is 0.
fn effective_memory(host: HostMemory, cgroups: &[CgroupMemory]) -> (u64, u64) {
    let total = cgroups
        .iter()
        .map(|c| c.limit)
        .chain(host.total)
        .min()
        .unwrap_or(0);
    let available = cgroups
        .iter()
        .map(CgroupMemory::headroom)
        .chain(host.available)
        .min()
        .unwrap_or(0)
        .min(total);
    (total, available)
}

/// A `/proc/meminfo` field (`MemTotal`, `MemAvailable`, …) in bytes.
fn meminfo_field(meminfo: &str, name: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        if key.trim() != name {
            return None;
        }
        let rest = rest.trim();
        let (number, multiplier) = match rest.strip_suffix("kB") {
            // meminfo's "kB" is KiB.
            Some(kib) => (kib.trim(), 1024),
            None => (rest, 1),
        };
        number.parse::<u64>().ok()?.checked_mul(multiplier)
    })
}

/// A cgroup memory limit file: cgroup v2 `memory.max` ("max" means none) or v1
/// `memory.limit_in_bytes` (absurdly large values mean none). `None` when there is no limit.
fn parse_cgroup_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text == "max" {
        return None;
    }
    text.parse::<u64>()
        .ok()
        .filter(|&limit| limit < NO_LIMIT_FROM)
}

/// A plain byte count (`memory.current`, `memory.usage_in_bytes`).
fn parse_bytes(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A field of a cgroup `memory.stat` file (`key value` lines).
fn memory_stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        if k == key {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

/// The process's cgroup v2 path from `/proc/self/cgroup` (the `0::/path` line).
fn own_cgroup_v2_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::trim)
}

/// The cgroup v2 folders whose limits apply to a process in `own` (innermost first), ending
/// with `root` itself: inside a container the process's own group is mounted at the root. A
/// path that tries to climb out of `root` yields the root alone.
fn cgroup_v2_dirs(root: &Path, own: Option<&str>) -> Vec<PathBuf> {
    let parts: Vec<&str> = own
        .unwrap_or("")
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return vec![root.to_owned()];
    }
    (0..=parts.len())
        .rev()
        .map(|depth| {
            parts[..depth]
                .iter()
                .fold(root.to_owned(), |dir, p| dir.join(p))
        })
        .collect()
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Every cgroup level (v2 along the process's path, and the v1 memory controller) that limits
/// this process's memory.
fn detect_cgroups() -> Vec<CgroupMemory> {
    let root = Path::new(CGROUP_ROOT);
    let proc_self = read("/proc/self/cgroup").unwrap_or_default();
    let v2 = cgroup_v2_dirs(root, own_cgroup_v2_path(&proc_self))
        .into_iter()
        .map(|dir| {
            (
                dir.join("memory.max"),
                dir.join("memory.current"),
                dir.join("memory.stat"),
                "inactive_file",
            )
        });
    let v1_dir = root.join("memory");
    let v1 = std::iter::once((
        v1_dir.join("memory.limit_in_bytes"),
        v1_dir.join("memory.usage_in_bytes"),
        v1_dir.join("memory.stat"),
        "total_inactive_file",
    ));
    v2.chain(v1)
        .filter_map(|(limit, usage, stat, reclaimable)| {
            Some(CgroupMemory {
                limit: parse_cgroup_limit(&read(limit)?)?,
                usage: read(usage).as_deref().and_then(parse_bytes),
                reclaimable: read(stat)
                    .as_deref()
                    .and_then(|s| memory_stat_field(s, reclaimable))
                    .unwrap_or(0),
            })
        })
        .collect()
}

/// Whether a configured model will be hosted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Hosting {
    /// It fits; load it.
    Host,
    /// It does not fit in what is left of the memory budget.
    DoesNotFit {
        /// Memory the model needs.
        needs: u64,
        /// Memory left for it.
        left: u64,
    },
}

/// Decides, in configuration order, which models fit into `budget` bytes.
pub fn plan_hosting<'a>(
    budget: u64,
    models: impl IntoIterator<Item = &'a ModelSpec>,
) -> Vec<(String, Hosting)> {
    let mut left = budget;
    models
        .into_iter()
        .map(|spec| {
            let decision = if spec.memory_bytes <= left {
                left -= spec.memory_bytes;
                Hosting::Host
            } else {
                Hosting::DoesNotFit {
                    needs: spec.memory_bytes,
                    left,
                }
            };
            (spec.id.clone(), decision)
        })
        .collect()
}

/// Digits allowed after the decimal point of a size (keeps the exact arithmetic in range).
const MAX_SIZE_DECIMALS: usize = 18;

/// Parses a size such as `512MiB`, `1.5GiB`, `2GB` or a plain byte count. Decimal units are
/// powers of ten (`kB`/`k` = 10^3, `MB`/`M` = 10^6, `GB`/`G` = 10^9, `TB`/`T` = 10^12), binary
/// units powers of two (`KiB`/`Ki` = 2^10 … `TiB`/`Ti` = 2^40); case does not matter. The
/// arithmetic is exact; a fraction of a byte is dropped.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let not_a_size = || format!("`{text}` is not a size like 512MiB, 2GiB or 2GB");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use B, kB, MB, GB, TB or KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || fraction.contains('.')
        || fraction.len() > MAX_SIZE_DECIMALS
    {
        return Err(not_a_size());
    }
    let digits = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse().map_err(|_| not_a_size())
        }
    };
    // Below 10^18 times at most 2^40: well within u128.
    let scale = 10u128.pow(fraction.len() as u32);
    let (whole, fraction) = (digits(whole)?, digits(fraction)?);
    whole
        .checked_mul(multiplier)
        .and_then(|b| b.checked_add(fraction * multiplier / scale))
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats bytes as MiB (2^20 bytes) for messages.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Catalog;

    #[test]
    fn sizes_parse_with_decimal_and_binary_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("2 gb"), Ok(2_000_000_000));
        assert_eq!(parse_size("0.29GB"), Ok(290_000_000));
        assert_eq!(parse_size("1.1GB"), Ok(1_100_000_000));
        assert_eq!(parse_size("300MB"), Ok(300_000_000));
        assert_eq!(parse_size("4kB"), Ok(4_000));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5"), Ok(1));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size(".").is_err());
        assert!(parse_size("1.2.3GB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1GB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn mib_is_binary() {
        assert_eq!(mib(3 << 20), "3 MiB");
        assert_eq!(mib(1_000_000_000), "953 MiB");
    }

    #[test]
    fn meminfo_fields_are_kib() {
        let meminfo =
            "MemTotal:        8048576 kB\nMemFree:  100 kB\nMemAvailable:    6000000 kB\n";
        assert_eq!(meminfo_field(meminfo, "MemTotal"), Some(8_048_576 * 1024));
        assert_eq!(
            meminfo_field(meminfo, "MemAvailable"),
            Some(6_000_000 * 1024)
        );
        assert_eq!(meminfo_field(meminfo, "Mem"), None);
        assert_eq!(meminfo_field("", "MemTotal"), None);
    }

    #[test]
    fn cgroup_limits_parse_for_v1_and_v2() {
        // v2
        assert_eq!(parse_cgroup_limit("max\n"), None);
        assert_eq!(parse_cgroup_limit("536870912\n"), Some(512 << 20));
        // v1: an unlimited group reports a number near i64::MAX.
        assert_eq!(parse_cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(parse_cgroup_limit("268435456"), Some(256 << 20));
        assert_eq!(parse_cgroup_limit(""), None);
        assert_eq!(parse_cgroup_limit("garbage"), None);
        assert_eq!(parse_bytes("1234\n"), Some(1234));
        let stat = "anon 100\nfile 5000\ninactive_file 4000\nactive_file 1000\n";
        assert_eq!(memory_stat_field(stat, "inactive_file"), Some(4000));
        assert_eq!(memory_stat_field(stat, "file"), Some(5000));
        assert_eq!(memory_stat_field(stat, "total_inactive_file"), None);
    }

    #[test]
    fn cgroup_paths_cover_every_ancestor() {
        let own = own_cgroup_v2_path("12:memory:/old\n0::/user.slice/session-1.scope\n");
        assert_eq!(own, Some("/user.slice/session-1.scope"));
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_v2_dirs(root, own),
            vec![
                PathBuf::from("/sys/fs/cgroup/user.slice/session-1.scope"),
                PathBuf::from("/sys/fs/cgroup/user.slice"),
                PathBuf::from("/sys/fs/cgroup"),
            ]
        );
        assert_eq!(cgroup_v2_dirs(root, Some("/")), vec![root.to_owned()]);
        assert_eq!(cgroup_v2_dirs(root, None), vec![root.to_owned()]);
        assert_eq!(cgroup_v2_dirs(root, Some("/../etc")), vec![root.to_owned()]);
    }

    #[test]
    fn a_cgroup_limit_lowers_total_and_available() {
        let host = HostMemory {
            total: Some(16 << 30),
            available: Some(12 << 30),
        };
        assert_eq!(effective_memory(host, &[]), (16 << 30, 12 << 30));
        let container = CgroupMemory {
            limit: 1 << 30,
            usage: Some(600 << 20),
            reclaimable: 200 << 20,
        };
        // Available is the limit less the working set (usage less reclaimable page cache).
        assert_eq!(
            effective_memory(host, &[container]),
            (1 << 30, (1 << 30) - (400 << 20))
        );
        // A usage above the limit leaves nothing, not an underflow.
        let full = CgroupMemory {
            limit: 1 << 30,
            usage: Some(2 << 30),
            reclaimable: 0,
        };
        assert_eq!(effective_memory(host, &[full]), (1 << 30, 0));
        // The tightest level wins; a limit above the host's memory changes nothing.
        let parent = CgroupMemory {
            limit: 512 << 20,
            usage: None,
            reclaimable: 0,
        };
        let huge = CgroupMemory {
            limit: 64 << 30,
            usage: Some(0),
            reclaimable: 0,
        };
        assert_eq!(
            effective_memory(host, &[container, parent, huge]),
            (512 << 20, 512 << 20)
        );
        assert_eq!(effective_memory(host, &[huge]), (16 << 30, 12 << 30));
        // Without /proc/meminfo the cgroup still bounds memory.
        assert_eq!(
            effective_memory(HostMemory::default(), &[parent]),
            (512 << 20, 512 << 20)
        );
        assert_eq!(effective_memory(HostMemory::default(), &[]), (0, 0));
    }

    #[test]
    fn models_that_do_not_fit_are_refused_with_the_numbers() {
        let catalog = Catalog::builtin();
        let models: Vec<&ModelSpec> = catalog.models().iter().take(2).collect();
        let (llm, embed) = (models[0].memory_bytes, models[1].memory_bytes);
        let plan = plan_hosting(embed + 1, models.clone());
        assert_eq!(
            plan[0].1,
            Hosting::DoesNotFit {
                needs: llm,
                left: embed + 1
            }
        );
        assert_eq!(plan[1].1, Hosting::Host);
        let plan = plan_hosting(llm + embed, models);
        assert!(plan.iter().all(|(_, h)| *h == Hosting::Host));
    }

    #[test]
    fn detection_reads_this_machine() {
        let hw = Hardware::detect(Some(1 << 20));
        assert!(hw.cores >= 1);
        assert!(hw.memory_total >= hw.memory_available);
        assert_eq!(hw.memory_budget(), 1 << 20);
    }
}
