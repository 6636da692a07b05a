//! Structural OpenAPI v3 schemas, as Kubernetes' apiextensions API server uses them for
//! CustomResourceDefinitions, written once and free of I/O:
//!
//! - [`structural`]: the schema tree ([`Schema`]) read from a CRD's `openAPIV3Schema`, and the
//!   structural check that refuses what Kubernetes calls a non-structural schema;
//! - [`validation`]: an object checked against its schema (types, formats, enums, bounds,
//!   patterns, `required`, list types), with the CEL rules of [`cel`] at every node;
//! - [`prune`]: fields the schema does not know, removed;
//! - [`defaults`]: `default` values filled in;
//! - [`listtype`]: how lists merge under server-side apply (`x-kubernetes-list-type`);
//! - [`cel`]: `x-kubernetes-validations` rules (`self`, `oldSelf`, `messageExpression`, cost);
//! - [`jsonpath`]: the JSONPath of printer columns and scale paths.
//!
//! Errors are [`FieldError`]s, worded as Kubernetes' `field.Error`s (their `Display` is
//! Kubernetes' `field: body`, [`aggregate`] its list form).
//!
//! # How the API server uses it
//!
//! When a CRD is written: [`structural::check`] on each version's schema (plus
//! [`structural::check_status_root`] when the version has a status subresource); only when
//! that finds nothing, [`Validator::new_at`] to compile its CEL rules (Kubernetes compiles
//! rules only in a schema without other errors). Either list of errors gives the 422's
//! causes.
//! [`structural::non_structural`] gives the `NonStructuralSchema` condition of a stored CRD.
//!
//! For a custom object, in Kubernetes' order:
//!
//! 1. on decode: [`prune::prune`] (its paths are the `unknown field "..."` warnings or errors
//!    of `fieldValidation`), [`defaults::prune_nulls`], then [`defaults::default`] (also on
//!    every read from storage);
//! 2. on create and update: [`Validator::validate`] (the custom object's own `apiVersion`,
//!    `kind` and `metadata` are checked by the caller, as Kubernetes' strategy does), or
//!    [`Validator::validate_status`] for the status subresource;
//! 3. server-side apply asks [`listtype::list_type`] and [`listtype::map_is_atomic`].
//!
//! # Where it differs from Kubernetes
//!
//! - Patterns are Go RE2 read by the `regex` crate, rewritten where the two differ (see the
//!   `pattern` module); an invalid pattern's message is the `regex` crate's.
//! - Where an unchanged node has both transition rules and other rules, the other rules'
//!   errors are kept on update rather than ratcheted (see [`validation`]).
//! - Embedded resources' `metadata`: unknown fields are dropped, but empty fields are not
//!   normalised away as a round trip through Go's `ObjectMeta` would; `managedFields` are not
//!   checked.
//! - Error order follows Kubernetes where Kubernetes has one; where it iterates a Go map (the
//!   properties of an object), properties come in name order.

pub mod cel;
mod celrules;
pub mod defaults;
pub mod error;
mod formats;
mod gofmt;
pub mod jsonpath;
pub mod listtype;
mod meta;
mod path;
mod pattern;
pub mod prune;
pub mod structural;
pub mod validation;

pub use error::{aggregate, ErrorKind, FieldError};
pub use listtype::ListType;
pub use structural::Schema;
pub use validation::Validator;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// The CronTab of Kubernetes' CRD walkthrough, with a few more rules.
    fn crontab() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["cronSpec"],
                    "properties": {
                        "cronSpec": {"type": "string",
                                     "pattern": "^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$"},
                        "image": {"type": "string"},
                        "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                        "suspend": {"type": "boolean", "default": false},
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                 "items": {"type": "string"}}
                    }
                },
                "status": {"type": "object", "properties": {"active": {"type": "integer"}}}
            }
        })
    }

    #[test]
    fn a_request_goes_through_prune_default_and_validate() {
        let raw = crontab();
        let schema = Schema::parse(&raw).unwrap();
        assert!(structural::check(&schema, "spec.versions[0].schema.openAPIV3Schema").is_empty());
        assert!(
            structural::check_status_root(&raw, "spec.versions[0].schema.openAPIV3Schema")
                .is_empty()
        );
        let v =
            Validator::new_at(schema.clone(), "spec.versions[0].schema.openAPIV3Schema").unwrap();

        let mut obj = json!({
            "apiVersion": "stable.example.com/v1", "kind": "CronTab",
            "metadata": {"name": "my-new-cron-object"},
            "spec": {"cronSpec": "* * * * */5", "image": "my-awesome-cron-image",
                     "replicas": null, "color": "blue"}
        });
        let unknown = prune::prune(&schema, &mut obj, true);
        assert_eq!(unknown, vec!["spec.color"]);
        defaults::prune_nulls(&schema, &mut obj);
        defaults::default(&schema, &mut obj);
        assert_eq!(obj["spec"]["replicas"], json!(1));
        assert_eq!(obj["spec"]["suspend"], json!(false));
        assert!(v.validate(&obj, None).is_empty());

        let mut bad = obj.clone();
        bad["spec"]["cronSpec"] = json!("every minute");
        bad["spec"]["replicas"] = json!(11);
        bad["spec"]["tags"] = json!(["a", "a"]);
        let errs = v.validate(&bad, None);
        assert_eq!(
            aggregate(&errs),
            "[spec.cronSpec: Invalid value: \"every minute\": spec.cronSpec in body should match '^(\\d+|\\*)(/\\d+)?(\\s+(\\d+|\\*)(/\\d+)?){4}$', \
             spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10, \
             spec.tags[1]: Duplicate value: \"a\"]"
        );
        // The same object, stored before the schema was tightened, may still be updated
        // elsewhere.
        let mut later = bad.clone();
        later["spec"]["image"] = json!("newer-image");
        assert!(v.validate(&later, Some(&bad)).is_empty());
    }
}
