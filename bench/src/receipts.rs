//! When each stored message, by id, reached the far end: the raw side's
//! consumer and the HTTP floor's endpoint record it here, and the steps
//! read it as they read the gateways' wakes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::target::Arrivals;

#[derive(Clone, Default)]
pub struct Receipts(Arc<Mutex<HashMap<u64, Instant>>>);

impl Receipts {
    pub fn record(&self, id: u64, at: Instant) {
        self.0.lock().expect("receipts lock").insert(id, at);
    }

    /// The receipt of each `(_, id)` in `stored`, and how many arrived since
    /// `since`.
    pub fn arrivals(&self, since: Instant, stored: &[(usize, u64)]) -> Arrivals {
        let receipts = self.0.lock().expect("receipts lock");
        Arrivals {
            at: stored.iter().map(|(_, id)| receipts.get(id).copied()).collect(),
            deliveries: receipts.values().filter(|&&at| at >= since).count(),
        }
    }
}
