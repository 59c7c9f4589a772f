//! Who may call what. The peer address is set on the request in-process: no traffic
//! leaves the loopback interface.

use axum::http::{Method, StatusCode};

use super::{service, Api, Call, LOOPBACK, TOKEN};

const REMOTE: &str = "10.0.0.1:40000";

#[tokio::test]
async fn writes_need_the_token_and_remote_reads_too() {
    let api = Api::new();
    let svc = service("shop", "web", 80);
    let write = |method: Method, path, peer, token| Call {
        method,
        path,
        body: &svc,
        peer,
        token,
    };
    let read = |path, peer, token| Call {
        method: Method::GET,
        path,
        body: "",
        peer,
        token,
    };
    const APPLY: &str = "/api/v1/apply";
    const ONE: &str = "/api/v1/resources/svc/shop/web";
    const LIST: &str = "/api/v1/resources/svc";
    // (call, status, text the error must contain; empty for success)
    let cases = [
        (
            write(Method::POST, APPLY, LOOPBACK, None),
            StatusCode::UNAUTHORIZED,
            "this endpoint needs the admin token: Authorization: Bearer",
        ),
        (
            write(Method::POST, APPLY, LOOPBACK, Some("wrong")),
            StatusCode::FORBIDDEN,
            "the admin token is wrong",
        ),
        (
            write(Method::POST, APPLY, LOOPBACK, Some("")),
            StatusCode::UNAUTHORIZED,
            "needs the admin token",
        ),
        (
            write(Method::POST, APPLY, REMOTE, None),
            StatusCode::UNAUTHORIZED,
            "needs the admin token",
        ),
        (
            write(Method::DELETE, ONE, LOOPBACK, None),
            StatusCode::UNAUTHORIZED,
            "needs the admin token",
        ),
        (
            write(Method::DELETE, ONE, REMOTE, Some("wrong")),
            StatusCode::FORBIDDEN,
            "wrong",
        ),
        (
            read(LIST, REMOTE, None),
            StatusCode::UNAUTHORIZED,
            "reads from other hosts need the admin token",
        ),
        (
            read(ONE, REMOTE, Some("wrong")),
            StatusCode::FORBIDDEN,
            "wrong",
        ),
        (
            read("/api/v1/proxies", REMOTE, None),
            StatusCode::UNAUTHORIZED,
            "need the admin token",
        ),
        (
            read(LIST, "[::ffff:10.0.0.1]:1", None),
            StatusCode::UNAUTHORIZED,
            "need the admin token",
        ),
        (read(LIST, LOOPBACK, None), StatusCode::OK, ""),
        (read(LIST, "[::1]:1", None), StatusCode::OK, ""),
        (read(LIST, "[::ffff:127.0.0.1]:1", None), StatusCode::OK, ""),
        (read(LIST, REMOTE, Some(TOKEN)), StatusCode::OK, ""),
        (read("/api/v1/health", REMOTE, None), StatusCode::OK, ""),
        (
            write(Method::POST, APPLY, REMOTE, Some(TOKEN)),
            StatusCode::OK,
            "",
        ),
        (
            write(Method::DELETE, ONE, LOOPBACK, Some(TOKEN)),
            StatusCode::OK,
            "",
        ),
    ];
    for (i, (call, want, text)) in cases.into_iter().enumerate() {
        let what = format!("case {i}: {} {} from {}", call.method, call.path, call.peer);
        let (status, body) = api.call(call).await;
        assert_eq!(status, want, "{what}: {body}");
        if !text.is_empty() {
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains(text), "{what}: {error}");
        }
    }
    // Only the two authorised writes reached the store: one put, one delete.
    let (_, health) = api.get("/api/v1/health").await;
    assert_eq!(health["revision"], 2);
}
