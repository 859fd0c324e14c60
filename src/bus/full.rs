//! Telling a full store from other refusals.
//!
//! JetStream refuses a write at one of its storage limits with an error of
//! its own, answered at once: the server's `max_file_store` (10023,
//! "insufficient resources"), the account's `max_file` (10002, "resource
//! limits exceeded for account"), a storage reservation that does not fit
//! (10047), or a stream's `max_bytes` (10077, "maximum bytes exceeded").
//! Nothing was stored, and a retry stores nothing either until space is
//! freed or the limit raised, so clients are told that (507) instead of a
//! plain "unavailable".
//!
//! A disk that fills up before any limit is reached is another matter:
//! nats-server then answers no publish at all, which looks like a server
//! that stopped answering (see docs/architecture.md, "When the disk fills
//! up"). That is why every shipped server config sets `max_file_store`
//! below the disk's size.

use std::error::Error;

use async_nats::jetstream::{self, ErrorCode};

/// JetStream's refusal among `err` and its causes, if it says that a
/// storage limit is reached.
pub(super) fn storage_limit<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a jetstream::Error> {
    std::iter::successors(Some(err), |&err| err.source())
        .filter_map(|err| err.downcast_ref::<jetstream::Error>())
        .find(|refusal| is_storage_limit(refusal))
}

fn is_storage_limit(refusal: &jetstream::Error) -> bool {
    match refusal.error_code() {
        ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED => true,
        // "Store failed" covers other limits too (messages, messages per
        // subject): only the ones about bytes mean the store is full.
        ErrorCode::STREAM_STORE_FAILED => {
            let text = refusal.to_string();
            text.contains("bytes exceeded") || text.contains("resources exceeded")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal as the server answers it on the wire.
    fn refusal(code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({"code": 503, "err_code": code, "description": description}))
            .expect("a JetStream error")
    }

    #[test]
    fn storage_limits_are_told_apart_from_other_refusals() {
        for (code, description) in [
            (10023, "insufficient resources"),
            (10002, "resource limits exceeded for account"),
            (10047, "insufficient storage resources available"),
            (10077, "maximum bytes exceeded"),
        ] {
            assert!(is_storage_limit(&refusal(code, description)), "{code} {description}");
        }
        for (code, description) in [
            (10077, "maximum messages exceeded"),
            (10077, "maximum messages per subject exceeded"),
            (10059, "stream not found"),
            (10071, "wrong last sequence: 3"),
        ] {
            assert!(!is_storage_limit(&refusal(code, description)), "{code} {description}");
        }
    }

    #[test]
    fn a_refusal_is_found_among_the_causes() {
        let publish = async_nats::jetstream::context::PublishError::with_source(
            async_nats::jetstream::context::PublishErrorKind::Other,
            refusal(10023, "insufficient resources"),
        );
        let unavailable = super::super::Unavailable::caused("JetStream refused the message", publish);
        let found = storage_limit(&unavailable).expect("found");
        assert_eq!(found.error_code(), ErrorCode::INSUFFICIENT_RESOURCES);
        assert!(storage_limit(&super::super::Unavailable::new("not connected")).is_none());
    }
}
