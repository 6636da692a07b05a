//! The time controllers that run on a schedule read: the system clock, or a clock a test
//! moves by hand (so a test of "every hour" takes milliseconds, not hours).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::watch;

/// A source of the current time that can say when it jumps.
#[derive(Clone)]
pub struct Clock(Arc<Inner>);

enum Inner {
    System,
    Manual {
        now: Mutex<DateTime<Utc>>,
        moved: watch::Sender<DateTime<Utc>>,
    },
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Inner::System))
    }

    /// A clock standing at `at` until [`Clock::set`] moves it.
    pub fn manual(at: DateTime<Utc>) -> Clock {
        let (moved, _) = watch::channel(at);
        Clock(Arc::new(Inner::Manual {
            now: Mutex::new(at),
            moved,
        }))
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self.0.as_ref() {
            Inner::System => Utc::now(),
            Inner::Manual { now, .. } => *now.lock(),
        }
    }

    /// Moves a manual clock to `at` (the system clock cannot be moved).
    pub fn set(&self, at: DateTime<Utc>) {
        if let Inner::Manual { now, moved } = self.0.as_ref() {
            *now.lock() = at;
            moved.send_replace(at);
        }
    }

    /// Resolves whenever a manual clock is moved; never for the system clock, whose passing
    /// time controllers wait for with timers.
    pub async fn moved(&self) {
        match self.0.as_ref() {
            Inner::System => std::future::pending().await,
            Inner::Manual { moved, .. } => {
                let mut rx = moved.subscribe();
                let _ = rx.changed().await;
            }
        }
    }
}
