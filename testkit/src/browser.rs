//! A real headless Chromium, driven through chromedriver's WebDriver HTTP
//! API (W3C): navigate, run scripts, find and click elements, type, take
//! screenshots. For the console's browser test; no crates beyond reqwest.
//!
//! Chromium comes from `$CHROMIUM` (default `/usr/bin/chromium`, else
//! `chromium` on `PATH`), chromedriver from `$CHROMEDRIVER` (else `PATH`).
//! `scripts/ensure-chromium.sh` installs both. The session is closed and
//! chromedriver stopped when the [`Browser`] is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_for`] polls.
pub const WAIT: Duration = Duration::from_secs(30);

/// An element of the page (a WebDriver element reference).
#[derive(Clone, Debug)]
pub struct Element(String);

/// A WebDriver error answer.
#[derive(Clone, Debug)]
pub struct WebDriverError {
    pub status: u16,
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first_line = self.message.lines().next().unwrap_or_default();
        write!(f, "{} ({}): {first_line}", self.error, self.status)
    }
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    http: reqwest::Client,
}

/// `$var` if set, else the first of `candidates` that exists, else `name` on `PATH`.
fn find_program(var: &str, candidates: &[&str], name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(path.into());
    }
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|path| path.is_file()) {
        return Some(found);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

const INSTALL_HINT: &str = "run scripts/ensure-chromium.sh (it installs Debian's chromium and chromium-driver), \
                            or set CHROMIUM and CHROMEDRIVER";

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium
    /// session (1400×900). Panics, saying how to install them, when
    /// Chromium or chromedriver is missing.
    pub async fn start() -> Browser {
        let chromium = find_program("CHROMIUM", &["/usr/bin/chromium"], "chromium")
            .filter(|path| path.is_file())
            .unwrap_or_else(|| panic!("Chromium is not installed: {INSTALL_HINT}"));
        let chromedriver = find_program("CHROMEDRIVER", &[], "chromedriver")
            .filter(|path| path.is_file())
            .unwrap_or_else(|| panic!("chromedriver is not installed: {INSTALL_HINT}"));
        let port = crate::free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}; {INSTALL_HINT}", chromedriver.display()));
        let http = crate::http_client(Duration::from_secs(60));
        let mut browser = Browser { driver, port, session: String::new(), http };
        let status = format!("{}/status", browser.base());
        crate::eventually("chromedriver to be ready", Duration::from_secs(30), || async {
            let answer = browser.http.get(&status).send().await.ok()?.json::<Value>().await.ok()?;
            (answer["value"]["ready"] == true).then_some(())
        })
        .await;
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let session = browser
            .request(Method::POST, "/session", Some(capabilities))
            .await
            .unwrap_or_else(|err| panic!("Chromium did not start ({}): {err}", chromium.display()));
        browser.session = session["sessionId"].as_str().expect("a session id").to_owned();
        browser
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// One WebDriver command; `Ok` holds the answer's `value`.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, WebDriverError> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base()));
        if let Some(body) = body {
            request = request.json(&body);
        } else if method == Method::POST {
            request = request.json(&json!({}));
        }
        let response = request.send().await.map_err(|err| WebDriverError {
            status: 0,
            error: "unreachable".into(),
            message: format!("chromedriver did not answer {method} {path}: {err}"),
        })?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        match value.get("error").and_then(Value::as_str) {
            Some(error) if status >= 400 => Err(WebDriverError {
                status,
                error: error.into(),
                message: value["message"].as_str().unwrap_or_default().into(),
            }),
            _ if status >= 400 => {
                Err(WebDriverError { status, error: "unknown error".into(), message: answer.to_string() })
            }
            _ => Ok(value),
        }
    }

    /// A command on this session that must succeed.
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        let path = format!("/session/{}{path}", self.session);
        self.request(method, &path, body).await.unwrap_or_else(|err| panic!("WebDriver {what}: {err}"))
    }

    /// Opens `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.command(Method::POST, "/refresh", None).await;
    }

    /// Runs `script` (a function body: `return …`) in the page with
    /// `arguments`; its result as JSON.
    pub async fn try_execute(&self, script: &str, args: &[Value]) -> Result<Value, WebDriverError> {
        let path = format!("/session/{}/execute/sync", self.session);
        self.request(Method::POST, &path, Some(json!({"script": script, "args": args}))).await
    }

    /// Like [`Browser::try_execute`], panicking on a script error.
    pub async fn execute(&self, script: &str, args: &[Value]) -> Value {
        self.try_execute(script, args).await.unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Runs `script` until it returns something truthy (not null, false, 0
    /// or ""), for up to [`WAIT`]; returns that. On timeout, panics naming
    /// `what`, with the last result or error and the page's console log.
    pub async fn wait_for(&self, what: &str, script: &str, args: &[Value]) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let last = match self.try_execute(script, args).await {
                Ok(value) if truthy(&value) => return value,
                Ok(value) => format!("last result: {value}"),
                Err(err) => format!("last error: {err}"),
            };
            if Instant::now() > deadline {
                let log = self.console_log().await.join("\n");
                panic!(
                    "timed out after {WAIT:?} waiting for {what} ({last})\nscript: {script}\nbrowser console:\n{log}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The first element matching a CSS selector, if any.
    pub async fn try_find(&self, css: &str) -> Result<Option<Element>, WebDriverError> {
        let path = format!("/session/{}/element", self.session);
        let body = json!({"using": "css selector", "value": css});
        match self.request(Method::POST, &path, Some(body)).await {
            Ok(found) => Ok(found[ELEMENT].as_str().map(|id| Element(id.to_owned()))),
            Err(err) if err.error == "no such element" => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The first element matching a CSS selector; panics if there is none.
    pub async fn find(&self, css: &str) -> Element {
        match self.try_find(css).await {
            Ok(Some(element)) => element,
            Ok(None) => panic!("no element matches {css:?}"),
            Err(err) => panic!("finding {css:?}: {err}"),
        }
    }

    /// Clicks the element (scrolled into view, at its centre), as a user would.
    pub async fn click(&self, element: &Element) {
        self.command(Method::POST, &format!("/element/{}/click", element.0), None).await;
    }

    /// Empties an input.
    pub async fn clear(&self, element: &Element) {
        self.command(Method::POST, &format!("/element/{}/clear", element.0), None).await;
    }

    /// Types `text` into the element, key by key.
    pub async fn type_text(&self, element: &Element, text: &str) {
        self.command(Method::POST, &format!("/element/{}/value", element.0), Some(json!({"text": text}))).await;
    }

    /// The element's rendered text.
    pub async fn text(&self, element: &Element) -> String {
        let value = self.command(Method::GET, &format!("/element/{}/text", element.0), None).await;
        value.as_str().unwrap_or_default().to_owned()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let value = self.command(Method::GET, "/screenshot", None).await;
        decode_base64(value.as_str().expect("a base64 screenshot")).expect("a valid base64 screenshot")
    }

    /// What the page logged to its console (and the browser about it: CSP
    /// violations, failed loads) since last asked, as `LEVEL message` lines.
    pub async fn console_log(&self) -> Vec<String> {
        let path = format!("/session/{}/se/log", self.session);
        match self.request(Method::POST, &path, Some(json!({"type": "browser"}))).await {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|entry| {
                    format!("{} {}", entry["level"].as_str().unwrap_or("?"), entry["message"].as_str().unwrap_or(""))
                })
                .collect(),
            Ok(other) => vec![format!("(unexpected log answer: {other})")],
            Err(err) => vec![format!("(no console log: {err})")],
        }
    }
}

/// JavaScript truthiness, as far as JSON can tell.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Standard base64 (with or without padding and line breaks).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session quits Chromium; killing chromedriver alone
        // would leave it running. Drop cannot await, so a plain blocking
        // request does it.
        if !self.session.is_empty()
            && let Ok(mut socket) = TcpStream::connect(("127.0.0.1", self.port))
        {
            let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session, self.port
            );
            if socket.write_all(request.as_bytes()).is_ok() {
                let _ = socket.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("aGk=\n").unwrap(), b"hi");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("a$b").is_none());
    }

    #[test]
    fn truthiness_follows_javascript() {
        assert!(!truthy(&json!(null)) && !truthy(&json!(false)) && !truthy(&json!(0)) && !truthy(&json!("")));
        assert!(truthy(&json!(true)) && truthy(&json!(1)) && truthy(&json!("x")) && truthy(&json!([])));
    }
}
