//! The seam between the schema walkers and the CEL rules of `x-kubernetes-validations`
//! ([`crate::cel`]). Validation, defaulting checks and the schema check reach CEL only
//! through [`NodeRules`] and [`compile`], so that the walkers can be tested with rules of
//! their own and the CEL engine can change behind them.

use serde_json::Value;

use crate::error::FieldError;
use crate::structural::Schema;

/// The compiled `x-kubernetes-validations` of one schema node.
pub(crate) trait NodeRules: Send + Sync {
    /// Evaluates the rules with `self` = `value` (and `oldSelf` = `old` for transition rules);
    /// `field` is where the node sits in the object (`spec`, `spec.items[2]`; "" for the root).
    fn check(&self, field: &str, value: &Value, old: Option<&Value>, out: &mut Vec<FieldError>);
    /// Whether any rule uses `oldSelf`.
    fn has_transition_rules(&self) -> bool;
}

/// Where in the schema a node with rules sits, which changes how its rules compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeContext {
    /// The node is a resource (the custom object itself, or an
    /// `x-kubernetes-embedded-resource`): `self.apiVersion`, `self.kind` and
    /// `self.metadata.name`/`generateName` are visible to its rules.
    pub(crate) resource_root: bool,
    /// How often the node can occur in one object: the product of `maxItems` and
    /// `maxProperties` of the lists and maps above it; `None` when one is unbounded. Rule
    /// costs are estimated times this.
    pub(crate) cardinality: Option<u64>,
    /// Where old and new values stop being paired above the node (a list that is not a
    /// `map` list), as a schema path: rules here may not use `oldSelf`.
    pub(crate) uncorrelatable: Option<String>,
}

/// Compiles the rules of one node; errors name `path`, the node's schema path.
pub(crate) type Compiler = dyn Fn(&Schema, &str, &NodeContext) -> Result<Box<dyn NodeRules>, Vec<FieldError>>
    + Send
    + Sync;

/// The compiler of the CEL module.
pub(crate) fn compile(
    node: &Schema,
    path: &str,
    ctx: &NodeContext,
) -> Result<Box<dyn NodeRules>, Vec<FieldError>> {
    let options = CompileOptions {
        resource_root: ctx.resource_root,
        cardinality: ctx.cardinality,
        uncorrelatable: ctx.uncorrelatable.clone(),
    };
    let rules = Rules::compile_with(node, path, &options)?;
    Ok(Box::new(rules))
}

impl NodeRules for Rules {
    fn check(&self, field: &str, value: &Value, old: Option<&Value>, out: &mut Vec<FieldError>) {
        Rules::check(self, field, value, old, out)
    }

    fn has_transition_rules(&self) -> bool {
        Rules::has_transition_rules(self)
    }
}

use crate::cel::{CompileOptions, Rules};
