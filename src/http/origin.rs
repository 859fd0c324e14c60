//! Without tokens, a web page in a browser on the agent's host could reach
//! the API through DNS rebinding (a name of the attacker's that resolves to
//! 127.0.0.1). Such a request carries the attacker's name in `Host`, so in
//! open mode only loopback names, IP literals and names configured in
//! `http.hosts` are served.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;

/// Refuses, in open mode, requests addressed to a name this adapter does not
/// answer to.
pub(super) async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let host = request.headers().get(HOST).and_then(|v| v.to_str().ok());
    match host {
        Some(host) if state.is_open() && !answers_to(host, state.hosts()) => ApiError::forbidden(format!(
            "requests addressed to {host:?} are refused while the API has no tokens (against DNS rebinding); \
             add the name to http.hosts"
        ))
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Whether `Host: host` names this adapter: a loopback name, an IP address
/// (rebinding needs a name), or one of `configured`.
fn answers_to(host: &str, configured: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => {
            host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || configured.iter().any(|allowed| allowed.eq_ignore_ascii_case(&name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn loopback_names_addresses_and_configured_names_only() {
        let configured = ["bus.internal".to_owned()];
        for ok in [
            "localhost",
            "localhost:8091",
            "LOCALHOST.",
            "a.localhost:1",
            "127.0.0.1:8091",
            "[::1]:8091",
            "10.0.0.5",
            "bus.internal:8091",
            "Bus.Internal",
        ] {
            assert!(answers_to(ok, &configured), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8091", "localhost.evil.example", "127.0.0.1.nip.io", ""] {
            assert!(!answers_to(bad, &configured), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_host_header_is_judged_without_panic(host in "\\PC{0,64}") {
            let _ = answers_to(&host, &[]);
        }
    }
}
