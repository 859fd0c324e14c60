//! Records one adapter process writes and no other: a host's heartbeat and
//! its wake marks. Each write is a compare-and-set on the revision this
//! process wrote last, so a second writer of the same record (two adapters
//! started with one host name) makes the other fail loudly instead of both
//! overwriting each other in silence.

use std::sync::Mutex;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::{Bus, Unavailable};

/// How a write of an owned record ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owned {
    Written,
    /// Another process wrote the record: it is no longer this one's.
    Lost,
}

impl Bus {
    /// Writes `value` at `key` over `revision`, the revision this process
    /// last wrote there (`None`: the key is expected not to exist), and
    /// keeps the new revision in it. A conflicting value that `ours`
    /// recognizes (a write whose answer was lost) or a deleted key is
    /// written over; one that `ours` does not is another writer's: `Lost`.
    pub(crate) async fn kv_write_owned(
        &self,
        key: &str,
        value: Bytes,
        revision: &Mutex<Option<u64>>,
        ours: impl Fn(&[u8]) -> bool,
    ) -> Result<Owned, Unavailable> {
        self.ensure_connected()?;
        loop {
            let last = *revision.lock().expect("revision lock");
            let written = match last {
                Some(last) => match self.kv.update(key, value.clone(), last).await {
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                    other => Some(other.map_err(|err| Unavailable::caused("cannot write a record", err))?),
                },
                None => match self.kv.create(key, value.clone()).await {
                    Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => None,
                    other => Some(other.map_err(|err| Unavailable::caused("cannot create a record", err))?),
                },
            };
            if let Some(written) = written {
                *revision.lock().expect("revision lock") = Some(written);
                return Ok(Owned::Written);
            }
            let entry = self.kv.entry(key).await.map_err(|err| Unavailable::caused("cannot read a record", err))?;
            match entry.filter(|entry| entry.operation == kv::Operation::Put) {
                None => *revision.lock().expect("revision lock") = None,
                Some(entry) if ours(&entry.value) => *revision.lock().expect("revision lock") = Some(entry.revision),
                Some(_) => return Ok(Owned::Lost),
            }
        }
    }
}
