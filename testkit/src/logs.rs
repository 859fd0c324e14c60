//! The log of in-process adapters: one buffer per test process, printed
//! when a test fails, searchable by tests that expect a line. cargo nextest
//! runs each test in a process of its own, so the buffer is that test's;
//! under `cargo test` every test of the binary (all of `tests/it/`) shares
//! it.

use std::io::Write;
use std::sync::{Mutex, Once};

static LOG: Mutex<String> = Mutex::new(String::new());

/// Sends this process's tracing output into the buffer, once.
pub(crate) fn capture() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let filter = std::env::var("CLAWBUS_TEST_LOG").unwrap_or_else(|_| "info,async_nats=warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(|| Buffer)
            .try_init();
    });
}

/// Everything captured so far.
pub(crate) fn captured() -> String {
    LOG.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

struct Buffer;

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap_or_else(|e| e.into_inner()).push_str(&String::from_utf8_lossy(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
