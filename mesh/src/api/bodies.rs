//! What each HTTP route's JSON body becomes: a pipeline request, or a typed `invalid_input`
//! error naming what is wrong. Pure (no sockets, no clocks), so that `fuzz/fuzz_targets/
//! http_body.rs` can feed it anything. Unknown fields are ignored, as OpenAI does.

use axum::http::HeaderMap;
use ganglion_client::protocol::{
    ChatMessage, ErrorCode, Input, Parameters, Request, Role, WireError,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::models::Task;

/// Parses a JSON body; a body that is not `T` is `invalid_input`, with serde's reason.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes)
        .map_err(|e| WireError::new(ErrorCode::InvalidInput, format!("bad JSON body: {e}")))
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `content`: a string, or parts of which the text ones count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// The generation fields chat and text completions share.
#[derive(Debug, Deserialize)]
struct Sampling {
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Stop>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u32>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatBody {
    model: String,
    /// Models to try in order when `model` cannot answer (an extension: AI Gateway's
    /// fallbacks, as one field).
    #[serde(default)]
    fallbacks: Vec<String>,
    messages: Vec<MessageIn>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// The body of `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    model: String,
    #[serde(default)]
    fallbacks: Vec<String>,
    prompt: Prompt,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

impl EmbedInput {
    fn into_texts(self) -> Vec<String> {
        match self {
            Self::One(text) => vec![text],
            Self::Many(texts) => texts,
        }
    }
}

/// How a Workers AI answer is shaped, as its request asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunShape {
    /// Text streamed as server-sent events.
    Streamed,
    /// One answer for the one text or image sent (a string `text`, or an image).
    One,
    /// One answer per text of a `text` array.
    Each,
}

/// The body of `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    model: String,
    #[serde(default)]
    fallbacks: Vec<String>,
    input: EmbedInput,
    encoding_format: Option<String>,
}

/// The body of `POST /v1/moderations`: `model` defaults to the built-in moderation model.
#[derive(Debug, Deserialize)]
pub struct ModerationsBody {
    model: Option<String>,
    #[serde(default)]
    fallbacks: Vec<String>,
    input: EmbedInput,
}

/// An `invalid_input` error.
pub fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidInput, message)
}

impl Sampling {
    fn parameters(&self) -> Result<Parameters, WireError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(invalid("only n = 1 is supported"));
        }
        Ok(Parameters {
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed.map(|s| s as u64),
            stop: match &self.stop {
                None => Vec::new(),
                Some(Stop::One(s)) => vec![s.clone()],
                Some(Stop::Many(v)) => v.clone(),
            },
        })
    }

    /// `Some(include_usage)` for a streamed answer, `None` for a whole one.
    fn stream(&self) -> Option<bool> {
        self.stream.unwrap_or(false).then(|| {
            self.stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false)
        })
    }
}

fn messages(input: Vec<MessageIn>) -> Result<Vec<ChatMessage>, WireError> {
    input
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(invalid(format!(
                        "messages of role `{other}` are not supported"
                    )));
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    if let Some(other) = parts.iter().find(|p| p.kind != "text") {
                        return Err(invalid(format!(
                            "content parts of type `{}` are not supported",
                            other.kind
                        )));
                    }
                    parts
                        .into_iter()
                        .filter_map(|p| p.text)
                        .collect::<Vec<_>>()
                        .join("")
                }
            };
            Ok(ChatMessage { role, content })
        })
        .collect()
}

/// The body of Workers AI's `POST /ai/run/{model}`.
#[derive(Debug, Deserialize)]
pub struct RunBody {
    prompt: Option<String>,
    messages: Option<Vec<MessageIn>>,
    text: Option<EmbedInput>,
    /// An image file's bytes, as a JSON array of numbers (Workers AI's shape).
    image: Option<Vec<u8>>,
    /// A WAV file's bytes, as a JSON array of numbers (Workers AI's shape).
    audio: Option<Vec<u8>>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stream: Option<bool>,
}

impl ChatBody {
    /// The request, and `Some(include_usage)` when the answer is streamed.
    pub fn into_request(self, headers: &HeaderMap) -> Result<(Request, Option<bool>), WireError> {
        let parameters = self.sampling.parameters()?;
        let input = Input::Chat(messages(self.messages)?);
        let mut request = super::request(self.model, input, parameters, headers)?;
        request.fallbacks = self.fallbacks;
        Ok((request, self.sampling.stream()))
    }
}

