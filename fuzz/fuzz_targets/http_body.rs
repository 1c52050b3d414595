//! An HTTP API call, turned into a pipeline request as the routes do (`ganglion::api::bodies`
//! and the header parsing of `ganglion::api`), then checked as the pipeline checks every
//! request. The input is: one byte that picks the route, one byte giving the length of a
//! header block (`name: value` lines: the key and cache headers), the header block, then the
//! JSON body. Nothing may panic, and every refusal is a typed error.
#![no_main]

use ganglion::api::bodies::{
    ChatBody, CompletionBody, EmbeddingsBody, ModerationsBody, RunBody, parse,
};
use ganglion::models::Task;
use ganglion_client::protocol::{ErrorCode, Request, WireError, validate};
use http::{HeaderMap, HeaderName, HeaderValue};

fn headers(block: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in block.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [route, length, rest @ ..] = data else {
        return;
    };
    let (block, body) = rest.split_at(usize::from(*length).min(rest.len()));
    let headers = headers(block);
    let built: Result<Request, WireError> = match route % 7 {
        0 => parse::<ChatBody>(body).and_then(|b| b.into_request(&headers).map(|r| r.0)),
        1 => parse::<CompletionBody>(body).and_then(|b| b.into_request(&headers).map(|r| r.0)),
        2 => parse::<EmbeddingsBody>(body).and_then(|b| b.into_request(&headers).map(|r| r.0)),
        3 => parse::<RunBody>(body)
            .and_then(|b| b.into_request("m".into(), Task::TextGeneration, &headers))
            .map(|r| r.0),
        4 => parse::<RunBody>(body)
            .and_then(|b| b.into_request("m".into(), Task::TextEmbeddings, &headers))
            .map(|r| r.0),
        5 => parse::<RunBody>(body)
            .and_then(|b| b.into_request("m".into(), Task::TextClassification, &headers))
            .map(|r| r.0),
        _ => parse::<ModerationsBody>(body).and_then(|b| b.into_request(&headers)),
    };
    match built {
        Ok(request) => {
            if let Err(e) = validate(&request) {
                let expected = [
                    ErrorCode::InvalidInput,
                    ErrorCode::TooLarge,
                    ErrorCode::Unauthenticated,
                ];
                assert!(expected.contains(&e.code), "{e:?}");
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidInput),
    }
});
