//! Content moderation by hatesonar 0.1.0 (PyPI, MIT, © 2017 Hiroki Nakayama): TF-IDF and
//! logistic regression trained on Davidson et al.'s tweets, shipped as `hatesonar/model/model.onnx`
//! (skl2onnx 1.19.1). The graph is read with a hand-written subset of onnx-ml.proto and scored as
//! ONNX Runtime's CPU kernels score it:
//!
//! Reshape → StringNormalizer (LOWER) → com.microsoft Tokenizer (tokenexp `[a-zA-Z0-9_]+`,
//! mincharnum 1, mark 0) → Flatten → TfIdfVectorizer (28,302 unigrams, TF) → Mul (idf
//! initializer) → Normalizer (L2) → LinearClassifier (3 classes, SOFTMAX) → Normalizer (L1) →
//! ZipMap. Anything else in that chain is refused rather than guessed at.
//!
//! The arithmetic is f32 as in ORT; only the dot product's summation order differs from ORT's
//! GEMM, so probabilities agree to about 1e-7 (`tests/data/hatesonar_golden.json`).

use std::collections::{BTreeMap, HashMap};

use prost::Message;

/// The Tokenizer pattern that [`HateSonar::tokens`] implements by hand.
const TOKEN_PATTERN: &str = "[a-zA-Z0-9_]+";
/// hatesonar/api.py's `Sonar.mapping`: the names of the model's integer class labels 0, 1, 2.
const CLASS_NAMES: [&str; 3] = ["hate_speech", "offensive_language", "neither"];
// AttributeProto.AttributeType values.
const INT: i32 = 2;
const STRING: i32 = 3;
const FLOATS: i32 = 6;
const INTS: i32 = 7;
const STRINGS: i32 = 8;

/// The onnx-ml.proto fields read here (numbers checked against onnx 1.23's onnx-ml.proto);
/// prost skips every other field.
#[rustfmt::skip]
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Model {
        #[prost(message, optional, tag = "7")] pub graph: Option<Graph>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Graph {
        #[prost(message, repeated, tag = "1")] pub node: Vec<Node>,
        #[prost(message, repeated, tag = "5")] pub initializer: Vec<Tensor>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Node {
        #[prost(string, repeated, tag = "1")] pub input: Vec<String>,
        #[prost(string, repeated, tag = "2")] pub output: Vec<String>,
        #[prost(string, tag = "4")] pub op_type: String,
        #[prost(message, repeated, tag = "5")] pub attribute: Vec<Attribute>,
        #[prost(string, tag = "7")] pub domain: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Attribute {
        #[prost(string, tag = "1")] pub name: String,
        #[prost(int64, tag = "3")] pub i: i64,
        #[prost(bytes = "vec", tag = "4")] pub s: Vec<u8>,
        #[prost(float, repeated, tag = "7")] pub floats: Vec<f32>,
        #[prost(int64, repeated, tag = "8")] pub ints: Vec<i64>,
        #[prost(bytes = "vec", repeated, tag = "9")] pub strings: Vec<Vec<u8>>,
        /// `type`: which value field is in use.
        #[prost(int32, tag = "20")] pub kind: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, tag = "2")] pub data_type: i32,
        #[prost(float, repeated, tag = "4")] pub float_data: Vec<f32>,
        #[prost(string, tag = "8")] pub name: String,
        #[prost(bytes = "vec", tag = "9")] pub raw_data: Vec<u8>,
    }
}

/// The hatesonar classifier: vocabulary, weights and labels read from its ONNX file.
pub struct HateSonar {
    labels: Vec<String>,
    /// Token → feature column (TfIdfVectorizer's pool_strings → ngram_indexes).
    vocabulary: HashMap<String, usize>,
    lower: bool,
    min_chars: usize,
    marks: bool,
    /// The Mul and Normalizer steps between the vectorizer and the classifier, in graph order.
    features: Vec<Stage>,
    /// classes × features, row-major as ORT holds them.
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    /// The Normalizers applied to the softmax.
    outputs: Vec<Norm>,
}

