//! VADER (Valence Aware Dictionary and sEntiment Reasoner; Hutto & Gilbert, ICWSM 2014): a
//! rule-based sentiment scorer for short English text. About 7,500 tokens (words, slang,
//! emoticons) rated −4..+4 by people are adjusted by rules for negation, "but", boosters and
//! dampeners ("very", "kind of"), ALL-CAPS emphasis, "!" and "?", and a few idioms; emoji are
//! first replaced by their English descriptions.
//!
//! The two lexicons, `vader_lexicon.txt` and `emoji_utf8_lexicon.txt`, come from the
//! `vaderSentiment` 3.3.2 wheel (MIT licence, C.J. Hutto) and are handed to [`Vader::parse`].
//! This is a faithful port of that release's `vaderSentiment.py`, its quirks included (noted
//! where they occur), checked against the reference's outputs: the golden vectors in
//! `tests/data/vader332_golden.json` and the compounds of 26,703 evaluation texts.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Empirical mean increase in intensity from a booster word ("very").
const B_INCR: f64 = 0.293;
/// Empirical mean decrease in intensity from a dampener word ("slightly").
const B_DECR: f64 = -0.293;
/// Empirical mean increase from an ALL-CAPS word among words that are not all caps.
const C_INCR: f64 = 0.733;
/// Factor applied to a negated word.
const N_SCALAR: f64 = -0.74;
/// Increase per "!" (the reference's literal in `_amplify_ep`).
const EP_INCR: f64 = 0.292;
/// At most this many "!" count.
const EP_MAX: usize = 4;
/// Increase per "?" when there are two or three (`_amplify_qm`).
const QM_INCR: f64 = 0.18;
/// Increase for four or more "?".
const QM_MAX: f64 = 0.96;
/// `normalize`'s alpha: approximates the largest expected sum.
const ALPHA: f64 = 15.0;

/// A VADER analyser: the lexicon and the emoji descriptions.
#[derive(Clone)]
pub struct Vader {
    /// Token → mean valence, keys as written in the file: the reference looks up lower-cased
    /// tokens, so the few keys with capitals (":D") or spaces can never match, as there.
    lexicon: HashMap<String, f64>,
    /// Code point → description. The reference replaces one code point at a time, so keys of
    /// several code points (flags, ZWJ sequences) can never match and are not kept.
    emojis: HashMap<char, String>,
}

/// VADER's scores for a text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polarity {
    /// Share of negative sentiment, 0..1 (3 decimals, as the reference rounds).
    pub neg: f64,
    /// Share of neutral words.
    pub neu: f64,
    /// Share of positive sentiment.
    pub pos: f64,
    /// Normalised sum, -1..1 (4 decimals, as the reference rounds).
    pub compound: f64,
}

/// Why a lexicon could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// A lexicon line has no tab between the token and its mean.
    #[error("lexicon line {line}: expected a token, a tab and a number")]
    MissingMean {
        /// 1-based line number.
        line: usize,
    },
    /// A lexicon line's mean is not a number.
    #[error("lexicon line {line}: `{value}` is not a number")]
    BadMean {
        /// 1-based line number.
        line: usize,
        /// The field that should have been the mean.
        value: String,
    },
    /// An emoji lexicon line has no tab between the emoji and its description.
    #[error("emoji lexicon line {line}: expected an emoji, a tab and a description")]
    MissingDescription {
        /// 1-based line number.
        line: usize,
    },
    /// The lexicon has no entries.
    #[error("the lexicon is empty")]
    Empty,
}

impl fmt::Debug for Vader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes only: printing 7,500 entries helps nobody.
        f.debug_struct("Vader")
            .field("lexicon", &self.lexicon.len())
            .field("emojis", &self.emojis.len())
            .finish()
    }
}

