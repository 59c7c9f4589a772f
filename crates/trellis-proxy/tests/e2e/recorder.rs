//! A backend for tests that need to see what reached it, or one that answers every
//! request alike (a fixed status, or never).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How a [`Recorder`] answers.
#[derive(Clone, Copy, PartialEq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// Never: the request is held open.
    Hang,
}

/// A backend that records the requests it receives (head, and body unless it hangs)
/// and answers them all alike.
pub struct Recorder {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move { record(req, answer, &seen).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }

    pub fn received(&self) -> Vec<(HeaderMap, Bytes)> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    req: Request<Incoming>,
    answer: Answer,
    seen: &Mutex<Vec<(HeaderMap, Bytes)>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    if answer == Answer::Hang {
        seen.lock()
            .expect("lock")
            .push((parts.headers.clone(), Bytes::new()));
        std::future::pending::<()>().await;
    }
    let body = body.collect().await?.to_bytes();
    seen.lock().expect("lock").push((parts.headers, body));
    let status = match answer {
        Answer::Status(code) => StatusCode::from_u16(code).expect("a status"),
        _ => StatusCode::OK,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(b"from the recorder\n")));
    *resp.status_mut() = status;
    Ok(resp)
}
