//! The scheduling queue, as kube-scheduler keeps it: an active queue ordered by priority then
//! age, a back-off queue for pods whose last attempt failed (1 s doubling to 10 s), and the
//! unschedulable pods, which go back when the cluster changes in a way that could help (a node
//! added or changed, a pod deleted) and in any case after 5 minutes.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use skiff_rules::Backoff;

/// The first back-off after a failed attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// kube-scheduler's pod back-off: 1 s doubling to 10 s.
pub const BACKOFF: Backoff = Backoff::exponential(INITIAL_BACKOFF, MAX_BACKOFF);
/// How long a pod may wait as unschedulable before it is tried again anyway.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

/// A queued pod's place in the active queue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rank {
    priority: i32,
    /// When the pod was first queued (older first among equal priorities).
    since: Instant,
    key: String,
}

impl Ord for Rank {
    fn cmp(&self, o: &Self) -> Ordering {
        o.priority
            .cmp(&self.priority)
            .then(self.since.cmp(&o.since))
            .then(self.key.cmp(&o.key))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// Where a pod waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Ready to be tried.
    Active,
    /// Waiting out its back-off until the instant.
    Backoff(Instant),
    /// Waiting for a cluster change (or the 5-minute flush), since the instant.
    Unschedulable(Instant),
    /// Handed out to the scheduling loop.
    InFlight,
}

#[derive(Debug, Clone)]
struct Entry {
    rank: Rank,
    attempts: u32,
    place: Place,
}

/// The queue of pods waiting for a node, keyed by `namespace/name`.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    active: BTreeSet<Rank>,
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pending pod, or updates its priority; a pod waiting as unschedulable or in
    /// back-off that changed goes back to the active queue (its change may make it fit).
    pub fn add(&mut self, key: &str, priority: i32, now: Instant) {
        match self.entries.get_mut(key) {
            Some(e) => {
                if e.place == Place::Active {
                    self.active.remove(&e.rank);
                }
                e.rank.priority = priority;
                if e.place != Place::InFlight {
                    e.place = Place::Active;
                    self.active.insert(e.rank.clone());
                }
            }
            None => {
                let rank = Rank {
                    priority,
                    since: now,
                    key: key.to_string(),
                };
                self.active.insert(rank.clone());
                self.entries.insert(
                    key.to_string(),
                    Entry {
                        rank,
                        attempts: 0,
                        place: Place::Active,
                    },
                );
            }
        }
    }