impl Vader {
    /// Reads `vader_lexicon.txt` (token TAB mean TAB ...) and `emoji_utf8_lexicon.txt`
    /// (emoji TAB description).
    ///
    /// As the reference: lines are stripped of whitespace (so CRLF files read), fields past the
    /// second are ignored, and of duplicate keys the last line wins. Blank lines are skipped in
    /// both files (the reference rejects them in the emoji file only).
    pub fn parse(lexicon: &str, emoji: &str) -> Result<Self, LexiconError> {
        let mut lex = HashMap::new();
        for (line, content) in numbered_lines(lexicon) {
            let mut fields = content.split('\t');
            let (Some(token), Some(mean)) = (fields.next(), fields.next()) else {
                return Err(LexiconError::MissingMean { line });
            };
            let value = mean.trim_matches(is_py_space).parse::<f64>().map_err(|_| {
                LexiconError::BadMean {
                    line,
                    value: mean.to_owned(),
                }
            })?;
            lex.insert(token.to_owned(), value);
        }
        if lex.is_empty() {
            return Err(LexiconError::Empty);
        }
        let mut emojis = HashMap::new();
        for (line, content) in numbered_lines(emoji) {
            let mut fields = content.split('\t');
            let (Some(key), Some(description)) = (fields.next(), fields.next()) else {
                return Err(LexiconError::MissingDescription { line });
            };
            let mut chars = key.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                emojis.insert(c, description.to_owned());
            }
        }
        Ok(Self {
            lexicon: lex,
            emojis,
        })
    }

    /// Scores `text`.
    pub fn polarity(&self, text: &str) -> Polarity {
        let text = self.replace_emojis(text);
        // `str.split()` then `_strip_punc_if_word`; the reference's `strip()` of the whole
        // text changes neither the tokens nor the "!"/"?" counts, so it is skipped.
        let raw: Vec<&str> = text
            .split(is_py_space)
            .filter(|t| !t.is_empty())
            .map(strip_punc_if_word)
            .collect();
        if raw.is_empty() {
            return Polarity {
                neg: 0.0,
                neu: 0.0,
                pos: 0.0,
                compound: 0.0,
            };
        }
        let lowered: Vec<Cow<'_, str>> = raw.iter().copied().map(py_lower).collect();
        let lower: Vec<&str> = lowered.iter().map(AsRef::as_ref).collect();
        let upper: Vec<bool> = raw.iter().copied().map(py_is_upper).collect();
        let n_upper = upper.iter().filter(|&&u| u).count();
        let words = Words {
            lex: lower
                .iter()
                .map(|w| self.lexicon.get(*w).copied())
                .collect(),
            lower,
            upper,
            // `allcap_differential`: some, but not all, tokens are ALL CAPS.
            cap_diff: n_upper > 0 && n_upper < raw.len(),
        };
        let mut sentiments: Vec<f64> = (0..raw.len()).map(|i| words.valence(i)).collect();
        but_check(&words.lower, &mut sentiments);
        score_valence(&sentiments, &text)
    }

    /// Replaces each code point that is an emoji key by its description, preceded by a space
    /// unless the previous character was an ASCII space (the reference's `prev_space`).
    fn replace_emojis<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(first) = text.find(|c: char| self.emojis.contains_key(&c)) else {
            return Cow::Borrowed(text);
        };
        let mut out = String::with_capacity(text.len() + 64);
        out.push_str(&text[..first]);
        let mut prev_space = first == 0 || text[..first].ends_with(' ');
        for c in text[first..].chars() {
            if let Some(description) = self.emojis.get(&c) {
                if !prev_space {
                    out.push(' ');
                }
                out.push_str(description);
                prev_space = false;
            } else {
                out.push(c);
                prev_space = c == ' ';
            }
        }
        Cow::Owned(out)
    }
}

/// The tokens of one text, as `sentiment_valence` sees them.
struct Words<'a> {
    /// Lower-cased tokens.
    lower: Vec<&'a str>,
    /// Whether each token is `str.isupper()`.
    upper: Vec<bool>,
    /// Each lower-cased token's lexicon value.
    lex: Vec<Option<f64>>,
    /// Some, but not all, tokens are ALL CAPS.
    cap_diff: bool,
}

