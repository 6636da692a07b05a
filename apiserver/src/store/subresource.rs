//! Subresources, served the same way to both doors: the resource's handler for the name,
//! called over the store; creates through a subresource (a pod's binding, an eviction) pass
//! admission here, the others when they write the object.

use serde_json::Value;

use super::GenericStore;
use crate::admission::{Attributes, Operation, Options};
use crate::error::{Error, Result};
use crate::patch::PatchType;
use crate::registry::{Resource, Subresource};
use crate::request::{WriteOpts, Written};

/// The 404 for a subresource the resource does not have, as kube-apiserver words it.
pub fn no_such_subresource(sub: &str) -> Error {
    Error::not_found_message(format!(
        "the server could not find the requested resource ({sub})"
    ))
}

fn handler<'a>(r: &'a Resource, sub: &str) -> Result<&'a dyn Subresource> {
    r.subresource(sub)
        .filter(|h| !h.connect())
        .ok_or_else(|| no_such_subresource(sub))
}

/// A subresource request as admission sees it.
fn attrs<'a>(
    operation: Operation,
    r: &'a Resource,
    ns: Option<&'a str>,
    name: &'a str,
    sub: &'a str,
    opts: &'a WriteOpts,
) -> Attributes<'a> {
    Attributes {
        operation,
        resource: r,
        subresource: sub,
        namespace: ns.unwrap_or(""),
        name,
        old: None,
        user: &opts.user,
        dry_run: opts.dry_run && operation != Operation::Connect,
        options: match operation {
            Operation::Connect => Options::Connect(opts),
            _ => Options::Create(opts),
        },
        reinvocation: None,
    }
}

impl GenericStore {
    /// `GET NAME/SUB`.
    pub async fn get_subresource(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: &str,
    ) -> Result<Value> {
        handler(r, sub)?.get(self, r, ns, name).await
    }

    /// `PUT NAME/SUB`.
    pub async fn update_subresource(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        handler(r, sub)?.update(self, r, ns, name, body, opts).await
    }

    /// `PATCH NAME/SUB`.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_subresource(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        ptype: PatchType,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        handler(r, sub)?
            .patch(self, r, ns, name, ptype, body, opts)
            .await
    }

    /// `POST NAME/SUB`: the object to answer with.
    pub async fn create_subresource(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        mut body: Value,
        opts: &WriteOpts,
    ) -> Result<Value> {
        let h = handler(r, sub)?;
        let (version, kind) = match h.kind() {
            Some((_, v, k)) => (v.to_string(), k.to_string()),
            None => (r.version.clone(), r.kind.clone()),
        };
        let problems = &opts.decoded.problems;
        for w in opts.field_validation.judge(problems, &kind, &version)? {
            opts.notes.warn(w);
        }
        let attrs = attrs(Operation::Create, r, ns, name, sub, opts);
        self.admission()
            .admit(&attrs, Some(&mut body), self)
            .await?;
        self.admission().validate(&attrs, Some(&body), self).await?;
        h.create(self, r, ns, name, body, opts).await
    }

    /// Admission for a connection to an object's node (exec, attach, port-forward, logs).
    pub async fn admit_connect(
        &self,
        r: &Resource,
        ns: Option<&str>,
        name: &str,
        sub: &str,
        opts: &WriteOpts,
    ) -> Result<()> {
        let attrs = attrs(Operation::Connect, r, ns, name, sub, opts);
        self.admission().admit(&attrs, None, self).await?;
        self.admission().validate(&attrs, None, self).await
    }
}
