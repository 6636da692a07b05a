//! The current time in the forms Kubernetes objects carry (`Time`, `MicroTime`, RFC 3339).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

/// Now, to the microsecond.
pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = i64::try_from(d.as_secs()).unwrap_or(0);
    let nanos = i32::try_from(d.subsec_micros() * 1000).unwrap_or(0);
    Timestamp::new(secs, nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Now as a `metav1.Time` (whole seconds, as Kubernetes serializes it).
pub fn now_time() -> Time {
    Time(Timestamp::from_second(now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Now as a `metav1.MicroTime`.
pub fn now_micro() -> MicroTime {
    MicroTime(now())
}

/// Now in RFC 3339 with whole seconds (`2026-01-02T03:04:05Z`), for JSON patches.
pub fn now_rfc3339() -> String {
    now_time().0.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_kubernetes() {
        let s = super::now_rfc3339();
        assert!(s.ends_with('Z') && s.len() == 20, "{s}");
    }
}
