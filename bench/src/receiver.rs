//! A runtime of its own for everything that timestamps arrivals (the
//! stand-in gateways, the raw consumer), so that a backlog of send tasks in
//! the load generator's runtime cannot delay a timestamp and inflate the
//! latency it measures.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

pub struct Receiver {
    runtime: Option<Runtime>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bench-receiver")
            .enable_all()
            .build()
            .expect("receiver runtime");
        Receiver { runtime: Some(runtime) }
    }

    /// Runs `task` on the receiving runtime (anything it spawns stays
    /// there) and returns its output.
    pub async fn run<F>(&self, task: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.as_ref().expect("running").spawn(task).await.expect("receiver task")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
