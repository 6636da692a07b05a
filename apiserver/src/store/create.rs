//! Create: "key absent → put" in one etcd transaction, with whatever the type allocates claimed
//! in the same transaction.

use rand::Rng;
use serde_json::{json, Value};

use super::write::{check_namespace_field, check_type, meta_mut, meta_str};
use super::GenericStore;
use crate::admission::{Attributes, Operation, Options};
use crate::error::{Error, Result};
use crate::registry::{now, Resource};
use crate::request::{WriteOpts, Written};
use crate::storage::WriteOutcome;

const GENERATE_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Metadata the server sets on create, whatever the client sent.
const SERVER_SET: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "resourceVersion",
    "managedFields",
];

/// A name from `generateName`: the prefix (cut to 58 characters) and five random characters.
fn generate_name(base: &str) -> String {
    let base: String = base.chars().take(58).collect();
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| GENERATE_CHARS[rng.random_range(0..GENERATE_CHARS.len())] as char)
        .collect();
    format!("{base}{suffix}")
}

impl GenericStore {
    /// Creates an object.
    pub async fn create(
        &self,
        r: &Resource,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.create_as(r, ns, obj, opts, false).await
    }

    /// Creates an object; `applied` when server-side apply creates it (its managed fields
    /// then belong to the applier, operation `Apply`).
    pub(super) async fn create_as(
        &self,
        r: &Resource,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOpts,
        applied: bool,
    ) -> Result<Written> {
        check_type(r, &mut obj)?;
        check_namespace_field(r, ns, &mut obj)?;
        {
            let m = meta_mut(&mut obj);
            if m.get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                return Err(Error::bad_request(
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            for f in SERVER_SET {
                m.remove(*f);
            }
            let unnamed = m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty();
            if unnamed {
                if let Some(base) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|b| !b.is_empty())
                {
                    let name = generate_name(base);
                    m.insert("name".into(), json!(name));
                }
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now()));
            if r.has_generation {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        r.strategy.prepare_create(&mut obj, &opts.user);
        let name = meta_str(&obj, "name").to_string();
        if let Some(why) = &r.refuse_create {
            return Err(Error::forbidden_object(r.group_resource(), &name, why));
        }
        let attrs = Attributes {
            operation: Operation::Create,
            resource: r,
            subresource: "",
            namespace: ns.unwrap_or(""),
            name: &name,
            old: None,
            user: &opts.user,
            dry_run: opts.dry_run,
            options: Options::Create(opts),
            reinvocation: None,
        };
        let mut warnings = Vec::new();
        let mut obj = self.admit(r, obj, &attrs, opts, &mut warnings).await?;
        opts.notes.move_warnings_into(&mut warnings);
        if applied {
            crate::apply::record_apply(&mut obj, opts, r.strategy.list_types())?;
        } else {
            crate::apply::record_update(
                &mut obj,
                None,
                opts.manager(),
                "",
                r.strategy.list_types(),
            );
        }
        let key = self.key(r, ns, &name);
        // Another writer may take the address or port picked for this object: pick again.
        for _ in 0..8 {
            let mut attempt = obj.clone();
            let effects = r.strategy.allocate(&self.etcd, &mut attempt, None).await?;
            if opts.dry_run {
                return Ok(Written {
                    object: attempt,
                    warnings,
                    created: true,
                });
            }
            let encoded = super::encode_for(r, &attempt).await?;
            match self
                .etcd
                .create(&key, encoded.bytes.clone(), &effects)
                .await?
            {
                WriteOutcome::Done(rev) => {
                    self.hint(r, &key, encoded.stored(&attempt), &encoded.bytes, rev);
                    super::written_as(r, &mut attempt, encoded, rev).await?;
                    return Ok(Written {
                        object: attempt,
                        warnings,
                        created: true,
                    });
                }
                WriteOutcome::Mismatch(_) => {
                    return Err(Error::already_exists(r.group_resource(), &name))
                }
                WriteOutcome::ClaimTaken => continue,
            }
        }
        Err(Error::internal(format!(
            "could not allocate what {} \"{name}\" needs after several attempts",
            r.group_resource()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_keep_the_prefix() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        let long = "x".repeat(70);
        assert_eq!(generate_name(&long).len(), 63);
        // Multi-byte prefixes are cut on character boundaries.
        assert!(generate_name(&"é".repeat(60)).starts_with('é'));
    }
}
