//! The query strings of `GET /api/inbox`, `GET /api/history` and
//! `GET /api/stream`. Every value is text here: the endpoint reads each as
//! what it stands for, with the documented error when it is not.

use serde::{Deserialize, Serialize};

/// `GET /api/inbox`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct InboxParams {
    pub agent: Option<String>,
    pub unread: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
    pub priority: Option<String>,
}

/// `GET /api/history`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HistoryParams {
    pub agent: Option<String>,
    pub with: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub after: Option<String>,
    pub thread: Option<String>,
}

/// `GET /api/stream`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StreamParams {
    pub agent: Option<String>,
    pub after: Option<String>,
}
