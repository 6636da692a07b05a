//! Decoding what a request's URL carries: percent-encoded path segments and the query string.
//!
//! Both see raw request bytes before anything is authenticated, so they never fail and never
//! panic: bytes that are not valid percent-encoding are kept as they are, and invalid UTF-8
//! becomes U+FFFD, as Go's `url.ParseQuery` callers in kube-apiserver end up seeing it.

use crate::error::{Error, Result};

/// Decodes one percent-encoded path segment.
pub fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Encodes a value for a query string.
pub fn encode_value(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Query parameters, decoded (`+` is a space, `%XX` a byte).
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes a raw query string.
    pub fn parse(q: Option<&str>) -> Self {
        Query(
            q.map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    /// Every parameter, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The first value of a parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    /// Whether a boolean parameter is present and true (`1`, `true`, `True`, or no value).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True" | ""))
    }

    /// An integer parameter; absent or empty is `None`.
    pub fn int(&self, k: &str) -> Result<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| Error::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(
            Query::parse(Some("limit=x"))
                .int("limit")
                .unwrap_err()
                .code(),
            400
        );
    }

    #[test]
    fn malformed_escapes_are_kept_and_never_panic() {
        // A `%` followed by a multi-byte character once sliced inside it.
        let q = Query::parse(Some("a=%1\u{e9}&b=%zz&c=%"));
        assert_eq!(q.get("a"), Some("%1\u{e9}"));
        assert_eq!(q.get("b"), Some("%zz"));
        assert_eq!(q.get("c"), Some("%"));
        assert_eq!(decode_segment("%1\u{e9}x"), "%1\u{e9}x");
        assert_eq!(decode_segment("a%2Fb"), "a/b");
        // Bytes that are not UTF-8 become replacement characters.
        assert_eq!(decode_segment("%ff"), "\u{fffd}");
    }

    #[test]
    fn values_round_trip_through_encoding() {
        let v = "app in (a b),x=é&y";
        let q = Query::parse(Some(&format!("k={}", encode_value(v))));
        assert_eq!(q.get("k"), Some(v));
    }

    proptest! {
        #[test]
        fn any_query_string_decodes(s in ".*") {
            let q = Query::parse(Some(&s));
            let _ = q.flag("watch");
            let _ = q.int("limit");
        }

        #[test]
        fn any_path_segment_decodes(s in ".*") {
            let _ = decode_segment(&s);
        }

        #[test]
        fn encoded_values_round_trip(k in "[a-zA-Z]{1,8}", v in ".*") {
            let q = Query::parse(Some(&format!("{k}={}", encode_value(&v))));
            prop_assert_eq!(q.get(&k), Some(v.as_str()));
        }
    }
}
