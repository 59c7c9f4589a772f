//! The echo application of the Gateway API's mesh (GAMMA) conformance cases, which
//! `tests/gamma.rs` runs on the node agent: [`EchoServer`] is the backend image (it
//! answers every request with what it received — method, URL, `Host`, headers — and
//! the name of the Pod that answered), and [`EchoCall`] the client run inside a Pod to
//! make requests and print the answers. Both speak in `Key=Value` lines, the fields
//! those cases check, which [`parse_answers`] reads back.
//!
//! The client prints, for each response, `StatusCode=N`, one `ResponseHeader=name:value`
//! per response header, then the server's lines (`Hostname=`, `Method=`, `URL=`,
//! `Host=`, `Proto=`, one `RequestHeader=name:value` per request header), then an empty
//! line. A request that fails prints `Error=…` in place of its status.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::grpc::{GrpcClient, GrpcServer};
use crate::http::HttpClient;
use crate::shutdown::{self, Shutdown, Trigger};

/// What an echo Pod serves: its name, and its HTTP and gRPC ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoOptions {
    /// The Pod's name, as every answer names it (`Hostname=`).
    pub name: String,
    /// Ports answering HTTP/1.1 and HTTP/2 (h2c).
    pub http: Vec<u16>,
    /// Ports serving the test kit's gRPC `Echo` service, whose replies carry the name.
    pub grpc: Vec<u16>,
}

impl EchoOptions {
    /// Reads the arguments the conformance manifests give their echo image:
    /// `--port=N` (HTTP), `--grpc=N`, `--tcp=N`, `--tls=N` (one of the ports speaks
    /// TLS), `--crt=FILE`, `--key=FILE`. TLS and raw TCP ports are not served: no case
    /// of the mesh profiles calls them.
    pub fn from_args(name: &str, args: &[String]) -> Result<Self, String> {
        let mut options = EchoOptions {
            name: name.to_string(),
            http: Vec::new(),
            grpc: Vec::new(),
        };
        let mut tls = Vec::new();
        for arg in args {
            let (flag, value) = arg
                .split_once('=')
                .ok_or_else(|| format!("echo: expected --flag=value, got {arg:?}"))?;
            let port = || {
                value
                    .parse::<u16>()
                    .map_err(|_| format!("echo: {flag} wants a port, got {value:?}"))
            };
            match flag {
                "--port" => options.http.push(port()?),
                "--grpc" => options.grpc.push(port()?),
                "--tls" => tls.push(port()?),
                "--tcp" => {
                    port()?;
                }
                "--crt" | "--key" => {}
                _ => return Err(format!("echo: unknown flag {flag}")),
            }
        }
        options.http.retain(|p| !tls.contains(p));
        Ok(options)
    }
}

/// The echo backend on every port of its [`EchoOptions`], on all addresses; stopped
/// when dropped.
#[derive(Debug)]
pub struct EchoServer {
    http: Vec<SocketAddr>,
    grpc: Vec<GrpcServer>,
    _trigger: Trigger,
}

impl EchoServer {
    /// Binds every port and starts answering.
    pub async fn start(options: &EchoOptions) -> io::Result<Self> {
        let (trigger, shutdown) = shutdown::channel();
        let mut http = Vec::new();
        for port in &options.http {
            let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, *port)).await?;
            http.push(listener.local_addr()?);
            shutdown.spawn(accept_loop(
                listener,
                options.name.clone(),
                shutdown.clone(),
            ));
        }
        let mut grpc = Vec::new();
        for port in &options.grpc {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
            grpc.push(GrpcServer::start_on(addr, &options.name).await?);
        }
        Ok(Self {
            http,
            grpc,
            _trigger: trigger,
        })
    }

    /// The addresses the HTTP ports are bound to (port 0 in the options takes a
    /// free one).
    pub fn http_addrs(&self) -> &[SocketAddr] {
        &self.http
    }

    /// The addresses the gRPC ports are bound to.
    pub fn grpc_addrs(&self) -> Vec<SocketAddr> {
        self.grpc.iter().map(GrpcServer::addr).collect()
    }
}

async fn accept_loop(listener: TcpListener, name: String, shutdown: Shutdown) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let body = describe(&name, &req);
            async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
        });
        shutdown.spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The echo server's answer to `req`: who answered, and the request as it arrived.
