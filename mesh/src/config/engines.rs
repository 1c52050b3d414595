//! The engines' settings: which library runs GGUF chat models ([`TextEngine`]), and where
//! engines run ([`Placement`]). `inference` takes them; how an engine is loaded stays there.

use std::fmt;
use std::str::FromStr;

/// A name in config or on the command line that is none of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}`: use {choices}")]
pub struct UnknownChoice {
    /// What was given.
    pub given: String,
    /// The names that are accepted.
    pub choices: &'static str,
}

/// Which library runs GGUF chat models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEngine {
    /// llama.cpp: batched, fastest on CPU.
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
    /// mistralrs: meant for accelerators (CUDA, Metal builds; this build detects none, so it
    /// is chosen by config, or when llama.cpp cannot serve a model).
    Mistralrs,
}

impl TextEngine {
    /// The engine for this hardware when config does not say: mistralrs where it has
    /// accelerators, llama.cpp on CPU.
    pub fn for_hardware(hardware: &crate::hardware::Hardware) -> Self {
        if hardware.accelerators.is_empty() {
            Self::LlamaCpp
        } else {
            Self::Mistralrs
        }
    }

    /// Its name in configuration and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlamaCpp => "llama.cpp",
            Self::Mistralrs => "mistralrs",
        }
    }
}

impl fmt::Display for TextEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TextEngine {
    type Err = UnknownChoice;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "llama.cpp" => Ok(Self::LlamaCpp),
            "mistralrs" => Ok(Self::Mistralrs),
            other => Err(UnknownChoice {
                given: other.to_owned(),
                choices: "llama.cpp or mistralrs",
            }),
        }
    }
}

/// Where a node runs its engines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// One worker process per model (`inference::worker`): a crash in native code takes only
    /// that model's worker down, and it is restarted.
    #[default]
    Workers,
    /// Inside the node's own process (a crash in an engine ends the node).
    InProcess,
}

impl Placement {
    /// Its name in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workers => "workers",
            Self::InProcess => "in-process",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Placement {
    type Err = UnknownChoice;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "workers" => Ok(Self::Workers),
            "in-process" => Ok(Self::InProcess),
            other => Err(UnknownChoice {
                given: other.to_owned(),
                choices: "workers or in-process",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Models {
        text_engine: TextEngine,
        engines: Placement,
    }

    #[test]
    fn names_read_back_as_written_in_toml_and_on_the_command_line() {
        for (engine, placement) in [
            (TextEngine::LlamaCpp, Placement::Workers),
            (TextEngine::Mistralrs, Placement::InProcess),
        ] {
            assert_eq!(engine.as_str().parse::<TextEngine>(), Ok(engine));
            assert_eq!(placement.as_str().parse::<Placement>(), Ok(placement));
            let text = format!("text_engine = \"{engine}\"\nengines = \"{placement}\"");
            let models: Models = toml::from_str(&text).expect("toml");
            assert_eq!((models.text_engine, models.engines), (engine, placement));
        }
        let err = "vllm".parse::<TextEngine>().expect_err("unknown");
        assert_eq!(err.to_string(), "`vllm`: use llama.cpp or mistralrs");
    }
}
