//! Exponential back-off with jitter: the one retry policy the watcher, the controller
//! queue and leader election share, a stateful wrapper around `skiff-rules`' policy.

use std::time::Duration;

use skiff_rules::backoff as policy;

/// Exponential back-off: each delay doubles up to `max`, each is drawn at random from
/// the upper half of its step (so many clients retrying at once spread out).
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 200 ms doubling to 30 s.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A back-off from `initial` doubling to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    fn policy(&self) -> policy::Backoff {
        policy::Backoff::exponential(self.initial, self.max)
    }

    /// The ceiling of the `attempt`-th delay (0-based), before jitter.
    pub fn step(&self, attempt: u32) -> Duration {
        self.policy().delay(attempt)
    }

    /// The next delay, with jitter.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        jitter(step)
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A duration drawn from `[d/2, d]`.
pub fn jitter(d: Duration) -> Duration {
    policy::jitter(d, &mut rand::rng())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let ceiling = b.step(i as u32);
            assert!(
                *d <= ceiling && *d >= ceiling / 2,
                "{i}: {d:?} vs {ceiling:?}"
            );
        }
        assert_eq!(b.step(7), Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