/// Why the ONNX file is not the model expected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The bytes are not an ONNX protobuf.
    #[error("not an onnx model: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The model holds no graph.
    #[error("the onnx model has no graph")]
    NoGraph,
    /// A node the scorer needs is absent, or not where the pipeline needs it.
    #[error("the graph lacks {0}")]
    MissingNode(&'static str),
    /// A node that must be unique appears more than once.
    #[error("the graph has more than one {0} node")]
    DuplicateNode(&'static str),
    /// A node lacks an attribute, or has it with another type (operator, name, expected type).
    #[error("{0} has no {1} attribute of type {2}")]
    MissingAttribute(String, &'static str, i32),
    /// A node or an attribute value that this scorer does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A list whose length disagrees with the rest of the graph (list, expected, found).
    #[error("{0} has {2} values where {1} were expected")]
    SizeMismatch(&'static str, usize, usize),
    /// Anything else malformed: bad UTF-8, a repeated word, a missing initializer.
    #[error("{0}")]
    Invalid(String),
}

/// A step on the feature vector.
enum Stage {
    /// `Mul` by a constant: one factor per feature column.
    Scale(Vec<f32>),
    /// ai.onnx.ml `Normalizer`.
    Norm(Norm),
}

#[derive(Clone, Copy)]
enum Norm {
    L1,
    L2,
}

impl HateSonar {
    /// Reads the model from the bytes of `model.onnx`.
    pub fn parse(onnx: &[u8]) -> Result<Self, ModelError> {
        use ModelError::{MissingNode, SizeMismatch as Mismatch, Unsupported};
        let graph = pb::Model::decode(onnx)?.graph.ok_or(ModelError::NoGraph)?;
        let nodes = graph.node.as_slice();
        let case = only(nodes, "StringNormalizer")?;
        let tokenizer = only(nodes, "Tokenizer")?;
        let tfidf = only(nodes, "TfIdfVectorizer")?;
        let classifier = only(nodes, "LinearClassifier")?;
        let (normalized, tokens) = (first_output(case)?, first_output(tokenizer)?);
        if !same(reader(nodes, normalized), tokenizer) || !same(reader(nodes, tokens), tfidf) {
            return Err(MissingNode(
                "StringNormalizer → Tokenizer → TfIdfVectorizer",
            ));
        }

        let lower = match attr(case, "case_change_action", STRING)?.s.as_slice() {
            b"LOWER" => true,
            b"NONE" => false,
            other => return Err(unsupported("case_change_action", other)),
        };
        // Stopwords drop whole strings; another locale may lower-case ASCII otherwise (tr_TR).
        let stopwords = opt(case, "stopwords").is_some_and(|a| !a.strings.is_empty());
        if stopwords || opt(case, "locale").is_some_and(|a| a.s != b"en_US.UTF-8") {
            return Err(Unsupported("StringNormalizer stopwords or locale".into()));
        }
        // ORT splits on `separators` whenever they are set, and matches `tokenexp` otherwise.
        let pattern = &attr(tokenizer, "tokenexp", STRING)?.s;
        if opt(tokenizer, "separators").is_some() || pattern != TOKEN_PATTERN.as_bytes() {
            return Err(unsupported("Tokenizer tokenexp", pattern));
        }
        let raw = attr(tokenizer, "mincharnum", INT)?.i;
        let min_chars = usize::try_from(raw).ok().filter(|&n| n > 0);
        let min_chars = min_chars.ok_or_else(|| Unsupported(format!("mincharnum {raw}")))?;
        let marks = attr(tokenizer, "mark", INT)?.i != 0;

        let int = |name| attr(tfidf, name, INT).map(|a| a.i);
        let mode = &attr(tfidf, "mode", STRING)?.s;
        if (int("min_gram_length")?, int("max_gram_length")?) != (1, 1) || mode != b"TF" {
            return Err(Unsupported("TfIdfVectorizer other than TF unigrams".into()));
        }
        let pool = &attr(tfidf, "pool_strings", STRINGS)?.strings;
        let starts = &attr(tfidf, "ngram_counts", INTS)?.ints;
        // The unigrams are pool[counts[0]..counts[1]], or to the end of the pool.
        let bound = |i: usize| starts.get(i).map_or(Ok(pool.len()), |&n| n.try_into());
        let unigrams = match (bound(0), bound(1)) {
            (Ok(a), Ok(b)) if a <= b && b <= pool.len() && !starts.is_empty() => &pool[a..b],
            _ => return Err(Unsupported(format!("ngram_counts {starts:?}"))),
        };
        let indexes = &attr(tfidf, "ngram_indexes", INTS)?.ints;
        let columns: Vec<usize> = indexes.iter().map_while(|&i| i.try_into().ok()).collect();
        let expected = unigrams.len().max(1);
        if columns.len() != indexes.len() || columns.len() < expected {
            return Err(Mismatch("ngram_indexes", expected, columns.len()));
        }
        // ORT's output width: the largest index + 1. Checking it against the coefficients (data
        // in the file) bounds every allocation below.
        let dim = columns.iter().max().map_or(0, |&c| c + 1);

        let floats = |name| attr(classifier, name, FLOATS).map(|a| a.floats.clone());
        let (intercepts, coefficients) = (floats("intercepts")?, floats("coefficients")?);
        // One intercept is ORT's binary case, which adds a second class.
        if intercepts.len() < 2 {
            return Err(Unsupported(format!("{} intercepts", intercepts.len())));
        }
        let expected = intercepts.len().saturating_mul(dim);
        if coefficients.len() != expected {
            return Err(Mismatch("coefficients", expected, coefficients.len()));
        }
        let labels = class_names(&attr(classifier, "classlabels_ints", INTS)?.ints)?;
        if labels.len() != intercepts.len() {
            return Err(Mismatch("class labels", intercepts.len(), labels.len()));
        }
        let transform = &attr(classifier, "post_transform", STRING)?.s;
        if transform != b"SOFTMAX" {
            return Err(unsupported("post_transform", transform));
        }

        let mut vocabulary = HashMap::with_capacity(unigrams.len());
        for (word, &column) in unigrams.iter().zip(&columns) {
            if vocabulary.insert(utf8(word)?, column).is_some() {
                let word = String::from_utf8_lossy(word);
                return Err(ModelError::Invalid(format!(
                    "pool_strings repeats {word:?}"
                )));
            }
        }
        // From the vectorizer to the classifier; bounded, as a malformed graph may loop.
        let (mut features, mut tensor) = (Vec::new(), first_output(tfidf)?);
        for _ in 0..nodes.len() {
            let Some(node) = reader(nodes, tensor).filter(|&n| !same(Some(n), classifier)) else {
                break;
            };
            features.push(if is(node, "Mul") {
                let constant = node.input.iter().find(|i| *i != tensor);
                let constant = constant.map_or("", String::as_str);
                Stage::Scale(initializer(&graph, constant, dim)?)
            } else if is(node, "Normalizer") {
                Stage::Norm(norm(node)?)
            } else {
                return Err(Unsupported(format!(
                    "{} before LinearClassifier",
                    node.op_type
                )));
            });
            tensor = first_output(node)?;
        }
        if !same(reader(nodes, tensor), classifier) {
            return Err(MissingNode("TfIdfVectorizer → LinearClassifier"));
        }
        // After the probabilities (output 1): Normalizers, then ZipMap or the graph's output.
        let output = classifier.output.get(1);
        let output = output.ok_or(MissingNode("LinearClassifier's probability output"))?;
        let (mut outputs, mut tensor) = (Vec::new(), output.as_str());
        for _ in 0..nodes.len() {
            match reader(nodes, tensor) {
                Some(node) if is(node, "Normalizer") => {
                    outputs.push(norm(node)?);
                    tensor = first_output(node)?;
                }
                Some(node) if !is(node, "ZipMap") => {
                    return Err(Unsupported(format!(
                        "{} after LinearClassifier",
                        node.op_type
                    )));
                }
                _ => break,
            }
        }
        Ok(Self {
            labels,
            vocabulary,
            lower,
            min_chars,
            marks,
            features,
            coefficients,
            intercepts,
            outputs,
        })
    }

    /// The class labels, in the model's order: ["hate_speech", "offensive_language", "neither"].
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The probability of each label for `text`, in the order of `labels()`.
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        let mut counts = BTreeMap::<usize, u32>::new();
        for token in self.tokens(text) {
            if let Some(&column) = self.vocabulary.get(&token) {
                let count = counts.entry(column).or_default();
                *count = count.saturating_add(1);
            }
        }
        // Sparse and in column order: ORT sums the dense vector in that order and its zeros add
        // nothing, so the norms come out bit for bit.
        let cols: Vec<usize> = counts.keys().copied().collect();
        let mut x: Vec<f32> = counts.values().map(|&n| n as f32).collect();
        for stage in &self.features {
            match stage {
                // `parse` gave every factor list the feature count, which bounds the columns.
                Stage::Scale(factors) => {
                    for (&c, v) in cols.iter().zip(&mut x) {
                        *v *= factors[c];
                    }
                }
                Stage::Norm(norm) => normalize(&mut x, *norm),
            }
        }
        let dim = self.coefficients.len() / self.intercepts.len();
        let mut p = Vec::with_capacity(self.intercepts.len());
        for (row, b) in self.coefficients.chunks_exact(dim).zip(&self.intercepts) {
            let dot = cols.iter().zip(&x).fold(0.0, |s, (&c, v)| s + v * row[c]);
            p.push(dot + b);
        }
        // ORT's SOFTMAX: shifted by the largest score.
        let max = p.iter().fold(f32::MIN, |m, &s| m.max(s));
        p.iter_mut().for_each(|s| *s = (*s - max).exp());
        let sum: f32 = p.iter().sum();
        p.iter_mut().for_each(|s| *s /= sum);
        for &norm in &self.outputs {
            normalize(&mut p, norm);
        }
        p
    }

    /// The tokens ORT's StringNormalizer and Tokenizer make of `text`: runs of word characters
    /// ([`Self::word_char`]) of at least `mincharnum` (ORT steps into a shorter run and finds
    /// only shorter suffixes), between the marks \x02 and \x03 if `mark` is set and any exist.
    fn tokens(&self, text: &str) -> Vec<String> {
        let (mut tokens, mut run) = (Vec::new(), String::new());
        // The trailing space ends the last run.
        for c in text.chars().chain([' ']) {
            if let Some(c) = self.word_char(c) {
                run.push(c);
            } else if run.len() >= self.min_chars {
                tokens.push(std::mem::take(&mut run));
            } else {
                run.clear();
            }
        }
        if self.marks && !tokens.is_empty() {
            tokens.insert(0, "\u{2}".to_owned());
            tokens.push("\u{3}".to_owned());
        }
        tokens
    }

    /// `c` after lower-casing, if `[a-zA-Z0-9_]` matches it. ORT lower-cases in the C++ locale
    /// en_US.UTF-8 (glibc's towlower), which maps only A–Z, U+0130 (İ) and U+212A (Kelvin sign)
    /// into ASCII (checked over every code point), so no other character can join a token.
    fn word_char(&self, c: char) -> Option<char> {
        let c = match c {
            '\u{130}' if self.lower => 'i',
            '\u{212A}' if self.lower => 'k',
            c if self.lower => c.to_ascii_lowercase(),
            c => c,
        };
        (c.is_ascii_alphanumeric() || c == '_').then_some(c)
    }
}

/// ai.onnx.ml Normalizer as ORT computes it in f32 (left alone when the norm is 0).
fn normalize(values: &mut [f32], norm: Norm) {
    let total: f32 = match norm {
        Norm::L1 => values.iter().map(|v| v.abs()).sum(),
        Norm::L2 => values.iter().map(|v| v * v).sum(),
    };
    if total != 0.0 {
        for v in values {
            *v = match norm {
                Norm::L1 => *v / total,
                // sqrt(x² / Σx²) with x's sign, as ORT's NormalizeL2 writes it.
                Norm::L2 if *v < 0.0 => -(*v * *v / total).sqrt(),
                Norm::L2 => (*v * *v / total).sqrt(),
            };
        }
    }
}

fn norm(node: &pb::Node) -> Result<Norm, ModelError> {
    match attr(node, "norm", STRING)?.s.as_slice() {
        b"L1" => Ok(Norm::L1),
        b"L2" => Ok(Norm::L2),
        other => Err(unsupported("Normalizer norm", other)),
    }
}

/// Whether `node` is operator `op` of its domain ("" and "ai.onnx" both name the default).
fn is(node: &pb::Node, op: &str) -> bool {
    let domain = match op {
        "Tokenizer" => "com.microsoft",
        "LinearClassifier" | "Normalizer" | "ZipMap" => "ai.onnx.ml",
        _ => "",
    };
    node.op_type == op && (node.domain == domain || domain.is_empty() && node.domain == "ai.onnx")
}

/// The one `op` node of the graph.
fn only<'a>(nodes: &'a [pb::Node], op: &'static str) -> Result<&'a pb::Node, ModelError> {
    let mut found = nodes.iter().filter(|n| is(n, op));
    match (found.next(), found.next()) {
        (Some(node), None) => Ok(node),
        (None, _) => Err(ModelError::MissingNode(op)),
        (Some(_), Some(_)) => Err(ModelError::DuplicateNode(op)),
    }
}

/// The node that reads `tensor`, looking through Reshape, Flatten and Identity (for one text they
/// change only shapes).
fn reader<'a>(nodes: &'a [pb::Node], mut tensor: &'a str) -> Option<&'a pb::Node> {
    for _ in 0..nodes.len() {
        let node = nodes.iter().find(|n| n.input.iter().any(|i| i == tensor))?;
        if !["Reshape", "Flatten", "Identity"]
            .iter()
            .any(|op| is(node, op))
        {
            return Some(node);
        }
        tensor = node.output.first()?;
    }
    None
}

fn first_output(node: &pb::Node) -> Result<&str, ModelError> {
    let output = node.output.first().map(String::as_str);
    output.ok_or_else(|| ModelError::Invalid(format!("{} has no output", node.op_type)))
}

fn opt<'a>(node: &'a pb::Node, name: &str) -> Option<&'a pb::Attribute> {
    node.attribute.iter().find(|a| a.name == name)
}