impl Words<'_> {
    /// `sentiment_valence`: the valence of token `i` after the "no", caps, booster, negation,
    /// idiom and "least" rules; 0 for a booster, for "kind" in "kind of" and for a token
    /// outside the lexicon (the first two checked by `polarity_scores` in the reference).
    fn valence(&self, i: usize) -> f64 {
        let w = &self.lower;
        let kind_of = w[i] == "kind" && w.get(i + 1) == Some(&"of");
        if booster(&[w[i]]).is_some() || kind_of {
            return 0.0;
        }
        let Some(lex_value) = self.lex[i] else {
            return 0.0;
        };
        let mut v = lex_value;
        // "no" before a lexicon word negates that word instead of counting itself.
        if w[i] == "no" && i + 1 < w.len() && self.lex[i + 1].is_some() {
            v = 0.0;
        }
        if (i > 0 && w[i - 1] == "no")
            || (i > 1 && w[i - 2] == "no")
            || (i > 2 && w[i - 3] == "no" && matches!(w[i - 1], "or" | "nor"))
        {
            v = lex_value * N_SCALAR;
        }
        if self.upper[i] && self.cap_diff {
            // A valence of exactly 0 (a "no" above) moves down: the reference's `else`.
            v += if v > 0.0 { C_INCR } else { -C_INCR };
        }
        for start in 0..i.min(3) {
            let j = i - start - 1;
            if self.lex[j].is_some() {
                continue;
            }
            // Boosters further back count less (the reference skips zeros; ×1 is exact).
            v += scalar_inc_dec(w[j], self.upper[j], v, self.cap_diff) * [1.0, 0.95, 0.9][start];
            v = negation_check(v, w, start, i);
            if start == 2 {
                v = special_idioms_check(v, w, i);
            }
        }
        // `_least_check`: "least X" negates X, except in "at least" and "very least".
        if i > 0
            && self.lex[i - 1].is_none()
            && w[i - 1] == "least"
            && (i == 1 || (w[i - 2] != "at" && w[i - 2] != "very"))
        {
            v *= N_SCALAR;
        }
        v
    }
}

/// `scalar_inc_dec`: what a preceding booster or dampener adds, signed like `valence`, plus
/// [`C_INCR`] when the booster itself is ALL CAPS among mixed case.
fn scalar_inc_dec(lower: &str, upper: bool, valence: f64, cap_diff: bool) -> f64 {
    let Some(mut scalar) = booster(&[lower]) else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar = -scalar;
    }
    if upper && cap_diff {
        scalar += if valence > 0.0 { C_INCR } else { -C_INCR };
    }
    scalar
}

/// `_negation_check` for the token `start + 1` places before token `i`.
fn negation_check(v: f64, w: &[&str], start: usize, i: usize) -> f64 {
    let so_this = |x: &str| x == "so" || x == "this";
    let (boost, without_doubt, negator) = match start {
        0 => (false, false, w[i - 1]),
        1 => (
            w[i - 2] == "never" && so_this(w[i - 1]),
            w[i - 2] == "without" && w[i - 1] == "doubt",
            w[i - 2],
        ),
        // Python's `and` binds tighter than `or`: "so"/"this" just before the word boosts it
        // whatever precedes, a quirk kept for parity.
        _ => (
            (w[i - 3] == "never" && so_this(w[i - 2])) || so_this(w[i - 1]),
            w[i - 3] == "without" && (w[i - 2] == "doubt" || w[i - 1] == "doubt"),
            w[i - 3],
        ),
    };
    if boost {
        v * 1.25
    } else if !without_doubt && negated(negator) {
        v * N_SCALAR
    } else {
        v
    }
}

/// `_special_idioms_check` (only reached with `i >= 3`): an idiom around token `i` replaces its
/// valence, then a two-word dampener ("kind of") before it adds to it.
fn special_idioms_check(mut v: f64, w: &[&str], i: usize) -> f64 {
    let (w3, w2, w1, w0) = (w[i - 3], w[i - 2], w[i - 1], w[i]);
    let before: [&[&str]; 5] = [
        &[w1, w0],
        &[w2, w1, w0],
        &[w2, w1],
        &[w3, w2, w1],
        &[w3, w2],
    ];
    if let Some(x) = before.into_iter().find_map(special_case) {
        v = x;
    }
    if let Some(x) = w.get(i..i + 2).and_then(special_case) {
        v = x;
    }
    if let Some(x) = w.get(i..i + 3).and_then(special_case) {
        v = x;
    }
    let n_grams: [&[&str]; 3] = [&[w3, w2, w1], &[w3, w2], &[w2, w1]];
    for n_gram in n_grams {
        if let Some(b) = booster(n_gram) {
            v += b;
        }
    }
    v
}