impl CompletionBody {
    /// The request (the prompt as one user message), and `Some(include_usage)` when the
    /// answer is streamed.
    pub fn into_request(self, headers: &HeaderMap) -> Result<(Request, Option<bool>), WireError> {
        let prompt = match self.prompt {
            Prompt::One(prompt) => prompt,
            Prompt::Many(mut prompts) if prompts.len() == 1 => prompts.remove(0),
            Prompt::Many(_) => return Err(invalid("exactly one prompt is supported")),
        };
        let input = Input::Chat(vec![ChatMessage {
            role: Role::User,
            content: prompt,
        }]);
        let mut request = super::request(self.model, input, self.sampling.parameters()?, headers)?;
        request.fallbacks = self.fallbacks;
        Ok((request, self.sampling.stream()))
    }
}

impl EmbeddingsBody {
    /// The request, and whether vectors go back as base64 of little-endian f32 (what recent
    /// SDKs ask for when the caller does not say).
    pub fn into_request(self, headers: &HeaderMap) -> Result<(Request, bool), WireError> {
        let base64 = match self.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "encoding_format `{other}` is not supported"
                )));
            }
        };
        let mut request = super::request(
            self.model,
            Input::Embed(self.input.into_texts()),
            Parameters::default(),
            headers,
        )?;
        request.fallbacks = self.fallbacks;
        Ok((request, base64))
    }
}

impl ModerationsBody {
    /// The request: each input text classified.
    pub fn into_request(self, headers: &HeaderMap) -> Result<Request, WireError> {
        let texts = self.input.into_texts();
        let model = self
            .model
            .unwrap_or_else(|| crate::models::catalog::MODERATION.to_owned());
        let mut request = super::request(
            model,
            Input::Classify(texts),
            Parameters::default(),
            headers,
        )?;
        request.fallbacks = self.fallbacks;
        Ok(request)
    }
}

