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

/// Compiles the rules of one node; errors name `path`, the node's schema path.
pub(crate) type Compiler =
    dyn Fn(&Schema, &str) -> Result<Box<dyn NodeRules>, Vec<FieldError>> + Send + Sync;

/// The compiler of the CEL module.
pub(crate) fn compile(node: &Schema, path: &str) -> Result<Box<dyn NodeRules>, Vec<FieldError>> {
    let rules = Rules::compile(node, path)?;
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

// Until the CEL module is joined, its contract is stood in for by rules that accept
// everything; joining replaces this with `use crate::cel::Rules;`.
use stand_in::Rules;

mod stand_in {
    use serde_json::Value;

    use crate::error::FieldError;
    use crate::structural::Schema;

    /// Compiled rules of one node (accepting everything).
    pub(crate) struct Rules;

    impl Rules {
        pub(crate) fn compile(_node: &Schema, _path: &str) -> Result<Rules, Vec<FieldError>> {
            Ok(Rules)
        }

        pub(crate) fn check(
            &self,
            _field: &str,
            _value: &Value,
            _old: Option<&Value>,
            _out: &mut Vec<FieldError>,
        ) {
        }

        pub(crate) fn has_transition_rules(&self) -> bool {
            false
        }
    }
}
