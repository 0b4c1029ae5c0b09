//! Table tests: every example of the seed document and every shape of API-FACTS.md.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::body::tests::{brotli, gzip, raw_deflate, zlib};
use super::*;

fn ctx() -> Context {
    Context {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        kind: RequestKind::Submit,
        decode_limit: 1 << 20,
    }
}

fn run(status: u16, body: &str) -> Classification {
    classify(status, &HeaderMap::new(), body.as_bytes(), &ctx())
}

/// (outcome, class, reason) as label strings, "-" where absent.
fn labels(c: &Classification) -> (&'static str, &'static str, &'static str) {
    let (class, reason) = c.error().map(|e| (e.class.as_str(), e.reason.as_str())).unwrap_or(("-", "-"));
    (c.outcome().as_str(), class, reason)
}

#[test]
fn seed_status_code_examples() {
    let table = [
        (400, r#"{"status":"error","message":"prompt is required"}"#, "bad_request", "missing_parameter"),
        (401, r#"{"status":"error","message":"Invalid API key"}"#, "unauthorized", "invalid_api_key"),
        (
            402,
            r#"{"status":"error","message":"Insufficient credits. Please add more credits to continue."}"#,
            "payment_required",
            "insufficient_credits",
        ),
        (
            403,
            r#"{"status":"error","message":"This feature requires a premium subscription"}"#,
            "forbidden",
            "plan_required",
        ),
        (
            429,
            r#"{"status":"error","message":"Rate limit exceeded. Maximum 5 queued requests allowed.","retry_after":30}"#,
            "rate_limited",
            "queue_full",
        ),
        (
            500,
            r#"{"status":"error","message":"Internal server error. Please try again."}"#,
            "server_error",
            "internal_error",
        ),
        (
            503,
            r#"{"status":"error","message":"Service temporarily unavailable. Please try again later."}"#,
            "unavailable",
            "temporarily_unavailable",
        ),
        (404, r#"{"status":"error","message":"Not Found"}"#, "not_found", "other"),
    ];
    for (status, body, class, reason) in table {
        // As documented, with the real HTTP status …
        assert_eq!(labels(&run(status, body)), ("error", class, reason), "{status} {body}");
        // … and as the real API also sends it: HTTP 200 with "status":"error", same class.
        if reason != "other" {
            assert_eq!(labels(&run(200, body)), ("error", class, reason), "200 {body}");
        }
        // … and with the legacy `messege` key.
        let legacy = body.replace("\"message\"", "\"messege\"");
        assert_eq!(labels(&run(status, &legacy)), ("error", class, reason), "legacy {legacy}");
    }
}

#[test]
fn seed_common_scenarios_and_validation_table() {
    let table = [
        ("prompt is required", "missing_parameter", "prompt"),
        ("Model not found: invalid_model_name", "model_not_found", "model_id"),
        ("Unable to fetch image from provided URL", "image_fetch_failed", "init_image"),
        ("prompt must be a string", "invalid_type", "prompt"),
        ("width must be between 256 and 1024", "out_of_range", "width"),
        ("height must be divisible by 8", "not_divisible", "height"),
        ("samples must be between 1 and 4", "out_of_range", "samples"),
        ("guidance_scale must be between 1 and 20", "out_of_range", "guidance_scale"),
    ];
    for (message, reason, field) in table {
        for status in [200, 400] {
            let c = run(status, &format!(r#"{{"status":"error","message":"{message}"}}"#));
            let e = c.error().unwrap();
            assert_eq!((e.class, e.reason.as_str()), (ErrorClass::BadRequest, reason), "{status} {message}");
            assert_eq!(e.fields.iter().map(|f| f.as_str()).collect::<Vec<_>>(), [field], "{message}");
            assert_eq!(c.details().message.as_deref(), Some(message));
        }
    }
}

#[test]
fn malformed_json_is_a_bad_request_without_a_field() {
    let c = run(400, r#"{"status":"error","message":"Malformed JSON in request body"}"#);
    assert_eq!(labels(&c), ("error", "bad_request", "malformed_json"));
    assert!(c.error().unwrap().fields.is_empty());
}

#[test]
fn processing_is_not_an_error() {
    let c = run(
        200,
        r#"{"status":"processing","id":"abc123-def456","eta":30,"message":"Your request is being processed"}"#,
    );
    assert_eq!(labels(&c), ("processing", "-", "-"));
    assert_eq!(c.details().id.as_deref(), Some("abc123-def456"));
    assert_eq!(c.eta(), Some(30.0));

    let facts = r#"{"status":"processing","id":134701497,"eta":2.75,"fetch_result":"https://modelslab.com/api/v6/images/fetch/134701497",
        "future_links":["https://x/1.png"],"output":[],"messege":"Try to fetch request after seconds estimated","tip":"t"}"#;
    let c = run(200, facts);
    assert_eq!(labels(&c), ("processing", "-", "-"));
    assert_eq!(c.details().id.as_deref(), Some("134701497"));
    assert_eq!(c.eta(), Some(2.75));
    assert_eq!(c.fetch_result(), Some("https://modelslab.com/api/v6/images/fetch/134701497"));
    assert_eq!(c.details().api_status, Some(ApiStatus::Processing));

    // eta as a numeric string; the smallest still-processing fetch answer.
    assert_eq!(run(200, r#"{"status":"processing","id":"7","eta":"416.94"}"#).eta(), Some(416.94));
    let small = run(200, r#"{"status":"processing","messege":"try again later.","output":""}"#);
    assert_eq!(labels(&small), ("processing", "-", "-"));
    assert_eq!((small.details().id.clone(), small.eta()), (None, None));
    // nonsense etas are dropped, not guessed
    assert_eq!(run(200, r#"{"status":"processing","eta":"soon"}"#).eta(), None);
    assert_eq!(run(200, r#"{"status":"processing","eta":-3}"#).eta(), None);
}

#[test]
fn success_shapes() {
    let full = r#"{"status":"success","id":91753437,"generationTime":1.06,"output":["https://x/a.png"],"proxy_links":{"0":"https://x"},"meta":{"seed":1}}"#;
    let c = run(200, full);
    assert_eq!(labels(&c), ("success", "-", "-"));
    assert_eq!(c.details().id.as_deref(), Some("91753437"));
    let minimal = run(200, r#"{"status":"success","id":"91753437","output":["https://x/a.png"]}"#);
    assert_eq!((labels(&minimal), minimal.details().id.as_deref()), (("success", "-", "-"), Some("91753437")));
}

#[test]
fn generation_time_and_outputs_are_read_from_answers() {
    let table: &[(&str, Option<f64>, u32)] = &[
        (
            r#"{"status":"success","id":1,"generationTime":1.06,"output":["https://x/a.png"],"proxy_links":["https://p/a"]}"#,
            Some(1.06),
            1,
        ),
        // The same URL twice is one output; links that are not URLs are none.
        (
            r#"{"status":"success","id":1,"generationTime":"2.5","output":["https://x/a.png","https://x/a.png","http://x/b.png","", 3]}"#,
            Some(2.5),
            2,
        ),
        (r#"{"status":"success","output":"https://x/one.mp4"}"#, None, 1),
        // Processing answers: future links are not outputs; an empty output is none.
        (r#"{"status":"processing","id":1,"eta":2,"output":[],"future_links":["https://x/a.png"]}"#, None, 0),
        (r#"{"status":"processing","messege":"try again later.","output":""}"#, None, 0),
        (r#"{"status":"success","id":1,"generationTime":-1,"output":[]}"#, None, 0),
    ];
    for (body, generation, outputs) in table {
        let c = run(200, body);
        assert_eq!((c.details().generation_time, c.details().outputs), (*generation, *outputs), "{body}");
    }
}

#[test]
fn message_object_of_field_errors_is_a_validation_error() {
    let c = run(200, r#"{"status":"error","message":{"init_image":["The init image field is required."]}}"#);
    assert_eq!(labels(&c), ("error", "bad_request", "missing_parameter"));
    assert_eq!(c.error().unwrap().fields, vec![Field::InitImage]);
    assert_eq!(c.details().message.as_deref(), Some("init_image: The init image field is required."));

    let two = run(422, r#"{"status":"error","message":{"width":["The width must be a number."],"colour":"bad"}}"#);
    let e = two.error().unwrap();
    assert_eq!((e.class, e.reason), (ErrorClass::ClientError, Reason::InvalidType));
    assert_eq!(e.fields, vec![Field::Width, Field::Other], "sorted by the allowlist's order");

    // An object whose wording is unknown is still a validation error at HTTP 200.
    let unknown = run(200, r#"{"status":"error","message":{"prompt":["is too spicy"]}}"#);
    assert_eq!(labels(&unknown), ("error", "bad_request", "other"));
}

#[test]
fn failed_and_fetch_errors_are_job_failures() {
    let c = run(200, r#"{"status":"failed","id":5,"message":"Generation failed"}"#);
    assert_eq!(labels(&c), ("error", "job_failed", "other"));
    assert_eq!(c.details().api_status, Some(ApiStatus::Failed));

    let fetch = Context { kind: RequestKind::Fetch, ..ctx() };
    let c = classify(200, &HeaderMap::new(), br#"{"status":"error","message":"Request not found"}"#, &fetch);
    assert_eq!(labels(&c), ("error", "job_failed", "other"));
    // A known wording keeps its class even on a fetch.
    let c = classify(200, &HeaderMap::new(), br#"{"status":"error","message":"Invalid API key"}"#, &fetch);
    assert_eq!(labels(&c), ("error", "unauthorized", "invalid_api_key"));
    // v7 adds a code; it does not change the model.
    let c = run(200, r#"{"status":"error","message":"upstream model crashed","code":"provider_error"}"#);
    assert_eq!(labels(&c), ("error", "unknown", "other"));
}

#[test]
fn missing_or_unknown_status() {
    assert_eq!(labels(&run(200, r#"{"output":["x"]}"#)), ("error", "invalid_response", "other"));
    assert_eq!(labels(&run(200, r#"{"status":"queued"}"#)), ("error", "invalid_response", "other"));
    assert_eq!(labels(&run(200, r#"{"status":42}"#)), ("error", "invalid_response", "other"));
    assert_eq!(labels(&run(500, r#"{"error":"boom"}"#)), ("error", "server_error", "other"));
    assert_eq!(
        labels(&run(429, r#"{"message":"Rate limit exceeded. Maximum 10 queued requests allowed."}"#)),
        ("error", "rate_limited", "queue_full")
    );
    // Status is case-insensitive and trimmed.
    assert_eq!(labels(&run(200, r#"{"status":" Success "}"#)), ("success", "-", "-"));
    // A non-2xx answer is an error whatever its body says.
    assert_eq!(labels(&run(502, r#"{"status":"success"}"#)), ("error", "server_error", "other"));
}

#[test]
fn non_json_bodies() {
    let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    assert_eq!(labels(&run(502, html)), ("error", "server_error", "non_json_body"));
    assert_eq!(labels(&run(503, "Service Unavailable")), ("error", "unavailable", "non_json_body"));
    assert_eq!(labels(&run(200, html)), ("error", "invalid_response", "non_json_body"));
    assert_eq!(labels(&run(200, "")), ("error", "invalid_response", "non_json_body"));
    assert_eq!(labels(&run(204, "")), ("error", "invalid_response", "non_json_body"));
    assert_eq!(labels(&run(200, "[1,2]")), ("error", "invalid_response", "non_json_body"));
    assert_eq!(labels(&run(200, r#"{"status":"succ"#)), ("error", "invalid_response", "non_json_body"));
    assert_eq!(labels(&run(401, "")), ("error", "unauthorized", "non_json_body"));
}

#[test]
fn compressed_bodies_are_decoded() {
    let body = br#"{"status":"error","message":"Insufficient credits. Please add more credits to continue."}"#;
    for (encoding, bytes) in
        [("gzip", gzip(body)), ("deflate", zlib(body)), ("deflate", raw_deflate(body)), ("br", brotli(body))]
    {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        let c = classify(402, &headers, &bytes, &ctx());
        assert_eq!(labels(&c), ("error", "payment_required", "insufficient_credits"), "{encoding}");
    }
    // A lying Content-Encoding makes the body uninspectable, not a panic.
    let mut headers = HeaderMap::new();
    headers.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    assert_eq!(labels(&classify(200, &headers, body, &ctx())), ("error", "invalid_response", "non_json_body"));
    // A body larger than the inspection limit is not parsed.
    let small_limit = Context { decode_limit: 10, ..ctx() };
    let c = classify(200, &HeaderMap::new(), br#"{"status":"success"}"#, &small_limit);
    assert_eq!(labels(&c), ("error", "invalid_response", "non_json_body"));
}

#[test]
fn retry_after_from_body_or_header() {
    let queue = "Rate limit exceeded. Maximum 5 queued requests allowed.";
    let c = run(429, &format!(r#"{{"status":"error","message":"{queue}","retry_after":30}}"#));
    assert_eq!((c.details().retry_after, c.details().queue_limit), (Some(30.0), Some(5)));
    let c = run(429, &format!(r#"{{"status":"error","message":"{queue}","retry_after":"12.5"}}"#));
    assert_eq!(c.details().retry_after, Some(12.5));

    let with_header = |value: &'static str, body: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static(value));
        classify(429, &headers, body.as_bytes(), &ctx()).details().retry_after
    };
    let body = format!(r#"{{"status":"error","message":"{queue}"}}"#);
    assert_eq!(with_header("7", &body), Some(7.0));
    // HTTP-date 90 s after ctx().now (1_700_000_000 = Tue, 14 Nov 2023 22:13:20 GMT).
    assert_eq!(with_header("Tue, 14 Nov 2023 22:14:50 GMT", &body), Some(90.0));
    // A date in the past means: now.
    assert_eq!(with_header("Tue, 14 Nov 2023 22:00:00 GMT", &body), Some(0.0));
    assert_eq!(with_header("whenever", &body), None);
    // The body wins over the header.
    assert_eq!(with_header("7", &format!(r#"{{"status":"error","message":"{queue}","retry_after":30}}"#)), Some(30.0));
    // Non-JSON 429 with a header still yields it.
    assert_eq!(with_header("3", "Too Many Requests"), Some(3.0));
}

#[test]
fn failures_without_an_answer() {
    assert_eq!(labels(&classify_failure(Failure::Timeout)), ("error", "timeout", "other"));
    assert_eq!(labels(&classify_failure(Failure::Transport)), ("error", "transport", "other"));
}

#[test]
fn long_messages_and_ids_are_bounded() {
    let long = "x".repeat(10_000);
    let c = run(500, &format!(r#"{{"status":"error","message":"{long}","id":"{long}"}}"#));
    assert_eq!(c.details().message.as_ref().unwrap().chars().count(), MAX_MESSAGE_CHARS);
    assert_eq!(c.details().id, None);
    assert_eq!(truncate("héllo", 2), "hé");
}

fn arb_headers() -> impl Strategy<Value = HeaderMap> {
    let encodings = prop::sample::select(vec!["gzip", "deflate", "br", "identity", "gzip, br", "x-gzip", "zz"]);
    (prop::option::of(encodings), prop::option::of(".{0,40}")).prop_map(|(enc, retry)| {
        let mut h = HeaderMap::new();
        if let Some(enc) = enc {
            h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static(enc));
        }
        if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r).ok()) {
            h.insert(http::header::RETRY_AFTER, v);
        }
        h
    })
}

/// JSON-ish bodies built from the API's own keys, so that the interesting branches are reached.
fn arb_json_body() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec!["success", "processing", "error", "failed", "queued", ""]);
    let scalar = prop_oneof![
        Just("null".to_owned()),
        any::<f64>().prop_map(|f| if f.is_finite() { f.to_string() } else { "1e309".to_owned() }),
        any::<i64>().prop_map(|i| i.to_string()),
        ".{0,30}".prop_map(|s| Value::String(s).to_string()),
        Just(r#"{"init_image":["The init image field is required."],"x":[1,{}]}"#.to_owned()),
        Just("[\"a\",2]".to_owned()),
    ];
    (
        status,
        prop::collection::vec(
            (
                prop::sample::select(vec!["message", "messege", "id", "eta", "retry_after", "fetch_result", "status"]),
                scalar,
            ),
            0..6,
        ),
    )
        .prop_map(|(status, fields)| {
            let mut s = format!(r#"{{"status":"{status}""#);
            for (k, v) in fields {
                s.push_str(&format!(r#","{k}":{v}"#));
            }
            s.push('}');
            s.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(status in 0u16..1000, headers in arb_headers(), body in prop::collection::vec(any::<u8>(), 0..512), fetch in any::<bool>()) {
        let kind = if fetch { RequestKind::Fetch } else { RequestKind::Submit };
        let c = classify(status, &headers, &body, &Context { kind, ..ctx() });
        // Not 2xx is always an error; a success needs a 2xx.
        prop_assert!((200..300).contains(&status) || c.outcome() == Outcome::Error);
        if let Some(e) = c.error() { prop_assert!(e.fields.len() <= 8); }
    }

    #[test]
    fn never_panics_on_api_shaped_json(status in prop::sample::select(vec![200u16, 400, 401, 429, 500, 503]), headers in arb_headers(), body in arb_json_body()) {
        let c = classify(status, &headers, &body, &ctx());
        prop_assert!(status == 200 || c.outcome() == Outcome::Error);
        if let Some(m) = &c.details().message { prop_assert!(m.chars().count() <= MAX_MESSAGE_CHARS); }
        if let Some(r) = c.details().retry_after { prop_assert!(r.is_finite() && r >= 0.0); }
    }

    #[test]
    fn never_panics_on_any_message(message in ".{0,200}") {
        let _ = recognise(&message);
    }
}

/// An event stream as one body, with its content type.
fn sse(status: u16, body: &str) -> Classification {
    let mut h = HeaderMap::new();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream; charset=utf-8"));
    classify(status, &h, body.as_bytes(), &ctx())
}

const OPENAI_STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"model\":\"llama-3\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
data: [DONE]\n\n";

const ANTHROPIC_STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

fn llm(c: &Classification) -> (Option<u64>, Option<u64>, Vec<&'static str>, Option<String>) {
    let d = c.details().llm.clone().unwrap_or_default();
    (d.input_tokens, d.output_tokens, d.finish_reasons.iter().map(|f| f.as_str()).collect(), d.model)
}

#[test]
fn llm_successes_are_successes_with_their_tokens() {
    let chat = run(
        200,
        r#"{"id":"chatcmpl-9","object":"chat.completion","created":1,"model":"Qwen/Qwen2.5-VL-72B-Instruct-together",
            "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
            "usage":{"prompt_tokens":21,"completion_tokens":5,"total_tokens":26}}"#,
    );
    assert_eq!(labels(&chat), ("success", "-", "-"));
    assert_eq!(llm(&chat), (Some(21), Some(5), vec!["stop"], Some("Qwen/Qwen2.5-VL-72B-Instruct-together".into())));
    assert_eq!(chat.details().id.as_deref(), Some("chatcmpl-9"));

    let message = run(
        200,
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],
            "stop_reason":"max_tokens","usage":{"input_tokens":10,"output_tokens":64}}"#,
    );
    assert_eq!(labels(&message), ("success", "-", "-"));
    assert_eq!(llm(&message), (Some(10), Some(64), vec!["max_tokens"], Some("claude-x".into())));

    for body in [
        r#"{"object":"list","data":[{"id":"m","object":"model","created":1,"owned_by":"modelslab"}]}"#,
        r#"{"data":[{"type":"model","id":"m","display_name":"M"}],"has_more":false,"first_id":"m","last_id":"m"}"#,
        r#"{"input_tokens":14}"#,
    ] {
        let c = run(200, body);
        assert_eq!(labels(&c), ("success", "-", "-"), "{body}");
        assert_eq!(llm(&c).0, None, "no tokens counted: {body}");
    }
    // Not an LLM shape: the media API's rules hold.
    assert_eq!(labels(&run(200, r#"{"object":"thing"}"#)), ("error", "invalid_response", "other"));
}

#[test]
fn llm_error_envelopes_at_any_status() {
    let retry = {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        h
    };
    let none = HeaderMap::new();
    /// (status, headers, body, (outcome, class, reason), fields)
    type Row<'a> = (u16, &'a HeaderMap, &'a str, (&'a str, &'a str, &'a str), &'a [&'a str]);
    let table: &[Row<'_>] = &[
        (
            401,
            &none,
            r#"{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            ("error", "unauthorized", "invalid_api_key"),
            &[],
        ),
        (
            401,
            &none,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            ("error", "unauthorized", "invalid_api_key"),
            &[],
        ),
        (
            200,
            &none,
            r#"{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}"#,
            ("error", "unauthorized", "invalid_api_key"),
            &[],
        ),
        (
            402,
            &none,
            r#"{"error":{"message":"Insufficient credits. Please add more credits.","type":"insufficient_quota","code":"insufficient_quota"}}"#,
            ("error", "payment_required", "insufficient_credits"),
            &[],
        ),
        (
            429,
            &retry,
            r#"{"error":{"message":"Rate limit exceeded: 60 requests per minute","type":"rate_limit_error"}}"#,
            ("error", "rate_limited", "other"),
            &[],
        ),
        (
            200,
            &none,
            r#"{"error":{"message":"Rate limit exceeded. Maximum 5 queued requests allowed.","code":"rate_limit_exceeded"}}"#,
            ("error", "rate_limited", "queue_full"),
            &[],
        ),
        (
            529,
            &none,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ("error", "unavailable", "temporarily_unavailable"),
            &[],
        ),
        (
            200,
            &none,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ("error", "unavailable", "temporarily_unavailable"),
            &[],
        ),
        (
            404,
            &none,
            r#"{"error":{"message":"The model `gpt-9` does not exist","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
            ("error", "not_found", "model_not_found"),
            &["model_id"],
        ),
        (
            400,
            &none,
            r#"{"error":{"message":"max_tokens must be at least 1","type":"invalid_request_error","param":"max_tokens"}}"#,
            ("error", "bad_request", "out_of_range"),
            &["max_tokens"],
        ),
        (
            200,
            &none,
            r#"{"error":{"message":"messages is required","type":"invalid_request_error","param":"messages"}}"#,
            ("error", "bad_request", "missing_parameter"),
            &["messages"],
        ),
        (
            500,
            &none,
            r#"{"error":{"message":"Internal server error","type":"api_error"}}"#,
            ("error", "server_error", "internal_error"),
            &[],
        ),
        (
            200,
            &none,
            r#"{"error":{"message":"something odd","type":"api_error"}}"#,
            ("error", "server_error", "internal_error"),
            &[],
        ),
        (
            403,
            &none,
            r#"{"type":"error","error":{"type":"permission_error","message":"This model requires a premium subscription"}}"#,
            ("error", "forbidden", "plan_required"),
            &[],
        ),
    ];
    for (status, headers, body, want, fields) in table {
        let c = classify(*status, headers, body.as_bytes(), &ctx());
        assert_eq!(labels(&c), *want, "{status} {body}");
        let got: Vec<&str> = c.error().unwrap().fields.iter().map(|f| f.as_str()).collect();
        assert_eq!(got, *fields, "{body}");
    }
    let limited = classify(429, &retry, table[4].2.as_bytes(), &ctx());
    assert_eq!(limited.details().retry_after, Some(7.0));
    assert_eq!(limited.details().message.as_deref(), Some("Rate limit exceeded: 60 requests per minute"));
    // A media error body with a string `error` is not an LLM envelope.
    assert_eq!(labels(&run(500, r#"{"error":"boom"}"#)), ("error", "server_error", "other"));
}

#[test]
fn llm_streams_end_done_fail_or_break_off() {
    let openai = sse(200, OPENAI_STREAM);
    assert_eq!(labels(&openai), ("success", "-", "-"));
    assert_eq!(llm(&openai), (Some(9), Some(2), vec!["length"], Some("llama-3".into())));
    assert_eq!(openai.details().id.as_deref(), Some("chatcmpl-1"));
    let anthropic = sse(200, ANTHROPIC_STREAM);
    assert_eq!(labels(&anthropic), ("success", "-", "-"));
    assert_eq!(llm(&anthropic), (Some(12), Some(15), vec!["end_turn"], Some("claude-x".into())));

    // Cut before the terminator, on a line boundary or in the middle of one.
    let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("data: [DONE]").unwrap()];
    assert_eq!(labels(&sse(200, cut)), ("error", "transport", "stream_interrupted"));
    assert_eq!(labels(&sse(200, &ANTHROPIC_STREAM[..200])), ("error", "transport", "stream_interrupted"));
    assert_eq!(labels(&sse(200, "")), ("error", "transport", "stream_interrupted"));

    // An error event in the middle.
    let failed = format!(
        "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_stop").unwrap()]
    );
    let c = sse(200, &failed);
    assert_eq!(labels(&c), ("error", "unavailable", "temporarily_unavailable"));
    assert_eq!(c.details().message.as_deref(), Some("Overloaded"));
    let openai_error = "data: {\"error\":{\"message\":\"Internal server error\",\"type\":\"api_error\"}}\n\n";
    assert_eq!(labels(&sse(200, openai_error)), ("error", "server_error", "internal_error"));
    // CRLF line ends, and a last event without its blank line.
    let crlf = OPENAI_STREAM.replace('\n', "\r\n");
    assert_eq!(labels(&sse(200, &crlf)), ("success", "-", "-"));
    assert_eq!(labels(&sse(200, OPENAI_STREAM.trim_end())), ("success", "-", "-"));
    // A non-2xx stream answer is read as the error it is.
    assert_eq!(labels(&sse(503, "")), ("error", "unavailable", "non_json_body"));
}

#[test]
fn a_stream_says_when_its_first_content_arrives_whatever_the_chunking() {
    for body in [OPENAI_STREAM, ANTHROPIC_STREAM] {
        let first = body.find("Hello").or_else(|| body.find("\"Hi\"")).unwrap();
        let end_of_event = first + body[first..].find("\n\n").unwrap() + 2;
        for chunk in [1, 7, 64, body.len()] {
            let mut r = stream::Reader::new();
            let mut fed = 0;
            let mut at = None;
            for piece in body.as_bytes().chunks(chunk) {
                fed += piece.len();
                if r.feed(piece) {
                    assert!(at.is_none(), "once");
                    at = Some(fed);
                }
            }
            let at = at.unwrap();
            assert!(
                at >= end_of_event && at < end_of_event + chunk,
                "chunk {chunk}: at {at}, event ends {end_of_event}"
            );
            assert_eq!(labels(&r.finish()), ("success", "-", "-"));
        }
    }
}
