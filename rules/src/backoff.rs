//! Back-off: how long to wait before the next attempt. One pure policy (no clocks, no
//! sleeping): a first delay multiplied by a factor after each failure up to a cap, with
//! optional jitter drawn from a random source the caller passes in.
//!
//! Kubernetes' own back-offs are this policy with their numbers: the crash-loop back-off
//! (10 s doubling to 5 min), the image pull back-off (the same), the Job pod failure back-off
//! (10 s doubling to 6 min), the scheduler's pod back-off (1 s doubling to 10 s).

use std::time::Duration;

use rand::Rng;

/// An exponential back-off policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// What each delay is multiplied by for the next (1: a fixed delay).
    pub factor: u32,
}

impl Backoff {
    /// `initial` doubling up to `max`.
    pub const fn exponential(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            factor: 2,
        }
    }

    /// The same delay every time.
    pub const fn constant(delay: Duration) -> Backoff {
        Backoff {
            initial: delay,
            max: delay,
            factor: 1,
        }
    }

    /// The delay before retry number `attempt` (0-based: 0 is the wait after the first
    /// failure): `initial × factor^attempt`, at most `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.initial.min(self.max);
        for _ in 0..attempt {
            if d >= self.max || self.factor <= 1 {
                break;
            }
            d = d.saturating_mul(self.factor).min(self.max);
        }
        d
    }

    /// The delay that follows `previous` (`None`: the first), as back-offs that remember their
    /// last delay rather than a count compute it: `previous × factor`, kept within
    /// `initial..=max`.
    pub fn after(&self, previous: Option<Duration>) -> Duration {
        match previous {
            None => self.initial.min(self.max),
            Some(d) => d
                .saturating_mul(self.factor)
                .max(self.initial)
                .min(self.max),
        }
    }

    /// [`Backoff::delay`] with jitter (see [`jitter`]).
    pub fn jittered(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        jitter(self.delay(attempt), rng)
    }
}

/// A duration drawn from `[d/2, d]`, so that many clients retrying at once spread out.
pub fn jitter(d: Duration, rng: &mut impl Rng) -> Duration {
    let half = d / 2;
    let span = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::exponential(S, 10 * S);
        let delays: Vec<u64> = (0..6).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.delay(u32::MAX), 10 * S);
        let job = Backoff::exponential(10 * S, 360 * S);
        let delays: Vec<u64> = (0..8).map(|a| job.delay(a).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 360, 360]);
    }

    #[test]
    fn follows_the_previous_delay() {
        let b = Backoff::exponential(10 * S, 300 * S);
        assert_eq!(b.after(None), 10 * S);
        assert_eq!(b.after(Some(10 * S)), 20 * S);
        assert_eq!(b.after(Some(200 * S)), 300 * S);
        assert_eq!(
            b.after(Some(Duration::ZERO)),
            10 * S,
            "never below the first"
        );
        assert_eq!(b.after(Some(Duration::MAX)), 300 * S);
    }

    #[test]
    fn constant_never_grows() {
        let b = Backoff::constant(S / 2);
        assert_eq!(b.delay(0), S / 2);
        assert_eq!(b.delay(100), S / 2);
        assert_eq!(b.after(Some(S / 2)), S / 2);
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut rng = StdRng::seed_from_u64(7);
        let b = Backoff::exponential(Duration::from_millis(100), S);
        for attempt in 0..10 {
            let ceiling = b.delay(attempt);
            let d = b.jittered(attempt, &mut rng);
            assert!(d <= ceiling && d >= ceiling / 2, "{attempt}: {d:?}");
        }
        assert_eq!(jitter(Duration::ZERO, &mut rng), Duration::ZERO);
        assert!(jitter(Duration::MAX, &mut rng) >= Duration::MAX / 2);
    }
}
