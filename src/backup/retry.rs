//! Backoff between attempts (section 8): exponential from 100 ms, factor 2,
//! capped at 10 s, with full jitter, within a wall-clock deadline. backon gives the
//! capped exponential; the full jitter (a uniform draw between zero and the delay)
//! is drawn here, and the deadline is wall time, not a sum of sleeps.

use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_FACTOR: f32 = 2.0;
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Retry {
    deadline: Instant,
    delays: ExponentialBackoff,
    rng: fastrand::Rng,
}

impl Retry {
    pub fn new(deadline: Instant) -> Retry {
        Retry {
            deadline,
            delays: ExponentialBuilder::default()
                .with_min_delay(BACKOFF_MIN)
                .with_factor(BACKOFF_FACTOR)
                .with_max_delay(BACKOFF_MAX)
                .without_max_times()
                .build(),
            rng: fastrand::Rng::new(),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What is left of the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The next pause, or `None` when the deadline has passed.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let remaining = self.remaining();
        if remaining.is_zero() {
            return None;
        }
        let envelope = self.delays.next().unwrap_or(BACKOFF_MAX);
        Some(envelope.mul_f64(self.rng.f64()).min(remaining))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_within_their_envelope_and_stop_at_the_deadline() {
        let mut r = Retry::new(Instant::now() + Duration::from_secs(3600));
        let mut envelope = BACKOFF_MIN;
        for _ in 0..10 {
            let p = r.next_pause().unwrap();
            assert!(p <= envelope, "{p:?} > {envelope:?}");
            envelope = (envelope * 2).min(BACKOFF_MAX);
        }
        let mut past = Retry::new(Instant::now());
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(past.next_pause(), None);
    }
}
