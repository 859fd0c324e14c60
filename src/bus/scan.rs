//! Ordered reads over the union of several subject filters.
//!
//! Each filter is read by its own cursor in batches; the scan merges the
//! cursors by sequence and drops duplicates (a message can match two filters,
//! e.g. one an agent sent to itself). Reads are lazy: a page of 100 costs
//! about one batch per filter, however long the history behind it.

use std::collections::VecDeque;

use futures_util::future::try_join_all;

use super::direct::{RawMessage, Start};
use super::{Bus, Unavailable};

struct Cursor {
    filter: String,
    next: Start,
    buffer: VecDeque<RawMessage>,
    exhausted: bool,
}

impl Cursor {
    fn needs_fill(&self) -> bool {
        self.buffer.is_empty() && !self.exhausted
    }

    async fn fill(&mut self, bus: &Bus, stream: &str, chunk: usize) -> Result<(), Unavailable> {
        let batch = bus.direct_batch(stream, &self.filter, self.next, chunk).await?;
        match batch.messages.last() {
            Some(last) => self.next = Start::Seq(last.seq.saturating_add(1)),
            None => self.exhausted = true,
        }
        if batch.pending == 0 {
            self.exhausted = true;
        }
        self.buffer.extend(batch.messages);
        Ok(())
    }
}

pub(crate) struct Scan<'a> {
    bus: &'a Bus,
    stream: String,
    cursors: Vec<Cursor>,
    chunk: usize,
}

impl<'a> Scan<'a> {
    /// Reads each filter from its own start.
    pub(super) fn new(bus: &'a Bus, stream: String, filters: Vec<(String, Start)>, chunk: usize) -> Self {
        let cursors = filters
            .into_iter()
            .map(|(filter, next)| Cursor { filter, next, buffer: VecDeque::new(), exhausted: false })
            .collect();
        Scan { bus, stream, cursors, chunk: chunk.clamp(1, 1024) }
    }

    /// The next message in sequence order, or `None` at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<RawMessage>, Unavailable> {
        let (bus, stream, chunk) = (self.bus, self.stream.as_str(), self.chunk);
        try_join_all(self.cursors.iter_mut().filter(|c| c.needs_fill()).map(|c| c.fill(bus, stream, chunk))).await?;
        let Some(seq) = self.cursors.iter().filter_map(|c| c.buffer.front()).map(|m| m.seq).min() else {
            return Ok(None);
        };
        let mut found = None;
        for cursor in &mut self.cursors {
            if cursor.buffer.front().is_some_and(|m| m.seq == seq) {
                found = cursor.buffer.pop_front();
            }
        }
        Ok(found)
    }
}
