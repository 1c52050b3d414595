//! Writes the seed corpora: real inputs of every kind each target reads (frames, adverts, keys,
//! configs, HTTP bodies), so that fuzzing starts from valid encodings and mutates from there.
//! `scripts/fuzz.sh` builds it with the targets and runs it from `fuzz/`.

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

/// Real adverts: a small node's, and one with every list in use.
fn adverts() {
    use ganglion::peer::advert::{AdvertisedModel, MAX_ADVERT_LEN, ModelLoad, PeerAdvert};
    use ganglion::facts::ModelState;
    use ganglion::hardware::Hardware;
    use ganglion::membership::KnownPeer;
    use ganglion::membership::view::Gossip;
    use ganglion::metering::usage::{NodeUsage, Totals};

    let small = PeerAdvert {
        name: "edge".into(),
        addr: "10.0.0.1:7400".parse().expect("addr"),
        membership: Gossip {
            region: "default".into(),
            gateway: true,
            region_size: 1,
            peers: vec![],
            gateways: vec![],
            summary: None,
            elsewhere: vec![],
        },
        models: vec![AdvertisedModel {
            id: "@ganglion/smollm2-135m-instruct".into(),
            state: ModelState::Failed,
        }],
        hardware: Hardware {
            cores: 2,
            memory_total: 1 << 30,
            memory_available: 512 << 20,
            memory_limit: Some(200 << 20),
            accelerators: vec![],
        },
        loads: vec![],
        revoked: Default::default(),
        usage: vec![],
    };
    let busy = PeerAdvert {
        name: "regional".into(),
        addr: "[2001:db8::1]:7400".parse().expect("addr"),
        membership: Gossip {
            region: "eu".into(),
            gateway: true,
            region_size: 3,
            peers: vec![
                KnownPeer {
                    name: "edge".into(),
                    addr: "10.0.0.1:7400".parse().expect("addr"),
                    region: "eu".into(),
                },
                KnownPeer {
                    name: "west".into(),
                    addr: "10.0.0.3:7400".parse().expect("addr"),
                    region: "eu".into(),
                },
            ],
            gateways: vec![ganglion::membership::view::Claim {
                gateway: KnownPeer {
                    name: "us-gw".into(),
                    addr: "10.0.1.1:7400".parse().expect("addr"),
                    region: "us".into(),
                },
                beat: 1_765_000_000,
            }],
            summary: Some(ganglion::membership::regions::RegionSummary {
                region: "eu".into(),
                models: vec![ganglion::membership::regions::RegionModel {
                    hosts: 2,
                    load: ModelLoad {
                        model: "@ganglion/smollm2-135m-instruct".into(),
                        queued: 1,
                        in_flight: 2,
                        concurrency: 4,
                        service_ms: 40.0,
                        warm: Vec::new(),
                    },
                }],
            }),
            elsewhere: vec!["@ganglion/qwen2.5-coder-0.5b-instruct".into()],
        },
        models: vec![
            AdvertisedModel {
                id: "@ganglion/smollm2-135m-instruct".into(),
                state: ModelState::Hosted,
            },
            AdvertisedModel {
                id: "@ganglion/all-minilm-l6-v2".into(),
                state: ModelState::Restarting,
            },
        ],
        hardware: Hardware {
            cores: 16,
            memory_total: 64 << 30,
            memory_available: 48 << 30,
            memory_limit: None,
            accelerators: vec!["cuda:0".into()],
        },
        loads: vec![ModelLoad {
            model: "@ganglion/smollm2-135m-instruct".into(),
            queued: 3,
            in_flight: 8,
            concurrency: 8,
            service_ms: 850.5,
            warm: Vec::new(),
        }],
        revoked: ganglion::credentials::revoked::Summary {
            count: 1,
            digest: [7; 16],
            recent: vec![ganglion::credentials::revoked::KeyId(0x0123_4567_89ab_cdef)],
        },
        usage: vec![NodeUsage {
            day: 20_420,
            account: "acme".into(),
            totals: Totals {
                micro: 1_500_000,
                requests: 3,
                cached: 1,
            },
        }],
    };
    for (name, advert) in [("small", small), ("busy", busy)] {
        let bytes = encode(&advert, MAX_ADVERT_LEN).expect("seed encodes");
        write("advert", name, &bytes);
    }
}

