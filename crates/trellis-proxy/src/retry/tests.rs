use std::sync::{Arc, Mutex};

use http_body_util::{Full, StreamBody};

use super::*;
use crate::config::Duration as ConfigDuration;

fn policy(attempts: u32, codes: &[u16]) -> RetryPolicy {
    RetryPolicy::build(&RetryConfig {
        attempts,
        codes: codes.to_vec(),
        backoff: ConfigDuration::from_millis(10),
        grpc_statuses: Vec::new(),
    })
}

fn request(method: Method, body: &'static str) -> Request<BoxBody> {
    Request::builder()
        .method(method)
        .uri("/x")
        .body(Full::new(Bytes::from(body)).map_err(BoxError::from).boxed())
        .expect("request")
}

/// Runs `send` with attempts that answer from `script` in order, and returns the final
/// outcome, the bodies each attempt saw, and the retry reasons.
async fn run(
    policy: Option<&RetryPolicy>,
    req: Request<BoxBody>,
    script: Vec<Result<StatusCode, ProxyError>>,
) -> (
    Result<StatusCode, ProxyError>,
    Vec<Bytes>,
    Vec<&'static str>,
) {
    let script = Arc::new(Mutex::new(script.into_iter()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reasons = Vec::new();
    let outcome = send(
        policy,
        req,
        |req: Request<BoxBody>| {
            let script = script.clone();
            let seen = seen.clone();
            async move {
                let body = req.into_body().collect().await.expect("body").to_bytes();
                seen.lock().expect("lock").push(body);
                script
                    .lock()
                    .expect("lock")
                    .next()
                    .expect("an attempt more than scripted")
            }
        },
        |s: &StatusCode| Answer::from(*s),
        |reason| reasons.push(reason),
        || true,
    )
    .await;
    let seen = seen.lock().expect("lock").clone();
    (outcome, seen, reasons)
}

#[tokio::test(start_paused = true)]
async fn retries_failures_and_listed_statuses_with_the_same_body() {
    let p = policy(3, &[503]);
    let script = vec![
        Err(ProxyError::BackendTimeout(Duration::from_secs(1))),
        Ok(StatusCode::SERVICE_UNAVAILABLE),
        Ok(StatusCode::OK),
    ];
    let (outcome, bodies, reasons) = run(Some(&p), request(Method::PUT, "book"), script).await;
    assert_eq!(outcome.expect("answered"), StatusCode::OK);
    assert_eq!(bodies, ["book", "book", "book"]);
    assert_eq!(reasons, ["backend timeout", "status"]);
}

#[tokio::test(start_paused = true)]
async fn gives_the_last_outcome_after_the_last_retry() {
    let p = policy(2, &[503]);
    let script = (0..3)
        .map(|_| Ok(StatusCode::SERVICE_UNAVAILABLE))
        .collect();
    let (outcome, bodies, reasons) = run(Some(&p), request(Method::GET, ""), script).await;
    assert_eq!(outcome.expect("answered"), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(bodies.len(), 3, "the first attempt and two retries");
    assert_eq!(reasons.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn other_statuses_and_errors_are_final() {
    let p = policy(3, &[503]);
    let (outcome, bodies, _) = run(
        Some(&p),
        request(Method::GET, ""),
        vec![Ok(StatusCode::BAD_GATEWAY)],
    )
    .await;
    assert_eq!(outcome.expect("answered"), StatusCode::BAD_GATEWAY);
    assert_eq!(bodies.len(), 1, "502 is not listed");
    let no_endpoints = ProxyError::NoEndpoints {
        backend: "b".into(),
    };
    let (outcome, bodies, _) =
        run(Some(&p), request(Method::GET, ""), vec![Err(no_endpoints)]).await;
    assert!(matches!(outcome, Err(ProxyError::NoEndpoints { .. })));
    assert_eq!(
        bodies.len(),
        1,
        "no endpoint now is no endpoint a moment later"
    );
}

#[tokio::test(start_paused = true)]
async fn requests_that_are_not_replay_safe_get_one_attempt() {
    let p = policy(3, &[503]);
    let failing = || vec![Ok(StatusCode::SERVICE_UNAVAILABLE)];
    let (_, bodies, _) = run(Some(&p), request(Method::POST, "order"), failing()).await;
    assert_eq!(bodies, ["order"], "POST is not idempotent");

    let big = "x"
        .repeat(usize::try_from(MAX_REPLAY_BODY).expect("fits") + 1)
        .leak();
    let (_, bodies, _) = run(Some(&p), request(Method::PUT, big), failing()).await;
    assert_eq!(bodies.len(), 1, "a body too large to hold");

    // A streamed body of unknown length.
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![Ok(Frame::data(Bytes::from("a")))];
    let streamed = Request::put("/x")
        .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
        .expect("request");
    let (_, bodies, _) = run(Some(&p), streamed, failing()).await;
    assert_eq!(bodies, ["a"]);

    let (_, bodies, _) = run(None, request(Method::GET, ""), failing()).await;
    assert_eq!(bodies.len(), 1, "no policy");
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let p = policy(3, &[]);
    let mut rng = fastrand::Rng::with_seed(1);
    for _ in 0..100 {
        for (retry, base) in [(1, 10), (2, 20), (3, 40)] {
            let wait = p.backoff(retry, &mut rng);
            let base = Duration::from_millis(base);
            assert!(wait >= base / 2 && wait <= base, "retry {retry}: {wait:?}");
        }
        assert!(p.backoff(30, &mut rng) <= MAX_BACKOFF);
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_route_policy_only_connect_failures_are_retried() {
    let refused = || {
        Err(ProxyError::Endpoint(
            crate::endpoint::EndpointError::Connect {
                addr: ([127, 0, 0, 1], 1).into(),
                source: std::io::ErrorKind::ConnectionRefused.into(),
            },
        ))
    };
    let script = vec![refused(), refused(), Ok(StatusCode::OK)];
    let (outcome, bodies, reasons) =
        run(Some(&CONNECT_FAILURES), request(Method::GET, ""), script).await;
    assert_eq!(outcome.expect("answered"), StatusCode::OK);
    assert_eq!(bodies.len(), 3);
    assert_eq!(reasons, ["connect failed", "connect failed"]);

    // A status or a timeout is the answer: the endpoint was reached.
    let script = vec![Ok(StatusCode::SERVICE_UNAVAILABLE)];
    let (outcome, _, _) = run(Some(&CONNECT_FAILURES), request(Method::GET, ""), script).await;
    assert_eq!(outcome.expect("answered"), StatusCode::SERVICE_UNAVAILABLE);
    let script = vec![Err(ProxyError::BackendTimeout(Duration::from_secs(1)))];
    let (outcome, _, _) = run(Some(&CONNECT_FAILURES), request(Method::GET, ""), script).await;
    assert!(outcome.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_stops_retries() {
    let p = policy(5, &[503]);
    let mut allowed = 1;
    let outcome = send(
        Some(&p),
        request(Method::GET, ""),
        |_req: Request<BoxBody>| async { Ok::<_, ProxyError>(StatusCode::SERVICE_UNAVAILABLE) },
        |s: &StatusCode| Answer::from(*s),
        |_| {},
        || {
            allowed -= 1;
            allowed >= 0
        },
    )
    .await;
    assert_eq!(outcome.expect("answered"), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(allowed, -1, "one retry granted, the next refused");
}

fn grpc_response(frames: Vec<Frame<Bytes>>, status_in_headers: Option<&str>) -> Response<BoxBody> {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = frames.into_iter().map(Ok).collect();
    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/grpc".parse().expect("value"),
    );
    if let Some(status) = status_in_headers {
        resp.headers_mut()
            .insert("grpc-status", status.parse().expect("value"));
    }
    resp
}

fn trailers(status: &str) -> Frame<Bytes> {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", status.parse().expect("value"));
    Frame::trailers(t)
}

#[tokio::test]
async fn a_grpc_status_is_read_from_headers_or_from_trailers_before_any_message() {
    // Trailers-only: in the headers, nothing read.
    let (_, status) = grpc_status_of(grpc_response(vec![], Some("14")), true).await;
    assert_eq!(status, Some(14));

    // Headers, then trailers: the first frame is read and put back.
    let (resp, status) = grpc_status_of(grpc_response(vec![trailers("8")], None), true).await;
    assert_eq!(status, Some(8));
    let collected = resp.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "8");

    // A message first: no status yet, and the message is still there.
    let frames = vec![Frame::data(Bytes::from("m")), trailers("14")];
    let (resp, status) = grpc_status_of(grpc_response(frames, None), true).await;
    assert_eq!(status, None);
    assert_eq!(
        resp.into_body().collect().await.expect("body").to_bytes(),
        "m"
    );

    // Not asked to peek: the body is left alone.
    let (_, status) = grpc_status_of(grpc_response(vec![trailers("14")], None), false).await;
    assert_eq!(status, None);
}

#[tokio::test(start_paused = true)]
async fn grpc_calls_are_replayed_for_listed_statuses_only() {
    let p = RetryPolicy::build(&RetryConfig {
        attempts: 3,
        codes: vec![],
        backoff: ConfigDuration::from_millis(10),
        grpc_statuses: vec![trellis_api::grpc_status::GrpcStatus::Unavailable],
    });
    let call = || {
        Request::post("/pkg.Svc/Method")
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(
                Full::new(Bytes::from("call"))
                    .map_err(BoxError::from)
                    .boxed(),
            )
            .expect("request")
    };
    let answers = [Some(14), Some(14), None];
    let mut n = 0;
    let outcome = send(
        Some(&p),
        call(),
        |req: Request<BoxBody>| {
            let grpc_status = answers[n];
            n += 1;
            async move {
                let body = req.into_body().collect().await.expect("body").to_bytes();
                Ok::<_, ProxyError>((body, grpc_status))
            }
        },
        |(_, grpc_status): &(Bytes, Option<u32>)| Answer {
            status: StatusCode::OK,
            grpc_status: *grpc_status,
        },
        |_| {},
        || true,
    )
    .await;
    let (body, grpc_status) = outcome.expect("answered");
    assert_eq!((n, grpc_status), (3, None), "two UNAVAILABLE, then OK");
    assert_eq!(body, "call", "the last attempt got the whole call");
    assert_eq!(
        p.should_retry(&Ok::<_, ProxyError>(()), |_| Answer {
            status: StatusCode::OK,
            grpc_status: Some(5),
        }),
        None,
        "NOT_FOUND is not listed"
    );
}
