//! A small client for the control plane's HTTP API (`/api/v1/…`), as every client
//! command uses it: where the control plane is, the admin token, and one-line errors.
//!
//! The address comes from `--control` (env `TRELLIS_CONTROL`, default
//! `http://127.0.0.1:7180`); the token from `--token` (env `TRELLIS_TOKEN`), else the
//! `admin-token` file the control plane keeps in its data directory on this machine
//! (`$XDG_DATA_HOME/trellis/admin-token`, else `~/.local/share/trellis/admin-token`),
//! read once when the client is made.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the control plane is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// URL of the control plane's HTTP API.
    #[arg(long, env = "TRELLIS_CONTROL", default_value = "http://127.0.0.1:7180")]
    pub control: String,
    /// Admin token for changes (and for reads from another host). Default: the
    /// admin-token file in the control plane's data directory on this machine.
    #[arg(long, env = "TRELLIS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Why a call to the control plane failed. Each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("--control {url:?} is not a URL the client can use: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the control plane at {url}: {cause}")]
    Unreachable { url: String, cause: String },
    /// The control plane answered with an error; `body` is its JSON answer.
    #[error("{message}")]
    Api {
        status: StatusCode,
        message: String,
        body: Value,
    },
    #[error(
        "the server at {url} answered {status} with something other than JSON; is it the \
         control plane's HTTP API?"
    )]
    NotJson { url: String, status: StatusCode },
}

/// A client for one control plane.
pub struct Client {
    /// The `--control` URL without a trailing `/`.
    base: String,
    token: Option<String>,
    /// Where the token was looked for when none was given, for error hints.
    token_file: Option<PathBuf>,
    http: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client for `args`; reads the token file now if no token was given.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let base = args.control.trim_end_matches('/').to_string();
        let bad = |reason: &str| ClientError::BadUrl {
            url: args.control.clone(),
            reason: reason.to_string(),
        };
        let uri: Uri = base.parse().map_err(|_| bad("expected http://HOST:PORT"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported; use http://HOST:PORT")),
            _ => return Err(bad("expected http://HOST:PORT")),
        }
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(bad("expected http://HOST:PORT"));
        }
        let (token, token_file) = match args.token.clone().filter(|t| !t.is_empty()) {
            Some(token) => (Some(token), None),
            None => {
                let file = default_token_file();
                let token = file.as_ref().and_then(|f| std::fs::read_to_string(f).ok());
                let token = token
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty());
                (token, file)
            }
        };
        let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
        Ok(Self {
            base,
            token,
            token_file,
            http,
        })
    }

    /// `GET path` (`/api/v1/…`), the JSON answer.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::GET, path, None).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: String) -> Result<Value, ClientError> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(Method::DELETE, path, None).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self.request(method, &url, body)?;
        let unreachable = |cause: String| ClientError::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| cause(&e))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| cause(&e))?;
            Ok::<_, String>((status, bytes.to_bytes()))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))?
            .map_err(unreachable)?;
        let Ok(json) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(ClientError::NotJson { url, status });
        };
        if status.is_success() {
            return Ok(json);
        }
        let message = self.failure(status, &json);
        Err(ClientError::Api {
            status,
            message,
            body: json,
        })
    }

    /// `GET path`, calling `line` with each line of the answer as it arrives, for
    /// streams with no end fixed in advance (`trellis tap`).
    pub async fn stream_lines(
        &self,
        path: &str,
        mut line: impl FnMut(&[u8]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let url = format!("{}{path}", self.base);
        let request = self.request(Method::GET, &url, None)?;
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| ClientError::Unreachable {
                url: self.base.clone(),
                cause: format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()),
            })?
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                cause: e.to_string(),
            })?;
        let status = response.status();
        let mut body = response.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            let json: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            anyhow::bail!(self.failure(status, &json));
        }
        let mut pending = Vec::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let text: Vec<u8> = pending.drain(..=end).collect();
                line(&text[..text.len() - 1])?;
            }
        }
        Ok(())
    }

    /// A request to `url`, with the token if there is one and `body` as JSON.
    fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<String>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder().method(method).uri(url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::BadUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })
    }

    /// The one-line message of an error answer, with a hint when a token is missing.
    fn failure(&self, status: StatusCode, json: &Value) -> String {
        let mut message = json["error"]
            .as_str()
            .map_or_else(
                || format!("the control plane answered {status}"),
                str::to_string,
            )
            .replace('\n', " ");
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            message.push_str(&self.token_hint());
        }
        message
    }

    /// What to do when no token was found.
    fn token_hint(&self) -> String {
        match &self.token_file {
            Some(file) => format!(
                "; pass --token or set TRELLIS_TOKEN (no token in {})",
                file.display()
            ),
            None => "; pass --token or set TRELLIS_TOKEN".to_string(),
        }
    }
}

/// The admin-token file of a control plane on this machine with the default data
/// directory: `$XDG_DATA_HOME/trellis/admin-token`, else
/// `$HOME/.local/share/trellis/admin-token`.
fn default_token_file() -> Option<PathBuf> {
    crate::control::default_data_dir().map(|dir| dir.join("admin-token"))
}

/// The most specific causes of a transport error, outermost wrapper left out
/// (`tcp connect error: Connection refused (os error 111)`).
fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        parts.push(e.to_string());
        next = e.source();
    }
    if parts.is_empty() {
        parts.push(error.to_string());
    }
    parts.dedup();
    parts.join(": ")
}

/// `segment` escaped for use as one path segment of a URL.
pub fn segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_path_segments() {
        let cases = [
            ("web", "web"),
            ("a b/c", "a%20b%2Fc"),
            ("-", "-"),
            ("é", "%C3%A9"),
        ];
        for (raw, want) in cases {
            assert_eq!(segment(raw), want);
        }
    }

    #[test]
    fn refuses_unusable_urls() {
        for url in [
            "127.0.0.1:7180",
            "https://h:1",
            "ftp://h",
            "http://h:1/?x=1",
            "::",
        ] {
            let args = ClientArgs {
                control: url.to_string(),
                token: Some("t".into()),
            };
            assert!(
                matches!(Client::new(&args), Err(ClientError::BadUrl { .. })),
                "{url}"
            );
        }
        let args = ClientArgs {
            control: "http://127.0.0.1:7180/".into(),
            token: Some("t".into()),
        };
        assert_eq!(
            Client::new(&args).expect("usable").base,
            "http://127.0.0.1:7180"
        );
    }
}
