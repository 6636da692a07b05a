//! The Job controller's back-off before replacing failed pods (10 s, doubling, at most
//! 10 minutes): per Job from the failures since its last success, or per index from the
//! failure counts its pods carry in annotations when `backoffLimitPerIndex` is set. Times
//! are Unix milliseconds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use skiff_client::reflector::ObjectKey;

use super::{INDEX_FAILURE_COUNT, INDEX_IGNORED_FAILURE_COUNT};

const FIRST: i64 = 10_000;
const MAX: i64 = 600_000;

/// How long to wait at `now` before the next pod, after `failures` consecutive failures the
/// last of which was at `last`.
pub fn remaining(failures: i32, last: Option<i64>, now: i64) -> Duration {
    let Some(last) = last.filter(|_| failures > 0) else {
        return Duration::ZERO;
    };
    let mut delay = FIRST;
    for _ in 1..failures {
        delay = (delay * 2).min(MAX);
        if delay == MAX {
            break;
        }
    }
    let left = delay - (now - last);
    Duration::from_millis(left.max(0) as u64)
}

/// A Job's failures since its last success.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// Consecutive failures since the last success.
    pub failures: i32,
    /// When the last of them happened.
    pub last_failure: Option<i64>,
}

impl Record {
    /// The wait left at `now`.
    pub fn remaining(&self, now: i64) -> Duration {
        remaining(self.failures, self.last_failure, now)
    }

    /// This record after the newly finished pods: a success resets it, failures after the
    /// last success add up.
    pub fn after(&self, succeeded: &[Arc<Pod>], failed: &[Arc<Pod>]) -> Record {
        let mut failed_at: Vec<i64> = failed.iter().map(|p| finished_at(p)).collect();
        failed_at.sort_unstable();
        let last_success = succeeded.iter().map(|p| finished_at(p)).max();
        match last_success {
            None if failed_at.is_empty() => self.clone(),
            None => Record {
                failures: self.failures + failed_at.len() as i32,
                last_failure: failed_at.last().copied(),
            },
            Some(s) => {
                let after: Vec<i64> = failed_at.into_iter().filter(|t| *t > s).collect();
                Record {
                    failures: after.len() as i32,
                    last_failure: after.last().copied(),
                }
            }
        }
    }
}

/// The records of the Jobs this controller runs (in memory, as Kubernetes keeps them).
#[derive(Default)]
pub struct Records(parking_lot::Mutex<HashMap<ObjectKey, Record>>);

impl Records {
    /// The job's record.
    pub fn get(&self, key: &ObjectKey) -> Record {
        self.0.lock().get(key).cloned().unwrap_or_default()
    }

    /// Replaces the job's record.
    pub fn set(&self, key: &ObjectKey, r: Record) {
        self.0.lock().insert(key.clone(), r);
    }

    /// Forgets the job (finished or gone).
    pub fn forget(&self, key: &ObjectKey) {
        self.0.lock().remove(key);
    }
}

/// When the pod finished: its containers' latest finish (sidecars included), else when it
/// stopped being ready, else when its deletion began, else its creation.
pub fn finished_at(p: &Pod) -> i64 {
    containers_finished(p)
        .or_else(|| {
            let c = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False")
                .then(|| {
                    c.last_transition_time
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                })
                .flatten()
        })
        .or_else(|| {
            let t = p.metadata.deletion_timestamp.as_ref()?.0.as_millisecond();
            Some(t - p.metadata.deletion_grace_period_seconds.unwrap_or(0) * 1000)
        })
        .unwrap_or_else(|| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0)
        })
}

fn containers_finished(p: &Pod) -> Option<i64> {
    let status = p.status.as_ref()?;
    let sidecars: Vec<&str> = p
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let regular = status.container_statuses.iter().flatten();
    let side = status
        .init_container_statuses
        .iter()
        .flatten()
        .filter(|s| sidecars.contains(&s.name.as_str()));
    let mut latest = None;
    for s in regular.chain(side) {
        let t = finished(s)?;
        latest = Some(latest.map_or(t, |l: i64| l.max(t)));
    }
    latest
}

fn finished(s: &ContainerStatus) -> Option<i64> {
    Some(
        s.state
            .as_ref()?
            .terminated
            .as_ref()?
            .finished_at
            .as_ref()?
            .0
            .as_millisecond(),
    )
}

fn annotation(p: &Pod, key: &str) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v >= 0)
        .unwrap_or(0)
}

/// The counted failures of the pod's index before this pod (its annotation; 0 when missing
/// or malformed).
pub fn index_failures(p: &Pod) -> i32 {
    annotation(p, INDEX_FAILURE_COUNT)
}

/// The ignored failures of the pod's index before this pod.
pub fn index_ignored_failures(p: &Pod) -> i32 {
    annotation(p, INDEX_IGNORED_FAILURE_COUNT)
}

/// The wait left at `now` before replacing `last_failed`, the index's last failed pod.
pub fn remaining_for_index(last_failed: Option<&Pod>, now: i64) -> Duration {
    match last_failed {
        None => Duration::ZERO,
        Some(p) => remaining(
            index_failures(p) + index_ignored_failures(p) + 1,
            Some(finished_at(p)),
            now,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doubles_from_ten_seconds_to_ten_minutes() {
        assert_eq!(remaining(0, Some(100), 100), Duration::ZERO);
        assert_eq!(remaining(1, Some(0), 0), Duration::from_secs(10));
        assert_eq!(remaining(2, Some(0), 5_000), Duration::from_secs(15));
        assert_eq!(remaining(3, Some(0), 0), Duration::from_secs(40));
        assert_eq!(remaining(12, Some(0), 0), Duration::from_secs(600));
        assert_eq!(remaining(1, Some(0), 11_000), Duration::ZERO);
    }

    fn pod(finished: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {
                "containerStatuses": [{"name": "c", "image": "", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": 1,
                    "finishedAt": finished}}}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn a_success_resets_the_count() {
        let r = Record::default();
        let f1 = pod("2024-01-01T00:00:10Z");
        let f2 = pod("2024-01-01T00:00:30Z");
        let s = pod("2024-01-01T00:00:20Z");
        let r = r.after(&[], std::slice::from_ref(&f1));
        assert_eq!(r.failures, 1);
        let r2 = r.after(std::slice::from_ref(&s), std::slice::from_ref(&f2));
        assert_eq!(r2.failures, 1);
        assert_eq!(r2.last_failure, Some(finished_at(&f2)));
        let r3 = r.after(&[s], &[f1]);
        assert_eq!(r3, Record::default());
        let r4 = r.after(&[], &[f2]);
        assert_eq!(r4.failures, 2);
    }
}
