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

/// Parses a Go/Kubernetes duration such as `15s`, `1m30s`, `5m0s`, `500ms`, `1.5h` (what
/// flags and configuration files carry), as Go's `time.ParseDuration` does; negative
/// durations are refused. The error is Go's message, naming the text.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    skiff_rules::duration::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn parses_go_durations() {
        use super::parse_duration;
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("5m0s"), Ok(Duration::from_secs(300)));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("soon").unwrap_err().contains("soon"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn formats_like_kubernetes() {
        let s = super::now_rfc3339();
        assert!(s.ends_with('Z') && s.len() == 20, "{s}");
    }
}
