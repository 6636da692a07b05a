//! The strategy of a custom resource's version, built at run time from its definition:
//! pruning, defaulting and validation by the structural schema (with its CEL rules), the
//! printer columns, the selectable fields.

use std::borrow::Cow;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion;
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::registry::{Admitted, Column, Printer, Rejection, Strategy};

use super::schema::Validator;
pub use super::schema::{parse_path, Path};

/// What makes a schema unusable (non-structural, or with rules that do not compile).
pub fn schema_problems(schema: &skiff_schema::Schema, path: &str) -> Vec<skiff_schema::FieldError> {
    let mut out = super::schema::structural_problems(schema, path);
    if out.is_empty() {
        if let Err(errs) = Validator::new_at(schema.clone(), path) {
            out.extend(errs);
        }
    }
    out
}

/// One printer column.
struct PrinterColumn {
    column: Column,
    path: Option<Path>,
    date: bool,
}

/// A custom resource version's strategy.
pub struct Custom {
    validator: Option<Validator>,
    lists: Option<std::sync::Arc<dyn crate::apply::ListTypes>>,
    status: bool,
    columns: Vec<PrinterColumn>,
    selectable: Vec<(String, Option<Path>)>,
}

impl Custom {
    /// The strategy of `version`. A schema that does not build leaves the version without
    /// validation; the definition itself was refused for it already.
    pub fn new(version: &CustomResourceDefinitionVersion) -> Self {
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| skiff_schema::Schema::parse(&crate::validation::val(s)).ok());
        let lists = schema.clone().map(|s| {
            std::sync::Arc::new(super::schema::SchemaLists(s))
                as std::sync::Arc<dyn crate::apply::ListTypes>
        });
        let validator = schema.and_then(|s| Validator::new_at(s, "").ok());
        let mut columns = vec![PrinterColumn {
            column: crate::registry::col(
                "Name",
                "string",
                0,
                "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
            ),
            path: parse_path(".metadata.name").ok(),
            date: false,
        }];
        let custom = version.additional_printer_columns.as_deref().unwrap_or(&[]);
        if custom.is_empty() {
            columns.push(PrinterColumn {
                column: crate::registry::col(
                    "Age",
                    "date",
                    0,
                    "CreationTimestamp is a timestamp representing the server time when this object was created.",
                ),
                path: parse_path(".metadata.creationTimestamp").ok(),
                date: true,
            });
        }
        for c in custom {
            columns.push(PrinterColumn {
                column: Column {
                    name: Cow::Owned(c.name.clone()),
                    kind: Cow::Owned(c.type_.clone()),
                    format: Cow::Owned(c.format.clone().unwrap_or_default()),
                    priority: c.priority.unwrap_or(0).clamp(0, 255) as u8,
                    description: Cow::Owned(c.description.clone().unwrap_or_default()),
                },
                path: parse_path(&c.json_path).ok(),
                date: c.type_ == "date",
            });
        }
        let selectable = version
            .selectable_fields
            .iter()
            .flatten()
            .map(|f| {
                (
                    f.json_path.trim_start_matches('.').to_string(),
                    parse_path(&f.json_path).ok(),
                )
            })
            .collect();
        Custom {
            validator,
            lists,
            status: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            columns,
            selectable,
        }
    }
}

/// A printer cell as kube-apiserver fills it: the first value the path finds (dates as
/// kubectl shows ages), or null.
fn cell(path: Option<&Path>, date: bool, obj: &Value) -> Value {
    let Some(found) = path.and_then(|p| p.eval(obj).into_iter().next()) else {
        return Value::Null;
    };
    match found {
        Value::String(s) if date => json!(crate::registry::since(&s)),
        Value::Object(_) | Value::Array(_) => json!(found.to_string()),
        other => other,
    }
}

#[async_trait::async_trait]
impl Strategy for Custom {
    fn default(&self, mut obj: Value) -> Result<Admitted, Rejection> {
        if !obj.is_object() {
            return Err(Rejection::Decode("the object must be a JSON object".into()));
        }
        let mut unknown = Vec::new();
        if let Some(v) = &self.validator {
            unknown = v.prune(&mut obj);
            v.default(&mut obj);
        }
        Ok(Admitted {
            value: obj,
            unknown,
        })
    }

    fn validate(&self, obj: &Value, old: Option<&Value>) -> Result<(), Rejection> {
        let Some(v) = &self.validator else {
            return Ok(());
        };
        let errs = v.validate(obj, old);
        if errs.is_empty() {
            Ok(())
        } else {
            Err(Rejection::Invalid(
                errs.into_iter().map(super::cause).collect(),
            ))
        }
    }

    fn has_status(&self) -> bool {
        self.status
    }

    fn prepare_create(&self, obj: &mut Value, _user: &UserInfo) {
        if self.status {
            crate::registry::clear_status(obj);
        }
    }

    fn list_types(&self) -> Option<&std::sync::Arc<dyn crate::apply::ListTypes>> {
        self.lists.as_ref()
    }

    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        let (_, path) = self.selectable.iter().find(|(f, _)| f == field)?;
        let found = path.as_ref()?.eval(obj).into_iter().next()?;
        Some(match found {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

impl Printer for Custom {
    fn columns(&self) -> Vec<Column> {
        self.columns.iter().map(|c| c.column.clone()).collect()
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        self.columns
            .iter()
            .map(|c| cell(c.path.as_ref(), c.date, obj))
            .collect()
    }
}