    /// Forgets a pod (deleted, or bound by someone else).
    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.active.remove(&e.rank);
        }
    }

    /// The highest-priority, oldest active pod, now in flight.
    pub fn pop(&mut self) -> Option<String> {
        let rank = self.active.pop_first()?;
        if let Some(e) = self.entries.get_mut(&rank.key) {
            e.place = Place::InFlight;
            e.attempts += 1;
        }
        Some(rank.key)
    }

    /// The pod was bound: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The attempt failed because no node fits: wait for a cluster change.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Unschedulable(now);
        }
    }

    /// The attempt failed for another reason (a bind error): retry after the back-off.
    pub fn backoff(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.place = Place::Backoff(now + backoff_for(e.attempts));
        }
    }

    /// Puts a pod (back) in the queue to be retried after its back-off (a failed bind).
    pub fn retry_later(&mut self, key: &str, priority: i32, now: Instant) {
        let e = self
            .entries
            .entry(key.to_string())
            .or_insert_with(|| Entry {
                rank: Rank {
                    priority,
                    since: now,
                    key: key.to_string(),
                },
                attempts: 0,
                place: Place::InFlight,
            });
        if e.place == Place::Active {
            self.active.remove(&e.rank);
        }
        e.attempts += 1;
        e.place = Place::Backoff(now + backoff_for(e.attempts));
    }

    /// A node was added or changed, or a pod deleted: unschedulable pods are tried again
    /// (after what remains of their back-off).
    pub fn cluster_changed(&mut self, now: Instant) {
        for e in self.entries.values_mut() {
            if let Place::Unschedulable(since) = e.place {
                let until = since + backoff_for(e.attempts);
                if until <= now {
                    e.place = Place::Active;
                    self.active.insert(e.rank.clone());
                } else {
                    e.place = Place::Backoff(until);
                }
            }
        }
    }

    /// Moves pods whose back-off has passed, and pods unschedulable for 5 minutes, to the
    /// active queue. Returns the next instant something will be due, if any.
    pub fn tick(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for e in self.entries.values_mut() {
            let due = match e.place {
                Place::Backoff(until) => until,
                Place::Unschedulable(since) => since + MAX_UNSCHEDULABLE,
                _ => continue,
            };
            if due <= now {
                e.place = Place::Active;
                self.active.insert(e.rank.clone());
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Where a pod waits, if it is queued.
    pub fn place(&self, key: &str) -> Option<Place> {
        self.entries.get(key).map(|e| e.place)
    }

    /// How many pods wait (active, in back-off, unschedulable).
    pub fn counts(&self) -> (usize, usize, usize) {
        let (mut b, mut u) = (0, 0);
        for e in self.entries.values() {
            match e.place {
                Place::Backoff(_) => b += 1,
                Place::Unschedulable(_) => u += 1,
                _ => {}
            }
        }
        (self.active.len(), b, u)
    }

    /// How many pods are ready to be tried.
    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    /// How many pods the queue holds in all.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The back-off after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, then 10 s.
pub fn backoff_for(attempts: u32) -> Duration {
    BACKOFF.delay(attempts.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_older() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("d/low-old", 0, t);
        q.add("d/high", 100, t + Duration::from_secs(2));
        q.add("d/low-new", 0, t + Duration::from_secs(1));
        q.add("d/low-old", 0, t + Duration::from_secs(3)); // an update keeps its age
        assert_eq!(q.pop().as_deref(), Some("d/high"));
        assert_eq!(q.pop().as_deref(), Some("d/low-old"));
        assert_eq!(q.pop().as_deref(), Some("d/low-new"));
        assert_eq!(q.pop(), None);
        assert_eq!(q.len(), 3, "in flight until done");
        q.done("d/high");
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_or_five_minutes() {
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("d/p", 0, t);
        q.pop();
        q.unschedulable("d/p", t);
        assert_eq!(
            q.tick(t + Duration::from_secs(60)),
            Some(t + MAX_UNSCHEDULABLE)
        );
        assert_eq!(q.active_len(), 0);
        // A node appears: back after the rest of the back-off (1 s after one attempt).
        q.cluster_changed(t + Duration::from_millis(200));
        assert_eq!(
            q.place("d/p"),
            Some(Place::Backoff(t + Duration::from_secs(1)))
        );
        q.tick(t + Duration::from_secs(1));
        assert_eq!(q.pop().as_deref(), Some("d/p"));
        // Second failure, no change: the 5-minute flush.
        q.unschedulable("d/p", t + Duration::from_secs(2));
        q.tick(t + Duration::from_secs(2) + MAX_UNSCHEDULABLE);
        assert_eq!(q.active_len(), 1);
    }

    #[test]
    fn back_off_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(9), MAX_BACKOFF);
        let t = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add("d/p", 0, t);
        q.pop();
        q.backoff("d/p", t);
        assert_eq!(q.tick(t), Some(t + Duration::from_secs(1)));
        q.add("d/p", 5, t); // an update brings it back at once
        assert_eq!(q.pop().as_deref(), Some("d/p"));
        q.remove("d/p");
        assert!(q.is_empty());
        q.retry_later("d/p", 0, t);
        assert_eq!(
            q.place("d/p"),
            Some(Place::Backoff(t + Duration::from_secs(1)))
        );
        assert_eq!(q.active_len(), 0);
    }
}
