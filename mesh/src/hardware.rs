//! What this machine has, and which configured models fit in it. Detection reads the OS;
//! [`plan_hosting`] is pure.

use serde::{Deserialize, Serialize};

use crate::models::ModelSpec;

/// A node's hardware, as detected and as capped by configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hardware {
    /// Logical cores available to the process.
    pub cores: usize,
    /// Total memory of the machine, in bytes.
    pub memory_total: u64,
    /// Memory available when the node started, in bytes.
    pub memory_available: u64,
    /// Operator's cap (`--memory-limit`), to emulate a small edge box.
    pub memory_limit: Option<u64>,
    /// Accelerators usable by the inference backends (none in CPU builds).
    pub accelerators: Vec<String>,
}

impl Hardware {
    /// Reads cores and memory from the OS.
    pub fn detect(memory_limit: Option<u64>) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let field = |name: &str| {
            meminfo
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib * 1024)
        };
        Self {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_total: field("MemTotal:"),
            memory_available: field("MemAvailable:"),
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

/// Parses a size such as `512MiB`, `2G`, `1.5GiB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 512MiB or 2G"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("`{text}` has an unknown unit (use KiB, MiB, GiB)")),
    };
    Ok((number * multiplier as f64) as u64)
}

/// Formats bytes as MiB for messages.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1 << 20))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Catalog;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn models_that_do_not_fit_are_refused_with_the_numbers() {
        let catalog = Catalog::builtin();
        let models: Vec<&ModelSpec> = catalog.models().iter().collect();
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
