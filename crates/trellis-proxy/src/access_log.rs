//! Access logs: one line per answered request, JSON or text, to standard output or a
//! file. Off unless configured.
//!
//! A request never waits for the log: its line goes into a bounded queue that one
//! writer thread drains, and a line that finds the queue full is dropped and counted
//! (`trellis_access_log_dropped_total`), so a slow disk or a blocked pipe costs log
//! lines, not latency.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogOutput};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 4096;

/// One answered request, as its log line tells it.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// When the response ended, RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub direction: &'a str,
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/2`…, as the client spoke it.
    pub protocol: &'a str,
    pub status: u16,
    /// A gRPC response's `grpc-status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// From receiving the request to the end of its response, in milliseconds.
    pub duration_ms: f64,
    /// Bytes of the response body sent to the client.
    pub response_bytes: u64,
    pub listener: &'a str,
    pub route: &'a str,
    pub backend: &'a str,
    /// The caller's SPIFFE ID on an inbound mTLS request.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub peer_identity: &'a str,
    /// Whether the client connection was mutual TLS.
    pub tls: bool,
    /// Why the proxy answered itself, if it did.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub error: &'a str,
    /// The request's trace, when the proxy traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// The access logger in force, swapped whole when a reload changes `accessLog:`.
#[derive(Debug, Default)]
pub struct AccessLogs {
    current: ArcSwapOption<AccessLogger>,
}

/// Formats lines and hands them to its writer thread; the thread ends, flushing, when
/// the logger is replaced and its last line written.
#[derive(Debug)]
pub struct AccessLogger {
    config: AccessLogConfig,
    lines: SyncSender<String>,
    /// Lines lost to a full queue or a failed write.
    dropped: Counter,
}

impl AccessLogs {
    /// Applies a configuration: a new writer when it changed, none when unset. A file
    /// that cannot be opened is reported and leaves logging off; the rest of the
    /// configuration still applies. Lost lines are counted in `dropped`.
    pub fn configure(&self, config: Option<&AccessLogConfig>, dropped: &Counter) {
        let current = self.current.load();
        if current.as_ref().map(|l| &l.config) == config {
            return;
        }
        let next = match config {
            None => None,
            Some(config) => match AccessLogger::start(config.clone(), dropped.clone()) {
                Ok(logger) => Some(Arc::new(logger)),
                Err(error) => {
                    tracing::error!(output = %config.output, %error, "access log cannot be written; requests are not logged");
                    None
                }
            },
        };
        self.current.store(next);
    }

    pub fn current(&self) -> Option<Arc<AccessLogger>> {
        self.current.load_full()
    }
}

