//! List: from the watch cache when it is fresh enough for what the client asked, from etcd
//! at one revision otherwise, with `limit`/`continue` pagination.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::update::{requested_rv, too_new};
use super::GenericStore;
use crate::error::{Error, Result};
use crate::registry::ResourceInfo;
use crate::request::{ListOpts, Listed};
use crate::storage::cached::{with_rv, Cached};

/// kube-apiserver's continue token: base64 JSON with the revision and the next key.
fn encode_continue(rv: i64, start: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String)> {
    let bad = || Error::bad_request(format!("continue key is not valid: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .to_string();
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rv, start))
}

/// The warning for an object a list leaves out because its stored value cannot be read.
fn left_out(u: &crate::storage::Unreadable) -> String {
    tracing::debug!(key = %u.key, error = %u.reason, "left out of a list: unreadable");
    format!("{}; the object is left out of this list", u.reason)
}

impl GenericStore {
    /// Lists objects.
    pub async fn list(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Listed> {
        let mut listed = self.list_stored(r, ns, opts).await?;
        // The page in one conversion: one call for all of it where the conversion calls out.
        super::cached_in_version(r, &mut listed.items).await?;
        Ok(listed)
    }

    async fn list_stored(
        &self,
        r: &ResourceInfo,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Listed> {
        let prefix = r.ns_prefix(self.etcd.prefix(), ns);
        let keep = |o: &Value| opts.labels.matches(o) && opts.fields.matches(r, o);
        let keep_cached =
            |c: &Cached| opts.labels.matches_cached(c) && opts.fields.matches_cached(c);
        if let Some(token) = &opts.continue_token {
            let (rv, start) = decode_continue(token)?;
            let start_key = format!("{}{start}", r.prefix(self.etcd.prefix()));
            return self
                .list_from_etcd(r, &prefix, Some(start_key), rv, opts, keep)
                .await;
        }
        let rv = requested_rv(opts.resource_version.as_deref())?;
        let exact = opts.resource_version_match.as_deref() == Some("Exact");
        if let Some(m) = opts.resource_version_match.as_deref() {
            if !matches!(m, "Exact" | "NotOlderThan" | "") {
                return Err(Error::bad_request(format!("resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\"")));
            }
            if rv.is_none() && !m.is_empty() {
                return Err(Error::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
        }
        let cache = self.cache(r);
        let from_cache = || {
            let (items, rev) = cache.list(&prefix, keep_cached);
            Listed {
                items,
                rv: rev,
                continue_token: None,
                remaining: None,
                warnings: cache
                    .unreadable_under(&prefix)
                    .iter()
                    .map(left_out)
                    .collect(),
            }
        };
        match rv {
            Some(rv) if exact => self.list_from_etcd(r, &prefix, None, rv, opts, keep).await,
            Some(rv) => {
                // Any state at least as new as rv: the cache, once it has caught up.
                if !cache.reach(&self.etcd, rv, Duration::from_secs(3)).await {
                    return Err(too_new(rv, cache.rev()));
                }
                Ok(from_cache())
            }
            None if opts.limit > 0 => self.list_from_etcd(r, &prefix, None, 0, opts, keep).await,
            None => {
                // A consistent list: served from the cache once it has seen etcd's current
                // revision, else from etcd.
                let current = self.etcd.current_revision().await?;
                if cache.is_ready()
                    && cache
                        .reach(&self.etcd, current, Duration::from_millis(500))
                        .await
                {
                    Ok(from_cache())
                } else {
                    self.list_from_etcd(r, &prefix, None, current, opts, keep)
                        .await
                }
            }
        }
    }

    async fn list_from_etcd(
        &self,
        r: &ResourceInfo,
        prefix: &str,
        start: Option<String>,
        rv: i64,
        opts: &ListOpts,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Listed> {
        let filtered = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        let mut next = start;
        let mut read_rev = rv;
        let mut remaining = None;
        let mut warnings = Vec::new();
        loop {
            let want = if opts.limit > 0 {
                (opts.limit - items.len() as i64).max(1)
            } else {
                0
            };
            let batch = if filtered && want > 0 {
                want.max(500)
            } else {
                want
            };
            let page = self
                .etcd
                .list(prefix, next.as_deref(), read_rev, batch)
                .await?;
            read_rev = page.rev;
            warnings.extend(page.unreadable.iter().map(left_out));
            let more = page.next_key.is_some();
            let mut last_key = None;
            for item in page.items {
                last_key = Some(item.key.clone());
                if keep(&item.value) {
                    let json = with_rv(&item.raw, item.rv);
                    items.push(Arc::new(Cached::new(r, &item.value, json, item.rv)));
                    if opts.limit > 0 && items.len() as i64 >= opts.limit {
                        break;
                    }
                }
            }
            let full = opts.limit > 0 && items.len() as i64 >= opts.limit;
            if full {
                // More remain if this page had more, or we stopped before its end.
                let stopped_early = last_key.as_deref()
                    != page.next_key.as_deref().map(|k| k.trim_end_matches('\0'));
                if more || stopped_early {
                    let last = last_key.expect("an item was read");
                    let rel = last
                        .strip_prefix(&r.prefix(self.etcd.prefix()))
                        .unwrap_or(&last)
                        .to_string();
                    if !filtered {
                        remaining = Some(page.remaining);
                    }
                    return Ok(Listed {
                        items,
                        rv: read_rev,
                        continue_token: Some(encode_continue(read_rev, &format!("{rel}\0"))),
                        remaining: remaining.filter(|n| *n > 0),
                        warnings,
                    });
                }
                return Ok(Listed {
                    items,
                    rv: read_rev,
                    continue_token: None,
                    remaining: None,
                    warnings,
                });
            }
            match page.next_key {
                Some(k) => next = Some(k),
                None => {
                    return Ok(Listed {
                        items,
                        rv: read_rev,
                        continue_token: None,
                        remaining: None,
                        warnings,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "default/web-1\0");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "default/web-1\0".to_string())
        );
        assert_eq!(decode_continue("!!").unwrap_err().code(), 400);
        let escape = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"rv":1,"start":"../secrets/x"}"#);
        assert_eq!(decode_continue(&escape).unwrap_err().code(), 400);
    }

    proptest! {
        #[test]
        fn any_continue_token_decodes_or_is_refused(s in ".*") {
            if let Err(e) = decode_continue(&s) {
                prop_assert_eq!(e.code(), 400);
            }
        }
    }
}
