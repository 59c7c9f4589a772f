//! A headless Chromium driven over the W3C WebDriver protocol, for the dashboard's
//! end-to-end test: Debian's `chromedriver` on a free loopback port, one session, and
//! the few commands the test needs (navigate, run a script, take a screenshot).
//!
//! chromedriver runs in a process group of its own, with the Chromium it starts;
//! dropping the [`Browser`] kills that group, also when a test panics.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use rustix::process::{kill_process_group, Pid, Signal};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use trellis_testkit::http::HttpClient;

/// How long chromedriver may take to answer `/status` after starting.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One browser session; killed with its driver when dropped.
pub struct Browser {
    driver: Child,
    /// `http://127.0.0.1:PORT/session/ID`
    session: String,
    http: HttpClient,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile.
    pub async fn start() -> Browser {
        let port = super::free_port();
        let profile = tempfile::tempdir().expect("a temporary browser profile");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (scripts/setup.sh installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = HttpClient::http1();
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            let ready = http
                .get(&format!("{base}/status"))
                .await
                .ok()
                .and_then(|r| serde_json::from_slice::<Value>(&r.body).ok());
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut browser = Browser {
            driver,
            session: String::new(),
            http,
            _profile: profile,
        };
        // CI runs as root, where Chromium's sandbox cannot start.
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--hide-scrollbars",
                    format!("--user-data-dir={}", browser._profile.path().display()),
                ],
            },
        }}});
        let answer = browser
            .call(Method::POST, &format!("{base}/session"), Some(capabilities))
            .await;
        let id = answer["sessionId"].as_str().expect("a session id");
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// Sends one WebDriver command and returns its `value`; a WebDriver error panics.
    async fn call(&self, method: Method, url: &str, body: Option<Value>) -> Value {
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a WebDriver request");
        let answer = self.http.send(request).await.expect("chromedriver answers");
        let value: Value = serde_json::from_slice(&answer.body).expect("WebDriver JSON");
        assert!(answer.status.is_success(), "WebDriver {url}: {value}");
        value["value"].clone()
    }

    /// Loads `url` and waits for the page (the protocol's default page-load strategy).
    pub async fn goto(&self, url: &str) {
        self.call(
            Method::POST,
            &format!("{}/url", self.session),
            Some(json!({"url": url})),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments[0]` is `arg`) in the page and returns
    /// what it returns.
    pub async fn run(&self, script: &str, arg: Value) -> Value {
        self.call(
            Method::POST,
            &format!("{}/execute/sync", self.session),
            Some(json!({"script": script, "args": [arg]})),
        )
        .await
    }

    /// The text of the first element that matches `selector`, or `None`.
    pub async fn text(&self, selector: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;";
        self.run(script, json!(selector))
            .await
            .as_str()
            .map(str::to_owned)
    }

    /// How many elements match `selector`.
    pub async fn count(&self, selector: &str) -> usize {
        let script = "return document.querySelectorAll(arguments[0]).length;";
        self.run(script, json!(selector))
            .await
            .as_u64()
            .map_or(0, |n| n as usize)
    }

    /// Waits until `script` (a function body) returns a number of at least `least`,
    /// checking every 200 ms; panics with `what` after `within`.
    pub async fn wait_for(&self, script: &str, least: u64, within: Duration, what: &str) {
        let deadline = tokio::time::Instant::now() + within;
        while self.run(script, Value::Null).await.as_u64().unwrap_or(0) < least {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self
            .call(Method::GET, &format!("{}/screenshot", self.session), None)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64 PNG"))
            .expect("a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its group, and Chromium's processes are in it.
        if let Some(pid) = self.driver.id().and_then(|id| Pid::from_raw(id as i32)) {
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}