/// Keys: even first byte, the key's text; odd, claims the target signs itself.
fn api_keys() {
    let claims = r#"{"kid":"0123456789abcdef","account":"acme","plan":"free","daily_limit":5000,"expires":null}"#;
    let paid = r#"{"kid":"00000000000000ff","account":"big","plan":"paid","daily_limit":null,"expires":1800000000}"#;
    let text = format!(
        "gnk1.{}.{}",
        base64_url(claims.as_bytes()),
        base64_url(&[0; 64])
    );
    for (name, mode, body) in [
        ("text", 0u8, text.as_str()),
        ("claims", 1, claims),
        ("claims-paid", 1, paid),
    ] {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(body.as_bytes());
        write("api_key", name, &bytes);
    }
}

/// URL-safe base64 without padding, as keys use.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] =
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| n << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Configs: the documented example, and a small one.
fn configs() {
    let example = include_str!("../../docs/config.example.toml");
    write("config", "example", example.as_bytes());
    let small = "[node]\ndata_dir = \"/tmp/ganglion-fuzz\"\n[transport]\n\
                 listen = \"127.0.0.1:7400\"\nseeds = [\"127.0.0.1:7401\"]\n[models]\n\
                 host = [\"@ganglion/all-minilm-l6-v2\"]\nmemory_limit = \"200MiB\"\n\
                 concurrency = 2\ntext_engine = \"llama.cpp\"\n";
    write("config", "small", small.as_bytes());
}

/// HTTP calls: route, header block and body (see `fuzz_targets/http_body.rs`).
fn http_bodies() {
    let bodies: [(&str, u8, &str); 6] = [
        (
            "chat",
            0,
            r#"{"model":"@ganglion/smollm2-135m-instruct","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_tokens":16,"temperature":0.7,"top_p":0.9,"seed":1,"stop":["\n"],"stream":true,"stream_options":{"include_usage":true},"n":1}"#,
        ),
        (
            "completion",
            1,
            r#"{"model":"@ganglion/smollm2-135m-instruct","prompt":["Once"],"max_completion_tokens":8,"stop":"."}"#,
        ),
        (
            "embeddings",
            2,
            r#"{"model":"@ganglion/all-minilm-l6-v2","input":["edge","mesh"],"encoding_format":"base64"}"#,
        ),
        (
            "run-prompt",
            3,
            r#"{"prompt":"What is the capital of France?","max_tokens":16,"stream":true}"#,
        ),
        (
            "run-messages",
            3,
            r#"{"messages":[{"role":"user","content":"Hi"}],"temperature":0.5,"seed":3}"#,
        ),
        ("run-text", 4, r#"{"text":["a","b"]}"#),
    ];
    let headers = "authorization: Bearer gnk1.a.b\nganglion-cache-ttl: 600\n\
                   cf-aig-skip-cache: true\ncf-aig-cache-key: faq-1";
    for (name, route, body) in bodies {
        let block = if route % 2 == 0 { headers } else { "" };
        let mut bytes = vec![route, block.len() as u8];
        bytes.extend_from_slice(block.as_bytes());
        bytes.extend_from_slice(body.as_bytes());
        write("http_body", name, &bytes);
    }
}

fn main() {
    adverts();
    api_keys();
    configs();
    http_bodies();
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
        fallbacks: vec!["@ganglion/qwen2.5-coder-0.5b-instruct".into()],
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
        ClientRequest::Models {
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
            cached_input_tokens: 0,
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
            model: "@ganglion/smollm2-135m-instruct".into(),
            models_tried: vec![ganglion_client::protocol::ModelAttempt {
                model: "@ganglion/qwen2.5-coder-0.5b-instruct".into(),
                code: ErrorCode::Unavailable,
                reason: "no node hosts it".into(),
            }],
            migrations: vec![ganglion_client::protocol::Migration {
                from: "lost".into(),
                at_token: 37,
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
