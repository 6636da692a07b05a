//! `pods/eviction`: a graceful delete of a pod with the eviction's delete options.

use serde_json::{json, Value};

use super::binding::created;
use crate::error::{Error, Result};
use crate::registry::subresource::{Kind, Subresource};
use crate::registry::{s, Objects, Resource};
use crate::request::{DeleteOpts, Propagation, WriteOpts};

/// The `eviction` handler.
pub static EVICTION: Eviction = Eviction;

/// The `eviction` subresource.
pub struct Eviction;

/// The delete an `Eviction` asks for.
fn delete_options(name: &str, eviction: &Value, opts: &WriteOpts) -> Result<DeleteOpts> {
    let body_name = s(eviction, "/metadata/name");
    if !body_name.is_empty() && body_name != name {
        return Err(Error::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let d = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    let propagation = match d.get("propagationPolicy").and_then(Value::as_str) {
        Some(p) => Some(Propagation::parse(p)?),
        None => None,
    };
    let dry_run = opts.dry_run
        || d.get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOpts {
        grace_period: d.get("gracePeriodSeconds").and_then(Value::as_i64),
        propagation,
        uid: d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        dry_run,
        ignore_store_read_error: false,
        user: opts.user.clone(),
        notes: opts.notes.clone(),
    })
}

#[async_trait::async_trait]
impl Subresource for Eviction {
    fn verbs(&self) -> &'static [&'static str] {
        &["create"]
    }

    fn kind(&self) -> Option<Kind> {
        Some(("policy", "v1", "Eviction"))
    }

    async fn create(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let delete = delete_options(name, &body, opts)?;
        objs.delete(r, ns, name, &delete).await?;
        Ok(created(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_options_come_from_the_eviction() {
        let ev = json!({"metadata": {"name": "p"}, "deleteOptions": {"gracePeriodSeconds": 3,
            "preconditions": {"uid": "u"}, "dryRun": ["All"]}});
        let d = delete_options("p", &ev, &WriteOpts::default()).unwrap();
        assert_eq!(d.grace_period, Some(3));
        assert_eq!(d.uid.as_deref(), Some("u"));
        assert!(d.dry_run);
        assert_eq!(
            delete_options("q", &ev, &WriteOpts::default())
                .unwrap_err()
                .code(),
            400
        );
        let bad = json!({"deleteOptions": {"propagationPolicy": "Sideways"}});
        assert_eq!(
            delete_options("p", &bad, &WriteOpts::default())
                .unwrap_err()
                .code(),
            422
        );
    }
}
