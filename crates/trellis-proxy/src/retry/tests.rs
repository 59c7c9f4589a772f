use std::sync::{Arc, Mutex};

use http_body_util::{Full, StreamBody};

use super::*;
use crate::config::Duration as ConfigDuration;

fn policy(attempts: u32, codes: &[u16]) -> RetryPolicy {
    RetryPolicy::build(&RetryConfig {
        attempts,
        codes: codes.to_vec(),
        backoff: ConfigDuration::from_millis(10),
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
        |s: &StatusCode| *s,
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
        |s: &StatusCode| *s,
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
