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
//! Errors are [`FieldError`]s, worded as Kubernetes' `field.Error`s.

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