/// `BOOSTER_DICT`, keyed by words (its keys joined by spaces; tokens hold no whitespace, so
/// this is the reference's string lookup).
fn booster(phrase: &[&str]) -> Option<f64> {
    match phrase {
        ["just", "enough"] | ["kind", "of"] | ["sort", "of"] => Some(B_DECR),
        [word] => match *word {
            "absolutely" | "amazingly" | "awfully" | "completely" | "considerable"
            | "considerably" | "decidedly" | "deeply" | "effing" | "enormous" | "enormously"
            | "entirely" | "especially" | "exceptional" | "exceptionally" | "extreme"
            | "extremely" | "fabulously" | "flipping" | "flippin" | "frackin" | "fracking"
            | "fricking" | "frickin" | "frigging" | "friggin" | "fully" | "fuckin" | "fucking"
            | "fuggin" | "fugging" | "greatly" | "hella" | "highly" | "hugely" | "incredible"
            | "incredibly" | "intensely" | "major" | "majorly" | "more" | "most"
            | "particularly" | "purely" | "quite" | "really" | "remarkably" | "so"
            | "substantially" | "thoroughly" | "total" | "totally" | "tremendous"
            | "tremendously" | "uber" | "unbelievably" | "unusually" | "utter" | "utterly"
            | "very" => Some(B_INCR),
            "almost" | "barely" | "hardly" | "kinda" | "kindof" | "kind-of" | "less" | "little"
            | "marginal" | "marginally" | "occasional" | "occasionally" | "partly" | "scarce"
            | "scarcely" | "slight" | "slightly" | "somewhat" | "sorta" | "sortof" | "sort-of" => {
                Some(B_DECR)
            }
            _ => None,
        },
        _ => None,
    }
}

/// `SPECIAL_CASES`, keyed by words like [`booster`]. (`SENTIMENT_LADEN_IDIOMS` is unused by
/// the reference, so it is not ported.)
fn special_case(phrase: &[&str]) -> Option<f64> {
    match phrase {
        ["the", "shit"] | ["the", "bomb"] | ["to", "die", "for"] => Some(3.0),
        ["bad", "ass"] | ["badass"] => Some(1.5),
        ["bus", "stop"] => Some(0.0),
        ["yeah", "right"] => Some(-2.0),
        ["kiss", "of", "death"] => Some(-1.5),
        ["beating", "heart"] => Some(3.5),
        _ => None,
    }
}

/// `negated` on one lower-cased word: in `NEGATE`, or containing "n't".
fn negated(word: &str) -> bool {
    match word {
        "aint" | "arent" | "cannot" | "cant" | "couldnt" | "darent" | "didnt" | "doesnt"
        | "ain't" | "aren't" | "can't" | "couldn't" | "daren't" | "didn't" | "doesn't" | "dont"
        | "hadnt" | "hasnt" | "havent" | "isnt" | "mightnt" | "mustnt" | "neither" | "don't"
        | "hadn't" | "hasn't" | "haven't" | "isn't" | "mightn't" | "mustn't" | "neednt"
        | "needn't" | "never" | "none" | "nope" | "nor" | "not" | "nothing" | "nowhere"
        | "oughtnt" | "shant" | "shouldnt" | "uhuh" | "wasnt" | "werent" | "oughtn't"
        | "shan't" | "shouldn't" | "uh-uh" | "wasn't" | "weren't" | "without" | "wont"
        | "wouldnt" | "won't" | "wouldn't" | "rarely" | "seldom" | "despite" => true,
        _ => word.contains("n't"),
    }
}

/// `_but_check`: halves sentiments before the first "but" and multiplies those after it by 1.5.
///
/// Replicates 3.3.2's `sentiments.index(sentiment)`: each value scales the *first* slot that
/// currently holds an equal value, which can be an earlier, already scaled slot. Scanning for
/// that slot would be quadratic ("but" and thousands of equal values), so the slots holding
/// each value are kept in ordered sets and the first is taken: O(n log n).
fn but_check(lower: &[&str], sentiments: &mut [f64]) {
    let Some(bi) = lower.iter().position(|w| *w == "but") else {
        return;
    };
    // Slots at or before the current one, by the bits of the value they hold. Slots after k
    // are untouched, so the first slot equal to slot k's value is at or before k. Only
    // non-zero, non-NaN values are kept, for which Python's `==` is equality of bits.
    let mut holders: HashMap<u64, BTreeSet<usize>> = HashMap::new();
    for k in 0..sentiments.len() {
        let s = sentiments[k];
        // Scaling a zero gives a zero; only its sign could change, which nothing reads.
        if s == 0.0 {
            continue;
        }
        // `list.index` matches a NaN only by identity: a NaN here matches its own slot (an
        // earlier identical NaN would be NaN after scaling either way).
        let si = if s.is_nan() {
            k
        } else {
            let slots = holders.entry(s.to_bits()).or_default();
            slots.insert(k);
            slots.pop_first().unwrap_or(k)
        };
        let scaled = match si.cmp(&bi) {
            Ordering::Less => s * 0.5,
            Ordering::Greater => s * 1.5,
            Ordering::Equal => s,
        };
        sentiments[si] = scaled;
        // Halving the least subnormal gives a zero, which is never looked up.
        if scaled != 0.0 && !scaled.is_nan() {
            holders.entry(scaled.to_bits()).or_default().insert(si);
        }
    }
}