impl AccessLogger {
    fn start(config: AccessLogConfig, dropped: Counter) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match &config.output {
            AccessLogOutput::Stdout => Box::new(std::io::stdout()),
            AccessLogOutput::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        let (lines, rx) = sync_channel(QUEUE);
        let lost = dropped.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&rx, out, &lost))?;
        Ok(Self {
            config,
            lines,
            dropped,
        })
    }

    /// Queues the entry's line; drops and counts it when the queue is full.
    pub fn log(&self, entry: &Entry<'_>) {
        let line = match self.config.format {
            AccessLogFormat::Json => match serde_json::to_string(entry) {
                Ok(line) => line,
                Err(_) => return,
            },
            AccessLogFormat::Text => text_line(entry),
        };
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty,
/// so lines reach the file promptly without a system call per line under load.
fn write_lines(rx: &Receiver<String>, out: Box<dyn Write + Send>, dropped: &Counter) {
    let mut out = BufWriter::new(out);
    let mut failed = false;
    while let Ok(line) = rx.recv() {
        let mut batch = vec![line];
        batch.extend(rx.try_iter());
        for line in &batch {
            let written = out
                .write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"));
            if let Err(error) = written {
                dropped.inc();
                if !failed {
                    tracing::error!(%error, "access log write failed; lines are being lost");
                    failed = true;
                }
            }
        }
        if out.flush().is_err() {
            dropped.inc();
        }
    }
}

/// `TIME DIRECTION "METHOD AUTHORITY PATH PROTOCOL" STATUS GRPC BYTES DURATION key=value…`
fn text_line(e: &Entry<'_>) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let grpc = e
        .grpc_status
        .map_or_else(|| "-".to_string(), |s| s.to_string());
    format!(
        "{} {} \"{} {}{} {}\" {} {} {}B {:.3}ms listener={} route={} backend={} peer={} tls={} error={} trace={}",
        e.time,
        e.direction,
        e.method,
        e.authority,
        e.path,
        e.protocol,
        e.status,
        grpc,
        e.response_bytes,
        e.duration_ms,
        dash(e.listener),
        dash(e.route),
        dash(e.backend),
        dash(e.peer_identity),
        e.tls,
        // Errors are phrases ("connect timeout"); quoted so the line still splits on
        // spaces.
        if e.error.is_empty() {
            "-".to_string()
        } else {
            format!("{:?}", e.error)
        },
        e.trace_id.as_deref().unwrap_or("-"),
    )
}

/// The time an entry is stamped with.
pub fn now() -> String {
    trellis_api::meta::rfc3339_millis(SystemTime::now())
}

/// Milliseconds, with microsecond precision.
pub fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: "2026-11-23T08:30:00.123Z".into(),
            direction: "inbound",
            method: "GET",
            authority: "books",
            path: "/books/1",
            protocol: "HTTP/1.1",
            status: 503,
            grpc_status: None,
            duration_ms: 1.5,
            response_bytes: 12,
            listener: "inbound",
            route: "0",
            backend: "local-app",
            peer_identity: "spiffe://trellis.local/ns/default/sa/web",
            tls: true,
            error: "connect timeout",
            trace_id: None,
        }
    }

    #[test]
    fn json_lines_hold_every_field_and_skip_empty_ones() {
        let line = serde_json::to_string(&entry()).expect("json");
        let value: serde_json::Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(value["status"], 503);
        assert_eq!(value["error"], "connect timeout");
        assert_eq!(
            value["peer_identity"],
            "spiffe://trellis.local/ns/default/sa/web"
        );
        assert!(value.get("grpc_status").is_none());
        assert!(value.get("trace_id").is_none());
    }

    #[test]
    fn text_lines_read_left_to_right() {
        assert_eq!(
            text_line(&entry()),
            "2026-11-23T08:30:00.123Z inbound \"GET books/books/1 HTTP/1.1\" 503 - 12B 1.500ms \
             listener=inbound route=0 backend=local-app \
             peer=spiffe://trellis.local/ns/default/sa/web tls=true \
             error=\"connect timeout\" trace=-"
        );
    }

    #[test]
    fn lines_reach_the_file_and_a_bad_path_leaves_logging_off() {
        let dir = std::env::temp_dir().join(format!("trellis-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("access.log");
        let logs = AccessLogs::default();
        let dropped = Counter::default();
        let config = AccessLogConfig {
            format: AccessLogFormat::Json,
            output: AccessLogOutput::File(path.clone()),
        };
        logs.configure(Some(&config), &dropped);
        let logger = logs.current().expect("logging");
        logger.log(&entry());
        // Replacing the logger ends its thread, which flushes.
        logs.configure(None, &dropped);
        drop(logger);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.lines().count() == 1 {
                assert!(text.contains("\"path\":\"/books/1\""), "{text}");
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no line in {text:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let missing = AccessLogConfig {
            format: AccessLogFormat::Text,
            output: AccessLogOutput::File(dir.join("no-such-dir/access.log")),
        };
        logs.configure(Some(&missing), &dropped);
        assert!(logs.current().is_none());
        std::fs::remove_dir_all(&dir).ok();
    }
}
