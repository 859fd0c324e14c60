//! The adapter at the URL: one request at a time, its answer as JSON or
//! as the exit code that says what went wrong.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::Target;
use super::request::resolve_stdin;
use crate::cli::Exit;
use crate::config::{Config, ConfigError};
use crate::wire::ErrorAnswer;

/// Why no request can be made: the command exits 2.
#[derive(Debug, thiserror::Error)]
pub(super) enum SetupError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot build an HTTP client")]
    Http(#[source] reqwest::Error),
}

pub(super) struct Client {
    base: String,
    token: Option<String>,
    /// Print the API's JSON instead of tables.
    pub(super) json: bool,
    http: reqwest::Client,
}

impl Client {
    pub(super) fn new(target: &Target, config: Option<&Path>) -> Result<Client, SetupError> {
        let base = match &target.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let path = config.map_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH), Path::to_owned);
                let listen = if path.exists() {
                    Config::read_file(&path)?.http.listen
                } else {
                    crate::config::HttpConfig::default().listen
                };
                crate::app::base_url(listen)
            }
        };
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build().map_err(SetupError::Http)?;
        Ok(Client { base, token: target.token.clone(), json: target.json, http })
    }

    pub(super) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// One request; the answer's JSON, or how the command should exit.
    pub(super) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, Exit> {
        let mut request = self.request(method, path).timeout(Duration::from_secs(60));
        if let Some(body) = body {
            let body = resolve_stdin(body)?;
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let text = response.text().await.map_err(|err| self.unreachable(&err))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(answer);
        }
        if self.json {
            println!("{answer}");
        }
        let error = serde_json::from_value::<ErrorAnswer>(answer).ok();
        let (code, message) = error.as_ref().map_or(("", "no message"), |e| (e.error.as_str(), e.message.as_str()));
        eprintln!("clawbus: {status} {code}: {message}");
        Err(match status {
            StatusCode::NOT_FOUND => Exit::NotFound,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => Exit::Unavailable,
            _ => Exit::Refused,
        })
    }

    pub(super) fn unreachable(&self, err: &reqwest::Error) -> Exit {
        eprintln!("clawbus: no adapter answered at {} ({err})", self.base);
        Exit::Unreachable
    }
}
