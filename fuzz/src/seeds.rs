//! Writes the seed corpora: real frames of every kind each target reads, so that fuzzing
//! starts from valid encodings and mutates from there. Run from `fuzz/`: `cargo run --bin seeds`.

use std::path::Path;

use ganglion_client::codec::encode;
use ganglion_client::protocol::{
    ApiKey, Attempt, CachePolicy, CacheReport, CacheStatus, ChatMessage, ClientRequest,
    ErrorCode, FinalResponse, FinishReason, HopTime, Input, Output, Parameters,
    Request, ResponseFrame, Role, Route, Timings, Usage, WireError,
};
use ganglion_client::{MAX_FRAME_LEN, PeerStreamKind};

fn frame<T: serde::Serialize>(value: &T) -> Vec<u8> {
    encode(value, MAX_FRAME_LEN).expect("seed encodes")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    std::fs::write(dir.join(name), bytes).expect("seed written");
}

fn main() {
    // Fixed ids, so that the committed seeds do not change from one run to the next.
    let chat = Request {
        id: 1,
        parameters: Parameters {
            max_tokens: Some(64),
            temperature: Some(0.7),
            top_p: Some(0.9),
            seed: Some(42),
            stop: vec!["\nUser:".into()],
        },
        deadline_ms: Some(30_000),
        api_key: Some(ApiKey("gnk1.eyJrIjoiYSJ9.c2ln".into())),
        cache: CachePolicy {
            ttl_secs: Some(600),
            skip: false,
            key: Some("faq-1".into()),
        },
        ..Request::new(
            "@ganglion/smollm2-135m-instruct",
            Input::Chat(vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "What is the capital of France?".into(),
                },
            ]),
        )
    };
    let embed = Request {
        id: 2,
        ..Request::new(
            "@ganglion/all-minilm-l6-v2",
            Input::Embed(vec!["edge".into(), "inference".into()]),
        )
    };
    let requests = [
        ClientRequest::Infer(chat.clone()),
        ClientRequest::Infer(embed),
        ClientRequest::ListModels,
        ClientRequest::Usage {
            api_key: Some(ApiKey("gnk1.a.b".into())),
        },
    ];
    for (i, request) in requests.iter().enumerate() {
        write("client_frame", &format!("request-{i}"), &frame(request));
    }

    let last = FinalResponse {
        id: 7,
        output: Output::Text {
            text: "Paris.".into(),
            finish_reason: FinishReason::Stop,
        },
        usage: Usage {
            input_tokens: 30,
            output_tokens: 3,
            micro_neurons: 3_000_000,
        },
        timings: Timings {
            queue_ms: 0.5,
            first_token_ms: Some(40.0),
            total_ms: 60.0,
        },
        route: Route {
            entry: "edge".into(),
            executed_by: "regional".into(),
            path: vec!["edge".into(), "regional".into()],
            attempts: vec![Attempt {
                node: "busy".into(),
                code: ErrorCode::Overloaded,
                reason: "queue full".into(),
            }],
            per_hop: vec![HopTime {
                node: "edge".into(),
                first_token_ms: Some(40.0),
                total_ms: 60.0,
            }],
        },
        cache: CacheReport {
            status: CacheStatus::Miss,
            shard: Some("regional/1".into()),
            age_ms: None,
        },
    };
    let mut stream = frame(&ResponseFrame::Delta("Par".into()));
    stream.extend(frame(&ResponseFrame::Delta("is.".into())));
    stream.extend(frame(&ResponseFrame::Final(last)));
    write("response_frame", "answer", &stream);
    let error = ResponseFrame::Error(WireError::new(ErrorCode::QuotaExceeded, "over"));
    write("response_frame", "error", &frame(&error));

    let kinds = [
        PeerStreamKind::Cluster,
        PeerStreamKind::Data,
        PeerStreamKind::Advert,
        PeerStreamKind::Quota,
        PeerStreamKind::Cache,
        PeerStreamKind::Report,
    ];
    for (i, kind) in kinds.iter().enumerate() {
        let mut bytes = frame(kind);
        if *kind == PeerStreamKind::Data {
            bytes.extend(frame(&ClientRequest::Infer(chat.clone())));
        }
        write("stream_opening", &format!("kind-{i}"), &bytes);
    }
}