impl RunBody {
    /// The request for `model`, a model of `task`, and how its answer is shaped (vectors,
    /// labels and images come whole: `stream` applies to text generation only).
    pub fn into_request(
        self,
        model: String,
        task: Task,
        headers: &HeaderMap,
    ) -> Result<(Request, RunShape), WireError> {
        let mut shape = RunShape::One;
        let (input, parameters) = match task {
            Task::TextEmbeddings | Task::TextClassification => {
                let Some(text) = self.text else {
                    return Err(invalid(format!("a {} model takes `text`", task.as_str())));
                };
                if matches!(text, EmbedInput::Many(_)) {
                    shape = RunShape::Each;
                }
                let texts = text.into_texts();
                let input = if task == Task::TextEmbeddings {
                    Input::Embed(texts)
                } else {
                    Input::Classify(texts)
                };
                (input, Parameters::default())
            }
            Task::ImageToText | Task::ImageClassification => {
                let Some(image) = self.image else {
                    return Err(invalid(format!(
                        "an {} model takes `image` (an array of bytes) or the image as the body",
                        task.as_str()
                    )));
                };
                (Input::Image(image), Parameters::default())
            }
            Task::SpeechRecognition => {
                let Some(audio) = self.audio else {
                    return Err(invalid(
                        "a speech model takes `audio` (an array of bytes) or the recording as the body",
                    ));
                };
                (Input::Audio(audio), Parameters::default())
            }
            Task::TextGeneration => {
                let chat = match (self.prompt, self.messages) {
                    (Some(prompt), None) => vec![ChatMessage {
                        role: Role::User,
                        content: prompt,
                    }],
                    (None, Some(list)) => messages(list)?,
                    _ => return Err(invalid("give either `prompt` or `messages`")),
                };
                let parameters = Parameters {
                    max_tokens: self.max_tokens,
                    temperature: self.temperature,
                    top_p: self.top_p,
                    seed: self.seed,
                    stop: Vec::new(),
                };
                (Input::Chat(chat), parameters)
            }
        };
        if self.stream.unwrap_or(false) && task == Task::TextGeneration {
            shape = RunShape::Streamed;
        }
        let request = super::request(model, input, parameters, headers)?;
        Ok((request, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(json: &str) -> Result<(Request, Option<bool>), WireError> {
        parse::<ChatBody>(json.as_bytes())?.into_request(&HeaderMap::new())
    }

    fn code<T: std::fmt::Debug>(result: Result<T, WireError>) -> ErrorCode {
        result.expect_err("refused").code
    }

    #[test]
    fn a_chat_body_becomes_a_request_with_its_sampling() {
        let (request, stream) = chat(
            r#"{"model":"m","messages":[{"role":"developer","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
                "max_completion_tokens":9,"max_tokens":99,"stop":"\n","stream":true,
                "stream_options":{"include_usage":true},"unknown":1}"#,
        )
        .expect("accepted");
        let Input::Chat(messages) = &request.input else {
            panic!("chat input")
        };
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(messages[1].content, "Hi there");
        assert_eq!(request.parameters.max_tokens, Some(9));
        assert_eq!(request.parameters.stop, vec!["\n".to_owned()]);
        assert_eq!(stream, Some(true));
    }

    #[test]
    fn what_the_node_cannot_do_is_invalid_input() {
        for body in [
            "not json",
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            r#"{"model":"m","messages":[],"n":2}"#,
        ] {
            assert_eq!(code(chat(body)), ErrorCode::InvalidInput, "{body}");
        }
        let two_prompts = parse::<CompletionBody>(br#"{"model":"m","prompt":["a","b"]}"#)
            .expect("parses")
            .into_request(&HeaderMap::new());
        assert_eq!(code(two_prompts), ErrorCode::InvalidInput);
        let format = parse::<EmbeddingsBody>(br#"{"model":"m","input":"a","encoding_format":"x"}"#)
            .expect("parses")
            .into_request(&HeaderMap::new());
        assert_eq!(code(format), ErrorCode::InvalidInput);
    }

    #[test]
    fn a_moderations_body_classifies_its_inputs_on_the_moderation_model_by_default() {
        let request = parse::<ModerationsBody>(br#"{"input":["a","b"]}"#)
            .expect("parses")
            .into_request(&HeaderMap::new())
            .expect("accepted");
        assert_eq!(request.model, crate::models::catalog::MODERATION);
        assert!(matches!(request.input, Input::Classify(ref t) if t.len() == 2));
        let named = parse::<ModerationsBody>(br#"{"input":"a","model":"m"}"#)
            .expect("parses")
            .into_request(&HeaderMap::new())
            .expect("accepted");
        assert_eq!(named.model, "m");
        assert!(parse::<ModerationsBody>(br#"{"input":3}"#).is_err());
    }

    #[test]
    fn a_workers_ai_body_follows_the_task_of_its_model() {
        let run = |json: &str, task| {
            parse::<RunBody>(json.as_bytes())?.into_request("m".into(), task, &HeaderMap::new())
        };
        let (request, shape) =
            run(r#"{"text":["a","b"],"stream":true}"#, Task::TextEmbeddings).expect("embeds");
        assert!(matches!(request.input, Input::Embed(ref t) if t.len() == 2));
        assert_eq!(shape, RunShape::Each, "vectors come whole, one per text");
        let (request, shape) = run(
            r#"{"text":"I love it","stream":true}"#,
            Task::TextClassification,
        )
        .expect("labels");
        assert_eq!(shape, RunShape::One, "labels come whole, for the one text");
        assert!(matches!(request.input, Input::Classify(ref t) if t.len() == 1));
        let (request, shape) =
            run(r#"{"image":[137,80,78,71]}"#, Task::ImageToText).expect("an image");
        assert_eq!(shape, RunShape::One);
        assert!(matches!(request.input, Input::Image(ref b) if b.len() == 4));
        let (_, shape) =
            run(r#"{"prompt":"hi","stream":true}"#, Task::TextGeneration).expect("generates");
        assert_eq!(shape, RunShape::Streamed);
        for (body, task) in [
            (r#"{"prompt":"hi"}"#, Task::TextEmbeddings),
            (r#"{"prompt":"hi"}"#, Task::TextClassification),
            (r#"{"prompt":"hi","messages":[]}"#, Task::TextGeneration),
            (r#"{}"#, Task::TextGeneration),
            (r#"{"text":"a"}"#, Task::ImageClassification),
            (r#"{"image":[256]}"#, Task::ImageClassification),
        ] {
            assert_eq!(code(run(body, task)), ErrorCode::InvalidInput, "{body}");
        }
    }
}