/// The attribute `name` of `node`, of type `kind`.
fn attr<'a>(
    node: &'a pb::Node,
    name: &'static str,
    kind: i32,
) -> Result<&'a pb::Attribute, ModelError> {
    let found = opt(node, name).filter(|a| a.kind == kind);
    found.ok_or_else(|| ModelError::MissingAttribute(node.op_type.clone(), name, kind))
}

/// The float32 initializer `name` as `dim` factors (a single value is broadcast).
fn initializer(graph: &pb::Graph, name: &str, dim: usize) -> Result<Vec<f32>, ModelError> {
    let found = graph.initializer.iter().find(|t| t.name == name);
    // data_type 1 is FLOAT; raw_data holds little-endian f32s.
    let Some(t) = found.filter(|t| t.data_type == 1 && t.raw_data.len() % 4 == 0) else {
        return Err(ModelError::Invalid(format!(
            "no float32 initializer {name:?}"
        )));
    };
    let raw = t
        .raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let values: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        raw.collect()
    };
    match values.len() {
        1 => Ok(vec![values[0]; dim]),
        n if n == dim => Ok(values),
        n => Err(ModelError::SizeMismatch("Mul initializer", dim, n)),
    }
}

/// hatesonar/api.py's names for the integer class labels.
fn class_names(labels: &[i64]) -> Result<Vec<String>, ModelError> {
    let name = |l: i64| Some((*CLASS_NAMES.get(usize::try_from(l).ok()?)?).to_owned());
    let unknown = |l| ModelError::Unsupported(format!("class label {l}"));
    labels
        .iter()
        .map(|&l| name(l).ok_or_else(|| unknown(l)))
        .collect()
}

