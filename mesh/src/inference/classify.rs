//! Text classifiers: each gives every text a list of labels with scores, the likeliest first,
//! as Workers AI's text classification does.
//!
//! - [`vader`]: sentiment (POSITIVE / NEGATIVE) by VADER's lexicon and rules;
//! - [`moderation`]: hatesonar's TF-IDF logistic regression (hate_speech / offensive_language /
//!   neither);
//! - language identification by whatlang's trigram profiles (ISO 639-3 codes).
//!
//! The package registries hold no transformer classifier: these are published lexicons and
//! linear models (docs/catalog.md says why, and how accurate each is). A classifier's folder
//! says which it is: `vader_lexicon.txt` (with `emoji_utf8_lexicon.txt`) or `model.onnx`.

pub mod moderation;
pub mod vader;

use std::path::Path;

use ganglion_client::protocol::Label;

use super::BackendError;

/// The library whose model is compiled into the node, for [`load`].
pub const WHATLANG: &str = "whatlang";

/// A loaded text classifier.
pub enum Classifier {
    /// Sentiment.
    Sentiment(Box<vader::Vader>),
    /// Content moderation.
    Moderation(Box<moderation::HateSonar>),
    /// Language identification.
    Language,
    /// Any of them in a worker process (asked with [`super::worker::Worker::batch`]).
    Worker(super::worker::Worker),
}

impl Classifier {
    /// Labels every text, the likeliest label first, and counts the words read.
    pub fn classify(&self, texts: &[String]) -> Result<(Vec<Vec<Label>>, u32), BackendError> {
        let labels = texts
            .iter()
            .map(|text| match self {
                Self::Sentiment(vader) => Ok(sentiment(vader.polarity(text).compound)),
                Self::Moderation(model) => Ok(ranked(
                    model
                        .labels()
                        .iter()
                        .zip(model.probabilities(text))
                        .map(|(label, score)| (label.clone(), score)),
                )),
                Self::Language => Ok(language(text)),
                Self::Worker(_) => Err(BackendError::Run(
                    "a classifier in a worker is asked through Worker::batch".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        let words: usize = texts.iter().map(|t| t.split_whitespace().count()).sum();
        Ok((labels, u32::try_from(words).unwrap_or(u32::MAX)))
    }
}

/// Loads the classifier of `location` (a folder), or whatlang's when `compiled` names it.
pub fn load(location: &Path, compiled: Option<&str>) -> Result<Classifier, BackendError> {
    let failed = |message: String| BackendError::Load {
        path: location.to_owned(),
        message,
    };
    let read =
        |name: &str| std::fs::read(location.join(name)).map_err(|e| failed(format!("{name}: {e}")));
    match compiled {
        Some(WHATLANG) => return Ok(Classifier::Language),
        Some(other) => return Err(failed(format!("no compiled-in classifier `{other}`"))),
        None => {}
    }
    if location.join("vader_lexicon.txt").is_file() {
        let text =
            |name| String::from_utf8(read(name)?).map_err(|e| failed(format!("{name}: {e}")));
        let vader = vader::Vader::parse(
            &text("vader_lexicon.txt")?,
            &text("emoji_utf8_lexicon.txt")?,
        )
        .map_err(|e| failed(e.to_string()))?;
        Ok(Classifier::Sentiment(Box::new(vader)))
    } else if location.join("model.onnx").is_file() {
        let model = moderation::HateSonar::parse(&read("model.onnx")?)
            .map_err(|e| failed(e.to_string()))?;
        Ok(Classifier::Moderation(Box::new(model)))
    } else {
        Err(failed(
            "a text classifier's folder holds vader_lexicon.txt (and emoji_utf8_lexicon.txt) or model.onnx".into(),
        ))
    }
}

/// Labels sorted by score, the likeliest first (stable: ties keep the model's order).
fn ranked(labels: impl Iterator<Item = (String, f32)>) -> Vec<Label> {
    let mut labels: Vec<Label> = labels
        .map(|(label, score)| Label { label, score })
        .collect();
    labels.sort_by(|a, b| b.score.total_cmp(&a.score));
    labels
}

/// VADER's compound score (-1 to 1) as two labels: POSITIVE scores `(compound + 1) / 2`. A
/// text with no sentiment at all (compound 0) is POSITIVE at 0.5, as VADER's binary use reads
/// it (compound >= 0 is positive).
fn sentiment(compound: f64) -> Vec<Label> {
    #[allow(clippy::cast_possible_truncation)] // A score in 0..1 loses nothing that matters.
    let positive = ((compound.clamp(-1.0, 1.0) + 1.0) / 2.0) as f32;
    ranked(
        [
            ("POSITIVE".to_owned(), positive),
            ("NEGATIVE".to_owned(), 1.0 - positive),
        ]
        .into_iter(),
    )
}

/// The language of `text` as its ISO 639-3 code and whatlang's confidence; no label when it
/// cannot tell (too little text, or no letters).
fn language(text: &str) -> Vec<Label> {
    whatlang::detect(text).map_or_else(Vec::new, |info| {
        #[allow(clippy::cast_possible_truncation)] // A confidence in 0..1.
        let score = info.confidence() as f32;
        vec![Label {
            label: info.lang().code().to_owned(),
            score,
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentiment_ranks_the_side_of_the_compound_first() {
        let happy = sentiment(0.8);
        assert_eq!(happy[0].label, "POSITIVE");
        assert!((happy[0].score - 0.9).abs() < 1e-6);
        assert!((happy[1].score - 0.1).abs() < 1e-6);
        assert_eq!(sentiment(-0.5)[0].label, "NEGATIVE");
        assert_eq!(sentiment(0.0)[0].label, "POSITIVE");
    }

    #[test]
    fn language_names_clear_texts_and_nothing_for_digits() {
        let texts = [
            "The quick brown fox jumps over the lazy dog near the river bank.".to_owned(),
            "Der schnelle braune Fuchs springt über den faulen Hund am Fluss.".to_owned(),
            "1234 5678".to_owned(),
        ];
        let (labels, words) = Classifier::Language.classify(&texts).expect("classifies");
        assert_eq!(labels[0][0].label, "eng");
        assert_eq!(labels[1][0].label, "deu");
        assert!(labels[2].is_empty());
        assert_eq!(words, 13 + 11 + 2);
    }

    #[test]
    fn a_folder_without_a_known_model_is_refused() {
        let dir = std::env::temp_dir().join(format!("ganglion-classify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        assert!(matches!(load(&dir, None), Err(BackendError::Load { .. })));
        assert!(matches!(
            load(&dir, Some("other")),
            Err(BackendError::Load { .. })
        ));
        assert!(matches!(
            load(&dir, Some(WHATLANG)),
            Ok(Classifier::Language)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