/// `score_valence`: the compound and the pos/neu/neg shares, rounded as the reference does.
fn score_valence(sentiments: &[f64], text: &str) -> Polarity {
    // Python's `sum` starts at 0 and adds left to right; so does this fold.
    let mut sum = sentiments.iter().fold(0.0, |acc, s| acc + s);
    let amplifier = punctuation_emphasis(text);
    if sum > 0.0 {
        sum += amplifier;
    } else if sum < 0.0 {
        sum -= amplifier;
    }
    let compound = (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0);

    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0, 0.0, 0_u32);
    for &s in sentiments {
        // ±1 compensates for neutral words counting 1 each.
        if s > 0.0 {
            pos_sum += s + 1.0;
        }
        if s < 0.0 {
            neg_sum += s - 1.0;
        }
        if s == 0.0 {
            neu_count += 1;
        }
    }
    let neg_abs = neg_sum.abs();
    if pos_sum > neg_abs {
        pos_sum += amplifier;
    } else if pos_sum < neg_abs {
        neg_sum -= amplifier;
    }
    let total = pos_sum + neg_sum.abs() + f64::from(neu_count);
    Polarity {
        neg: py_round((neg_sum / total).abs(), 3),
        neu: py_round((f64::from(neu_count) / total).abs(), 3),
        pos: py_round((pos_sum / total).abs(), 3),
        compound: py_round(compound, 4),
    }
}

/// `_punctuation_emphasis`: up to four "!", and two or more "?".
fn punctuation_emphasis(text: &str) -> f64 {
    let ep_count = text.bytes().filter(|&b| b == b'!').count().min(EP_MAX);
    let qm_count = text.bytes().filter(|&b| b == b'?').count();
    let qm = match qm_count {
        0 | 1 => 0.0,
        // At most 3: exact as f64.
        2..=3 => qm_count as f64 * QM_INCR,
        _ => QM_MAX,
    };
    // At most EP_MAX: exact as f64.
    ep_count as f64 * EP_INCR + qm
}