/// Whether `node` is `expected` itself.
fn same(node: Option<&pb::Node>, expected: &pb::Node) -> bool {
    node.is_some_and(|n| std::ptr::eq(n, expected))
}

fn utf8(bytes: &[u8]) -> Result<String, ModelError> {
    String::from_utf8(bytes.to_vec()).map_err(|e| ModelError::Invalid(e.to_string()))
}

fn unsupported(what: &str, value: &[u8]) -> ModelError {
    ModelError::Unsupported(format!("{what} {:?}", String::from_utf8_lossy(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute: name, type, then its value fields.
    macro_rules! a {
        ($name:expr, $kind:expr, $($field:ident: $value:expr),*) => {
            pb::Attribute { name: $name.into(), kind: $kind, $($field: $value,)* ..Default::default() }
        };
    }

    // A fixture laid out as a table.
    #[rustfmt::skip]
    fn int(name: &str, i: i64) -> pb::Attribute { a!(name, INT, i: i) }
    #[rustfmt::skip]
    fn text(name: &str, s: &str) -> pb::Attribute { a!(name, STRING, s: s.into()) }
    #[rustfmt::skip]
    fn ints(name: &str, ints: &[i64]) -> pb::Attribute { a!(name, INTS, ints: ints.to_vec()) }
    #[rustfmt::skip]
    fn floats(name: &str, floats: &[f32]) -> pb::Attribute { a!(name, FLOATS, floats: floats.to_vec()) }

    /// hatesonar's graph in small: 4 words (columns permuted), idf 1..4 by column, 3 classes.
    #[rustfmt::skip]
    fn tiny() -> pb::Model {
        let names = |names: &[&str]| names.iter().map(|&n| n.to_owned()).collect();
        let node = |op: &str, domain: &str, input, output, attribute| pb::Node {
            input: names(input), output: names(output), op_type: op.into(), attribute, domain: domain.into(),
        };
        let (ml, pool) = ("ai.onnx.ml", ["bad", "good", "mean", "nice"].map(|w| w.as_bytes().to_vec()));
        let node = vec![
            node("Reshape", "", &["text", "shape"], &["flat"], vec![]),
            node("StringNormalizer", "", &["flat"], &["lower"], vec![text("case_change_action", "LOWER"), int("is_case_sensitive", 0)]),
            node("Tokenizer", "com.microsoft", &["lower"], &["tokens"], vec![int("mark", 0), int("mincharnum", 1), text("pad_value", "#"), text("tokenexp", TOKEN_PATTERN)]),
            node("Flatten", "", &["tokens"], &["tokens2"], vec![]),
            node("TfIdfVectorizer", "", &["tokens2"], &["tf"], vec![
                text("mode", "TF"), int("min_gram_length", 1), int("max_gram_length", 1), int("max_skip_count", 0),
                ints("ngram_counts", &[0]), ints("ngram_indexes", &[2, 0, 3, 1]), floats("weights", &[1.0; 4]),
                a!("pool_strings", STRINGS, strings: pool.to_vec()),
            ]),
            node("Mul", "", &["tf", "idf"], &["tfidf"], vec![]),
            node("Normalizer", ml, &["tfidf"], &["unit"], vec![text("norm", "L2")]),
            // Class 0 weighs column 2 ("bad"), class 1 column 1 ("nice"), class 2 nothing.
            node("LinearClassifier", ml, &["unit"], &["label", "scores"], vec![
                ints("classlabels_ints", &[0, 1, 2]), text("post_transform", "SOFTMAX"), int("multi_class", 1),
                floats("coefficients", &[0., 0., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0.]), floats("intercepts", &[0.0, 0.0, 0.5]),
            ]),
            node("Cast", "", &["label"], &["output_label"], vec![int("to", 7)]),
            node("Normalizer", ml, &["scores"], &["probabilities"], vec![text("norm", "L1")]),
            node("ZipMap", ml, &["probabilities"], &["output_probability"], vec![ints("classlabels_int64s", &[0, 1, 2])]),
        ];
        let idf = [1.0_f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let initializer = vec![pb::Tensor { data_type: 1, name: "idf".into(), raw_data: idf, ..Default::default() }];
        pb::Model { graph: Some(pb::Graph { node, initializer }) }
    }

    /// `tiny()` changed by `change`.
    fn tiny_with(change: impl FnOnce(&mut pb::Graph)) -> Result<HateSonar, ModelError> {
        let mut model = tiny();
        change(model.graph.as_mut().expect("graph"));
        HateSonar::parse(&model.encode_to_vec())
    }

    /// Replaces (or adds) an attribute of the `op` node.
    fn set(op: &str, attribute: pb::Attribute) -> impl FnOnce(&mut pb::Graph) {
        move |graph| {
            let node = graph
                .node
                .iter_mut()
                .find(|n| n.op_type == op)
                .expect("node");
            node.attribute.retain(|a| a.name != attribute.name);
            node.attribute.push(attribute);
        }
    }

    /// Asserts that `got` is the softmax of `scores`, worked out here in f64.
    fn assert_softmax(got: &[f32], scores: [f64; 3]) {
        let exp = scores.map(f64::exp);
        let sum: f64 = exp.iter().sum();
        assert_eq!(got.len(), 3);
        for (g, e) in got.iter().zip(exp) {
            assert!(
                (f64::from(*g) - e / sum).abs() < 1e-6,
                "{got:?} vs {scores:?}"
            );
        }
    }

    #[test]
    fn scores_a_tiny_model_as_worked_out_by_hand() {
        let model = tiny_with(|_| {}).expect("parses");
        assert_eq!(model.labels(), CLASS_NAMES);
        // "bad" twice: column 2, idf 3, so 6; "nice": column 1, idf 2, so 2. L2 norm √40.
        let norm = 40_f64.sqrt();
        let got = model.probabilities("Bad, BAD and nice words!");
        assert_softmax(&got, [6.0 / norm, 2.0 / norm, 0.5]);
        // "good" (1) and "mean" (4) weigh nothing but share the norm: √(1 + 16 + 4).
        let got = model.probabilities("good mean nice");
        assert_softmax(&got, [0.0, 2.0 / 21_f64.sqrt(), 0.5]);
        for nothing in ["", "!!! ...", "unknown words only", "badly nicer"] {
            assert_softmax(&model.probabilities(nothing), [0.0, 0.0, 0.5]);
        }
        // The idf as float_data rather than raw_data.
        let typed = tiny_with(|g| {
            g.initializer[0].raw_data.clear();
            g.initializer[0].float_data = vec![1.0, 2.0, 3.0, 4.0];
        });
        let got = typed.expect("parses").probabilities("bad nice");
        assert_eq!(got, model.probabilities("bad nice"));
    }

    #[test]
    fn tokens_are_ascii_word_runs_after_lower_casing() {
        let model = tiny_with(|_| {}).expect("parses");
        let mixed = "Hello, WORLD_1 café naïve K\u{130}LL \u{212A}ill ｂｉｔｃｈ a\u{0}b 2x";
        let want = [
            "hello", "world_1", "caf", "na", "ve", "kill", "kill", "a", "b", "2x",
        ];
        assert_eq!(model.tokens(mixed), want);
        assert!(model.tokens("").is_empty());
        assert!(model.tokens("¡¿ — 😀 ÀÉ").is_empty());
        // mincharnum drops short runs; the marks frame a row that has tokens.
        let model = tiny_with(|g| {
            set("Tokenizer", int("mincharnum", 2))(g);
            set("Tokenizer", int("mark", 1))(g);
        });
        let model = model.expect("parses");
        assert_eq!(model.tokens("a bc d"), ["\u{2}", "bc", "\u{3}"]);
        assert!(model.tokens("a b").is_empty());
        // Without lower-casing, İ and the Kelvin sign stay outside the pattern.
        let model = tiny_with(set("StringNormalizer", text("case_change_action", "NONE")));
        let tokens = model.expect("parses").tokens("Ab K\u{130}x \u{212A}");
        assert_eq!(tokens, ["Ab", "K", "x"]);
    }

    fn refused(change: impl FnOnce(&mut pb::Graph)) -> ModelError {
        tiny_with(change).err().expect("refused")
    }

    #[test]
    fn a_graph_not_shaped_like_hatesonar_is_refused() {
        let e = refused(|g| g.node.retain(|n| n.op_type != "TfIdfVectorizer"));
        assert!(matches!(e, ModelError::MissingNode("TfIdfVectorizer")));
        let e = refused(set("Tokenizer", text("tokenexp", "\\w+")));
        assert!(matches!(e, ModelError::Unsupported(_)));
        let e = refused(set("Tokenizer", ints("mincharnum", &[1])));
        assert!(matches!(
            e,
            ModelError::MissingAttribute(_, "mincharnum", INT)
        ));
        let e = refused(set("TfIdfVectorizer", int("max_gram_length", 2)));
        assert!(matches!(e, ModelError::Unsupported(_)));
        let e = refused(set("LinearClassifier", floats("coefficients", &[0.0; 11])));
        assert!(matches!(
            e,
            ModelError::SizeMismatch("coefficients", 12, 11)
        ));
        let e = refused(set("LinearClassifier", text("post_transform", "LOGISTIC")));
        assert!(matches!(e, ModelError::Unsupported(_)));
        let e = refused(|g| g.node[5].op_type = "Add".into()); // the Mul by the idf
        assert!(matches!(e, ModelError::Unsupported(_)));
        let e = refused(|g| g.initializer[0].raw_data.extend(0_f32.to_le_bytes()));
        assert!(matches!(
            e,
            ModelError::SizeMismatch("Mul initializer", 4, 5)
        ));
        assert!(matches!(HateSonar::parse(&[]), Err(ModelError::NoGraph)));
        let truncated = HateSonar::parse(&[0x3a, 0x05, 0x0a]);
        assert!(matches!(truncated, Err(ModelError::Decode(_))));
    }
}