pub fn describe<B>(name: &str, req: &Request<B>) -> String {
    let host = req
        .headers()
        .get(http::header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let url = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let mut out = format!(
        "Hostname={name}\nMethod={}\nURL={url}\nHost={host}\nProto={:?}\n",
        req.method(),
        req.version()
    );
    for (header, value) in req.headers() {
        out.push_str(&format!(
            "RequestHeader={header}:{}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    out
}

/// One request the client makes, `count` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoCall {
    /// `http://ADDRESS:PORT/PATH?QUERY`: the address is the one connected to; the
    /// `Host` header, if any, is among `headers`.
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub count: usize,
    /// Calls the gRPC `Echo` service's `Unary` at the URL's address instead.
    pub grpc: bool,
}

impl EchoCall {
    /// A single `GET url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            method: "GET".to_string(),
            headers: Vec::new(),
            count: 1,
            grpc: false,
        }
    }

    /// The client's command line for this call (read by [`EchoCall::from_args`]).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![self.url.clone(), format!("--method={}", self.method)];
        for (name, value) in &self.headers {
            args.push("-H".to_string());
            args.push(format!("{name}:{value}"));
        }
        args.push(format!("--count={}", self.count));
        if self.grpc {
            args.push("--grpc".to_string());
        }
        args
    }

    /// Reads a client command line: `URL [--method=M] [-H name:value]… [--count=N]
    /// [--grpc]`.
    pub fn from_args(args: &[String]) -> Result<Self, String> {
        let mut args = args.iter();
        let url = args.next().ok_or("echo client: no URL")?;
        let mut call = EchoCall::get(url.clone());
        while let Some(arg) = args.next() {
            if let Some(method) = arg.strip_prefix("--method=") {
                call.method = method.to_string();
            } else if let Some(count) = arg.strip_prefix("--count=") {
                call.count = count
                    .parse()
                    .map_err(|_| format!("echo client: bad count {count:?}"))?;
            } else if arg == "--grpc" {
                call.grpc = true;
            } else if arg == "-H" {
                let header = args.next().ok_or("echo client: -H wants name:value")?;
                let (name, value) = header
                    .split_once(':')
                    .ok_or_else(|| format!("echo client: bad header {header:?}"))?;
                call.headers.push((name.to_string(), value.to_string()));
            } else {
                return Err(format!("echo client: unknown argument {arg:?}"));
            }
        }
        Ok(call)
    }

    /// Makes the calls one after the other and returns what the client prints.
    pub async fn run(&self) -> String {
        let mut out = String::new();
        if self.grpc {
            let connected = match self.url.trim_start_matches("http://").parse() {
                Ok(addr) => GrpcClient::connect(addr).await.map_err(|e| e.to_string()),
                Err(e) => Err(format!("bad gRPC address {:?}: {e}", self.url)),
            };
            for _ in 0..self.count {
                match &connected {
                    Ok(client) => match client.clone().unary("conformance").await {
                        Ok(reply) => out
                            .push_str(&format!("StatusCode=200\nHostname={}\n\n", reply.served_by)),
                        Err(status) => out.push_str(&format!("Error={status}\n\n")),
                    },
                    Err(e) => out.push_str(&format!("Error={e}\n\n")),
                }
            }
            return out;
        }
        let client = HttpClient::http1();
        for _ in 0..self.count {
            match self.request() {
                Ok(req) => match client.send(req).await {
                    Ok(rsp) => {
                        out.push_str(&format!("StatusCode={}\n", rsp.status.as_u16()));
                        for (name, value) in &rsp.headers {
                            out.push_str(&format!(
                                "ResponseHeader={name}:{}\n",
                                String::from_utf8_lossy(value.as_bytes())
                            ));
                        }
                        // An answer is its lines up to an empty one.
                        for line in rsp.text().lines().filter(|l| !l.trim().is_empty()) {
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                    Err(e) => out.push_str(&format!("Error={e}\n")),
                },
                Err(e) => out.push_str(&format!("Error={e}\n")),
            }
            out.push('\n');
        }
        out
    }

    fn request(&self) -> Result<Request<Full<Bytes>>, String> {
        let method = Method::from_bytes(self.method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = Request::builder().method(method).uri(&self.url);
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            req = req.header(name, value);
        }
        req.body(Full::default()).map_err(|e| e.to_string())
    }
}

/// One answer the client printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status (200 for a gRPC OK), or `None` with `error` set.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The Pod that answered (empty for an answer from a proxy, not the echo server).
    pub hostname: String,
    pub method: String,
    /// The path and query the backend received.
    pub url: String,
    pub host: String,
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
}

impl Answer {
    /// The values of a request header as the backend received it (any case), joined
    /// with `,`, or `None` if it was absent.
    pub fn request_header(&self, name: &str) -> Option<String> {
        joined(&self.request_headers, name)
    }

    /// The values of a response header (any case), joined with `,`.
    pub fn response_header(&self, name: &str) -> Option<String> {
        joined(&self.response_headers, name)
    }
}

fn joined(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Reads back what the client printed: one [`Answer`] per response.
pub fn parse_answers(output: &str) -> Vec<Answer> {
    let mut answers = Vec::new();
    for section in output.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut answer = Answer::default();
        for line in section.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let header = || {
                value
                    .split_once(':')
                    .map(|(n, v)| (n.to_string(), v.to_string()))
            };
            match key {
                "StatusCode" => answer.status = value.parse().ok(),
                "Error" => answer.error = Some(value.to_string()),
                "Hostname" => answer.hostname = value.to_string(),
                "Method" => answer.method = value.to_string(),
                "URL" => answer.url = value.to_string(),
                "Host" => answer.host = value.to_string(),
                "RequestHeader" => answer.request_headers.extend(header()),
                "ResponseHeader" => answer.response_headers.extend(header()),
                _ => {}
            }
        }
        answers.push(answer);
    }
    answers
}

#[cfg(test)]
mod tests;