/// Python's `round(x, digits)`: the exact binary value rounded half-to-even, read back. Rust's
/// `{:.N}` formatting also rounds the exact value half-to-even, so the result is bit-identical.
fn py_round(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// Python's `str.isspace()` (what `str.split()` and `str.strip()` use): Unicode White_Space
/// plus the ASCII separators U+001C..U+001F, which Rust's `char::is_whitespace` leaves out.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `_strip_punc_if_word`: strips ASCII punctuation (`string.punctuation`) from both ends,
/// unless that leaves two code points or fewer, which keeps emoticons such as ":)" whole.
fn strip_punc_if_word(token: &str) -> &str {
    let stripped = token.trim_matches(|c: char| c.is_ascii_punctuation());
    if stripped.chars().nth(2).is_none() {
        token
    } else {
        stripped
    }
}

/// Python's `str.lower()` (full Unicode mapping, final sigma); borrows when nothing changes.
fn py_lower(word: &str) -> Cow<'_, str> {
    if word
        .bytes()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        Cow::Owned(word.to_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// Python's `str.isupper()`: at least one cased character, none lower- or titlecase (so "A1"
/// and "I'M" are upper).
fn py_is_upper(word: &str) -> bool {
    let mut cased = false;
    for c in word.chars() {
        if c.is_lowercase() || is_titlecase(c) {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// Unicode category Lt, which Rust's `char` has no predicate for.
fn is_titlecase(c: char) -> bool {
    let c = u32::from(c);
    matches!(c, 0x1c5 | 0x1c8 | 0x1cb | 0x1f2 | 0x1fbc | 0x1fcc | 0x1ffc)
        || matches!(c, 0x1f88..=0x1f8f | 0x1f98..=0x1f9f | 0x1fa8..=0x1faf)
}

/// Lines stripped as Python's `str.strip()` does, blank ones dropped, with 1-based numbers.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim_matches(is_py_space)))
        .filter(|(_, line)| !line.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real means from `vader_lexicon.txt` ("lol" twice with different means, as in the file).
    const LEXICON: &str = "adverse\t-1.5\n\
        bad\t-2.5\t0.67082\t[-2, -2, -3, -2, -2, -3, -2, -4, -3, -2]\n\
        broken\t-2.1\nfubar\t-3.0\nfunny\t1.9\ngood\t1.9\ngreat\t3.1\nhandsome\t2.2\nheart\t3.2\n\
        grinning\t1.5\nhorrible\t-2.5\nkind\t2.4\nl\t2.0\nlol\t2.9\nlol\t1.8\nno\t-1.2\nsmart\t1.7\n\
        smiling\t2.0\nshit\t-2.6\nsux\t-1.5\n";
    const EMOJI: &str = "\u{1F601}\tbeaming face with smiling eyes\r\n\u{1F494}\tbroken heart\r\n\
        \u{1F638}\tgrinning cat face with smiling eyes\r\n";

    /// Asserts (text, neg, neu, pos, compound) as `vaderSentiment` 3.3.2 gives them with the
    /// same two lexicons.
    fn assert_scores(cases: &[(&str, f64, f64, f64, f64)]) {
        let vader = Vader::parse(LEXICON, EMOJI).expect("the inline lexicon parses");
        for &(text, neg, neu, pos, compound) in cases {
            let p = vader.polarity(text);
            assert_eq!(
                (p.neg, p.neu, p.pos, p.compound),
                (neg, neu, pos, compound),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_empty_or_blank_text_scores_all_zero() {
        assert_scores(&[("", 0.0, 0.0, 0.0, 0.0), ("  \n", 0.0, 0.0, 0.0, 0.0)]);
    }

    #[test]
    fn a_lexicon_word_scores_its_last_mean() {
        assert_scores(&[
            ("The book was good.", 0.0, 0.508, 0.492, 0.4404),
            ("ΣΣ good", 0.0, 0.256, 0.744, 0.4404),
            ("lol", 0.0, 0.0, 1.0, 0.4215),
        ]);
    }

    #[test]
    fn negation_flips_and_damps_a_word() {
        assert_scores(&[
            ("The book was not good.", 0.376, 0.624, 0.0, -0.3412),
            ("The book isn't good.", 0.445, 0.555, 0.0, -0.3412),
            ("not so great", 0.637, 0.363, 0.0, -0.544),
            // "never so/this X" boosts X instead.
            ("never so good", 0.0, 0.348, 0.652, 0.5777),
            ("never this great", 0.0, 0.291, 0.709, 0.7073),
        ]);
    }

    #[test]
    fn but_halves_what_precedes_and_boosts_what_follows() {
        assert_scores(&[
            (
                "The book was good, but the ending was bad.",
                0.347,
                0.511,
                0.142,
                -0.5859,
            ),
            // fubar's −3.0 is halved to −1.5, which `list.index` then finds for adverse's −1.5.
            ("fubar but adverse", 0.81, 0.19, 0.0, -0.5023),
        ]);
    }

    #[test]
    fn but_before_thousands_of_equal_values_is_linearithmic_and_as_the_reference() {
        // Each value after "but" scales the first slot holding an equal value: a scan for it
        // took ~25M steps for "but" and 2,047 😸 (8 KiB, 12,283 tokens). Scores from 3.3.2.
        let cats = format!("but {}", "\u{1F638}".repeat(2047));
        let ls = format!("but {}", "l ".repeat(4000));
        // Each −1.5 after "but" finds a halved −3.0 before it and halves that again; a
        // positional rule would give 0.742, 0.258, 0.0.
        let chain = format!(
            "{}but {}",
            "fubar the ".repeat(1000),
            "adverse the ".repeat(1000)
        );
        assert_scores(&[
            (&cats, 0.0, 0.356, 0.644, 1.0),
            (&ls, 0.0, 0.0, 1.0, 1.0),
            (&chain, 0.68, 0.32, 0.0, -1.0),
        ]);
    }

    #[test]
    fn all_caps_among_lower_case_emphasises_a_word() {
        assert_scores(&[
            ("The book was GOOD.", 0.0, 0.452, 0.548, 0.5622),
            ("THE BOOK WAS GOOD.", 0.0, 0.508, 0.492, 0.4404),
            ("SMART", 0.0, 0.0, 1.0, 0.4019),
        ]);
    }

    #[test]
    fn boosters_raise_the_next_word() {
        assert_scores(&[
            ("The book was very good.", 0.0, 0.556, 0.444, 0.4927),
            ("The book was VERY good.", 0.0, 0.505, 0.495, 0.6028),
        ]);
    }

    #[test]
    fn up_to_four_exclamation_marks_and_two_or_more_question_marks_emphasise() {
        assert_scores(&[
            ("The book was good!!!", 0.0, 0.443, 0.557, 0.5826),
            ("The book was good!!!!!!", 0.0, 0.424, 0.576, 0.6209),
            ("Was the book good?", 0.0, 0.508, 0.492, 0.4404),
            ("Was the book good??", 0.0, 0.479, 0.521, 0.504),
            ("Was the book good????", 0.0, 0.437, 0.563, 0.594),
        ]);
    }

    #[test]
    fn no_before_a_lexicon_word_negates_it() {
        assert_scores(&[
            ("There is no good book.", 0.376, 0.624, 0.0, -0.3412),
            ("no good or bad", 0.332, 0.276, 0.393, 0.1139),
            ("I said no", 0.524, 0.476, 0.0, -0.296),
        ]);
    }

    #[test]
    fn least_negates_unless_after_at_or_very() {
        assert_scores(&[
            ("It is the least funny book.", 0.325, 0.675, 0.0, -0.3412),
            ("Least funny.", 0.706, 0.294, 0.0, -0.3412),
            ("At least it is not horrible.", 0.0, 0.637, 0.363, 0.431),
        ]);
    }

    #[test]
    fn kind_of_dampens_and_is_not_kind() {
        assert_scores(&[
            ("The book was kind of good.", 0.0, 0.657, 0.343, 0.3832),
            ("The book was kinda good.", 0.0, 0.605, 0.395, 0.3832),
            ("The book was sort of good.", 0.0, 0.657, 0.343, 0.3832),
        ]);
    }

    #[test]
    fn an_idiom_replaces_the_valence() {
        assert_scores(&[
            ("It is the shit", 0.0, 0.429, 0.571, 0.6124),
            ("It is the shit!", 0.0, 0.411, 0.589, 0.6476),
        ]);
    }

    #[test]
    fn an_emoji_is_scored_by_its_description() {
        assert_scores(&[
            ("The book made me \u{1F601}", 0.0, 0.727, 0.273, 0.4588),
            ("My \u{1F494}\u{1F494}", 0.397, 0.064, 0.538, 0.4939),
        ]);
    }

    #[test]
    fn tokens_split_and_strip_as_python_does() {
        assert_scores(&[
            // U+001C separates words for `str.split()`.
            ("good\u{1c}bad", 0.547, 0.0, 0.453, -0.1531),
            // "no." would strip to two characters, so it stays "no.", which is no lexicon word.
            ("I said no.", 0.0, 1.0, 0.0, 0.0),
            ("not, good", 0.706, 0.294, 0.0, -0.3412),
        ]);
    }

    #[test]
    fn malformed_lexicons_are_rejected_with_their_line() {
        let err = |lexicon, emoji| Vader::parse(lexicon, emoji).map(|_| ()).unwrap_err();
        let missing = err("good\t1.9\nbad -2.5\n", "");
        assert!(matches!(missing, LexiconError::MissingMean { line: 2 }));
        let bad_mean = err("good\tvery\n", "");
        assert!(matches!(bad_mean, LexiconError::BadMean { line: 1, .. }));
        assert_eq!(
            bad_mean.to_string(),
            "lexicon line 1: `very` is not a number"
        );
        assert!(matches!(err("\n \r\n", ""), LexiconError::Empty));
        let emoji = err("good\t1.9", "x\n\u{1F601}\n");
        assert!(matches!(
            emoji,
            LexiconError::MissingDescription { line: 1 }
        ));
    }
}
