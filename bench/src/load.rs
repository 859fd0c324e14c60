//! The load generator: open loop at a fixed offered rate, or closed loop
//! with a fixed number of sends in flight.
//!
//! Open loop is what agents do: they send when they have something to say,
//! not when the previous send is done. A closed-loop generator slows down
//! with the system and so never sees the queue it would have built
//! (coordinated omission). Here every send has a scheduled time; it is
//! spawned at that time whatever is still in flight (up to a cap, which
//! only a saturated system reaches), and its lateness (actual start minus
//! schedule) is recorded, so a generator that fell behind shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::target::{Arrivals, Attempt, Target};

/// The sends of one step.
pub struct Run {
    pub attempts: Vec<Attempt>,
    /// When the generator began.
    pub began: Instant,
}

/// `rate` sends per second for `duration`, at most `max_in_flight` at once.
pub async fn open_loop<T: Target>(target: &Arc<T>, rate: f64, duration: Duration, max_in_flight: usize) -> Run {
    let count = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let began = Instant::now();
    let mut sends = JoinSet::new();
    for n in 0..count {
        let scheduled = began + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let target = target.clone();
        sends.spawn(async move {
            let attempt = target.send().await;
            drop(permit);
            Attempt { scheduled: Some(scheduled), ..attempt }
        });
    }
    Run { attempts: sends.join_all().await, began }
}

/// `concurrency` senders, each sending again as soon as answered, for
/// `duration`: the most the path can take.
pub async fn closed_loop<T: Target>(target: &Arc<T>, concurrency: usize, duration: Duration) -> Run {
    let began = Instant::now();
    let deadline = began + duration;
    let mut senders = JoinSet::new();
    for _ in 0..concurrency {
        let target = target.clone();
        senders.spawn(async move {
            let mut attempts = Vec::new();
            while Instant::now() < deadline {
                attempts.push(target.send().await);
            }
            attempts
        });
    }
    Run { attempts: senders.join_all().await.into_iter().flatten().collect(), began }
}

/// Waits until every stored message of `run` has arrived, or `timeout`
/// passes; the arrivals of the stored messages, in `run` order.
pub async fn arrivals<T: Target>(target: &T, run: &Run, timeout: Duration) -> Arrivals {
    let stored: Vec<(usize, u64)> =
        run.attempts.iter().filter_map(|a| a.outcome.as_ref().ok().map(|id| (a.to, *id))).collect();
    let deadline = Instant::now() + timeout;
    // Polling copies everything a gateway recorded, so poll sparingly.
    let mut pause = Duration::from_millis(100);
    loop {
        tokio::time::sleep(pause).await;
        let arrivals = target.arrivals(run.began, &stored);
        if arrivals.at.iter().all(Option::is_some) || Instant::now() >= deadline {
            return arrivals;
        }
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
