//! `x-kubernetes-validations`: CEL rules on the nodes of a CRD schema, as Kubernetes'
//! apiextensions API server compiles them when a CRD is written and runs them on every
//! custom object (k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel).
//!
//! [`Rules::compile`] checks a node's rules the way a CRD write does: each rule must parse
//! and type-check against the node's schema (`self`, and `oldSelf` for transition rules)
//! and return a bool, a `messageExpression` must return a string, `reason` and `fieldPath`
//! must be valid, and the estimated cost must fit the budget. [`Rules::check`] runs them on
//! a value, reporting failures as Kubernetes does (`spec: Invalid value: ...: <message>`).
//!
//! [`SchemaRules`] does both for a whole schema, as Kubernetes' CEL validator does: it
//! compiles every node's rules knowing where the node sits (how often it can occur, whether
//! old values pair there, the CRD's total cost) and runs them over an object and its old
//! version with one budget.
//!
//! The interpreter is the `cel` crate; the `library` module adds Kubernetes' functions to
//! it. [`Expression`] is the same engine for other users of CEL (admission policies): an
//! expression over named JSON values, evaluated to JSON.
//!
//! A failed rule on an object or list omits the value, as current Kubernetes does
//! (`spec: Invalid value: <message>`); on a scalar it prints it (`spec.name: Invalid
//! value: "x": <message>`); errors about the rule itself (evaluation errors, cost) print
//! the node's type (`spec: Invalid value: "object": no such key: x evaluating rule: ...`).
//!
//! # Cost, and how it approximates Kubernetes'
//!
//! Kubernetes bounds CEL twice. When a CRD is written, cel-go's static estimate of each
//! rule's worst case, times the most times the node can occur in one object, must stay
//! under [`STATIC_ESTIMATED_COST_LIMIT`], and all rules of a CRD together under
//! [`STATIC_ESTIMATED_CRD_COST_LIMIT`] ([`TotalCost`]). The estimate here is cel-go's
//! model, rewritten (see [`check`]): the same unit costs, the same sizes from `maxItems`,
//! `maxProperties` and `maxLength` (an unbounded list is as long as a 3 MiB request
//! could make it), the same library estimates. It follows cel-go closely enough to refuse
//! what Kubernetes refuses for the usual rules; where a function is not modelled it costs
//! 1 plus its arguments, as in cel-go.
//!
//! When an object is validated, Kubernetes counts the cost actually spent by each rule
//! (cancelling one past [`PER_CALL_LIMIT`]) and stops validating once an object has used
//! [`RUNTIME_CEL_COST_BUDGET`]. The `cel` crate counts nothing while it evaluates, so the
//! cost charged here is an upper bound taken before a rule runs: the same static estimate,
//! with the sizes the value actually has in place of the schema's bounds (the longest list,
//! map and string seen at each node). It charges at least what Kubernetes would, so an
//! object Kubernetes refuses for cost is refused here too, and a rule whose worst case on
//! this value exceeds the per-call limit is not run at all (Kubernetes would run it until
//! it actually crossed the limit, and so may accept an object whose loops end early).
//!
//! # What is left out
//!
//! Kubernetes' IP, CIDR, semver, format, JSON patch and authorizer libraries and
//! two-variable comprehensions (`all(k, v, ...)`, `transformMap`) are not provided: rules
//! using them fail to compile. Equality of `x-kubernetes-list-type: set` and `map` lists
//! is order-sensitive here, where Kubernetes ignores the order. Validation ratcheting
//! (errors of unchanged values reported as warnings) is left to the caller.

mod check;
mod decl;
mod env;
mod library;
mod validator;
mod values;

use std::fmt::Write as _;

use cel::common::types::CelOptional;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, ExecutionError, Program};
use serde_json::Value;

use crate::error::{ErrorKind, FieldError};
use crate::structural::{Rule, Schema};
use check::{Analysis, Ty, Var};
use decl::{Decls, NodeId};

pub use decl::{escape, is_identifier, MAX_REQUEST_SIZE_BYTES};
pub use env::{Activation, Composited, Env, InputType};
pub use validator::SchemaRules;

/// The most one evaluation of one rule may cost (Kubernetes' `PerCallLimit`).
pub const PER_CALL_LIMIT: u64 = 1_000_000;
/// The most all rules may cost on one object (Kubernetes' `RuntimeCELCostBudget`).
pub const RUNTIME_CEL_COST_BUDGET: i64 = 10_000_000;
/// The most one rule's estimate, times its node's cardinality, may be when a CRD is
/// written (`StaticEstimatedCostLimit`).
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// The most all rules of a CRD may be estimated to cost together
/// (`StaticEstimatedCRDCostLimit`).
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
/// The longest message a `messageExpression` may produce.
pub const MAX_EVALUATED_MESSAGE_EXPRESSION_SIZE_BYTES: usize = 5 * 1024;

const SUPPORTED_REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Where a node sits, which its rules' compilation depends on.
#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// The node is the root of a resource (the custom resource itself): `self.apiVersion`,
    /// `self.kind`, `self.metadata.name` and `self.metadata.generateName` are visible. Nodes
    /// marked `x-kubernetes-embedded-resource` are resource roots of themselves.
    pub resource_root: bool,
    /// How many times the node can occur in one object: the product of `maxItems` and
    /// `maxProperties` of the lists and maps above it, `None` when one of them has no
    /// bound (then Kubernetes assumes as many as a request could hold). A rule's estimated
    /// cost is multiplied by it.
    pub cardinality: Option<u64>,
    /// When the node is inside a part of the schema where old and new values cannot be
    /// paired (under a list that is not `x-kubernetes-list-type: map`, or a map of
    /// `x-kubernetes-map-type` other than granular/atomic), the path of that part: rules
    /// there may not use `oldSelf`.
    pub uncorrelatable: Option<String>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            resource_root: false,
            cardinality: Some(1),
            uncorrelatable: None,
        }
    }
}

/// The estimated cost of one expression of a CRD, as the CRD total counts it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleCost {
    /// `<node path>.x-kubernetes-validations[i].rule` (or `.messageExpression`).
    pub path: String,
    pub cost: u64,
}

/// The compiled rules of one schema node.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Compiled>,
    decls: Decls,
    root: NodeId,
    /// The node's `type` as Kubernetes prints it in errors about the node.
    type_name: String,
    costs: Vec<RuleCost>,
}

#[derive(Debug)]
struct Compiled {
    rule: Rule,
    program: Program,
    message: Option<Program>,
    uses_old_self: bool,
    optional_old_self: bool,
    /// `fieldPath` as a field path relative to the node (`spec.x[key]`).
    field_path: Option<String>,
    /// The estimate for one evaluation with the schema's bounds.
    static_cost: u64,
    message_cost: u64,
    /// How deep the rule (or its message expression, if deeper) is nested.
    depth: usize,
}

impl Rules {
    /// Compiles a node's `x-kubernetes-validations`, the node not being a resource root,
    /// occurring once per object. See [`Rules::compile_with`].
    pub fn compile(node: &Schema, path: &str) -> Result<Rules, Vec<FieldError>> {
        Rules::compile_with(node, path, &CompileOptions::default())
    }

    /// Compiles a node's `x-kubernetes-validations`. Errors name `path`, the node's place
    /// in the CRD (`spec.versions[0].schema.openAPIV3Schema.properties[spec]`), followed by
    /// `x-kubernetes-validations[i].rule` (or `.message`, `.messageExpression`, `.reason`,
    /// `.fieldPath`, `.optionalOldSelf`), worded as Kubernetes words them.
    pub fn compile_with(
        node: &Schema,
        path: &str,
        opts: &CompileOptions,
    ) -> Result<Rules, Vec<FieldError>> {
        Rules::compile_rules(node, &node.validations, path, opts)
    }

    /// Compiles `validations` against the types of `node` (the rules of an `allOf` branch
    /// apply to the node the branch is in).
    pub(crate) fn compile_rules(
        node: &Schema,
        validations: &[Rule],
        path: &str,
        opts: &CompileOptions,
    ) -> Result<Rules, Vec<FieldError>> {
        let type_name = node.type_.clone().unwrap_or_default();
        if validations.is_empty() {
            return Ok(Rules::empty(type_name));
        }
        let base = if path.is_empty() {
            "x-kubernetes-validations".to_owned()
        } else {
            format!("{path}.x-kubernetes-validations")
        };
        let mut errors = Vec::new();
        for (i, rule) in validations.iter().enumerate() {
            validate_rule_fields(node, rule, &format!("{base}[{i}]"), &mut errors);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let resource_root = opts.resource_root || node.embedded_resource;
        let Some((decls, root)) = Decls::build(node, resource_root) else {
            return Err(vec![FieldError::new(
                ErrorKind::Internal,
                base,
                None,
                "failed to convert to declType for CEL validation rules",
            )]);
        };
        let cardinality = opts
            .cardinality
            .unwrap_or_else(|| MAX_REQUEST_SIZE_BYTES / (decls.node(root).min_size + 1));

        let mut rules = Vec::new();
        let mut costs = Vec::new();
        for (i, rule) in validations.iter().enumerate() {
            let at = format!("{base}[{i}]");
            let optional = rule.optional_old_self == Some(true);
            let vars = rule_vars(&decls, root, optional);
            let static_sizes = |id: NodeId| decls.node(id).max_elements;
            let compiled = compile_deep(&rule.rule, &decls, &static_sizes, &vars);
            let rule_value = rule_json(rule);
            let (program, analysis, mut depth) = match compiled {
                Ok(ok) => ok,
                Err(issues) => {
                    errors.push(FieldError::new(
                        ErrorKind::Invalid,
                        format!("{at}.rule"),
                        Some(rule_value),
                        format!("compilation failed: {issues}"),
                    ));
                    continue;
                }
            };
            let expression_cost = analysis.cost.max.saturating_mul(cardinality);
            costs.push(RuleCost {
                path: format!("{at}.rule"),
                cost: expression_cost,
            });
            if expression_cost > STATIC_ESTIMATED_COST_LIMIT {
                errors.push(FieldError::new(
                    ErrorKind::Forbidden,
                    format!("{at}.rule"),
                    None,
                    cost_error(
                        "estimated rule cost",
                        expression_cost,
                        STATIC_ESTIMATED_COST_LIMIT,
                    ),
                ));
            }
            if !analysis.ty.is_dyn_free_bool() {
                errors.push(FieldError::new(
                    ErrorKind::Invalid,
                    format!("{at}.rule"),
                    Some(rule_value.clone()),
                    "cel expression must evaluate to a bool",
                ));
                continue;
            }
            let uses_old_self = analysis.used.contains("oldSelf");

            let mut message = None;
            let mut message_cost = 0;
            if let Some(expr) = rule.message_expression.as_deref().filter(|m| !m.is_empty()) {
                let vars = rule_vars(&decls, root, optional);
                match compile_deep(expr, &decls, &static_sizes, &vars) {
                    Err(issues) => errors.push(FieldError::new(
                        ErrorKind::Invalid,
                        format!("{at}.messageExpression"),
                        Some(rule_value.clone()),
                        format!("messageExpression compilation failed: {issues}"),
                    )),
                    Ok((_, a, _)) if a.ty != Ty::String => errors.push(FieldError::new(
                        ErrorKind::Invalid,
                        format!("{at}.messageExpression"),
                        Some(rule_value.clone()),
                        "messageExpression must evaluate to a string",
                    )),
                    Ok((program, a, message_depth)) => {
                        depth = depth.max(message_depth);
                        message_cost = a.cost.max;
                        if message_cost > STATIC_ESTIMATED_COST_LIMIT {
                            errors.push(FieldError::new(
                                ErrorKind::Forbidden,
                                format!("{at}.messageExpression"),
                                None,
                                cost_error(
                                    "estimated messageExpression cost",
                                    message_cost,
                                    STATIC_ESTIMATED_COST_LIMIT,
                                ),
                            ));
                        }
                        costs.push(RuleCost {
                            path: format!("{at}.messageExpression"),
                            cost: message_cost,
                        });
                        message = Some(program);
                    }
                }
            }
            if uses_old_self {
                if let Some(within) = &opts.uncorrelatable {
                    errors.push(FieldError::new(
                        ErrorKind::Invalid,
                        format!("{at}.rule"),
                        Some(Value::String(rule.rule.clone())),
                        format!(
                            "oldSelf cannot be used on the uncorrelatable portion of the schema within {within}"
                        ),
                    ));
                }
            } else if let Some(set) = rule.optional_old_self {
                errors.push(FieldError::new(
                    ErrorKind::Invalid,
                    format!("{at}.optionalOldSelf"),
                    Some(Value::Bool(set)),
                    "may not be set if oldSelf is not used in rule",
                ));
            }
            let field_path = rule
                .field_path
                .as_deref()
                .filter(|p| !p.is_empty())
                .and_then(|p| valid_field_path(p, node).ok());
            rules.push(Compiled {
                rule: rule.clone(),
                program,
                message,
                uses_old_self,
                optional_old_self: optional,
                field_path,
                static_cost: analysis.cost.max,
                message_cost,
                depth,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Rules {
            rules,
            decls,
            root,
            type_name,
            costs,
        })
    }

    fn empty(type_name: String) -> Rules {
        Rules {
            rules: Vec::new(),
            decls: Decls::default(),
            root: 0,
            type_name,
            costs: Vec::new(),
        }
    }

    /// Whether the node has no rules to run.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule uses `oldSelf`.
    pub fn has_transition_rules(&self) -> bool {
        self.rules.iter().any(|r| r.uses_old_self)
    }

    /// The estimated cost of each expression, times the node's cardinality for rules, as
    /// the CRD total ([`TotalCost`]) adds them up.
    pub fn costs(&self) -> &[RuleCost] {
        &self.costs
    }

    /// Runs the rules with `self` = `value` and, for transition rules, `oldSelf` = `old`,
    /// with a budget of its own ([`RUNTIME_CEL_COST_BUDGET`]). `field` is the node's place
    /// in the object (`spec`, `spec.items[2]`). See [`Rules::check_with_budget`].
    pub fn check(
        &self,
        field: &str,
        value: &Value,
        old: Option<&Value>,
        out: &mut Vec<FieldError>,
    ) {
        self.check_with_budget(field, value, old, &mut Budget::new(), out);
    }

    /// Runs the rules, charging `budget`, which one object's validation shares across all
    /// its nodes. Rules naming `oldSelf` run only when `old` is `Some`, except those with
    /// `optionalOldSelf: true`, which see `oldSelf` as an optional (`oldSelf.hasValue()`).
    /// A `null` value is not checked (rules on a nullable node see only non-null values).
    /// Once the budget is spent, one error says so and no further rule runs.
    pub fn check_with_budget(
        &self,
        field: &str,
        value: &Value,
        old: Option<&Value>,
        budget: &mut Budget,
        out: &mut Vec<FieldError>,
    ) {
        if self.rules.is_empty() || value.is_null() || budget.stopped {
            return;
        }
        let type_value = || Some(Value::String(self.type_name.clone()));
        let stop = |budget: &mut Budget, out: &mut Vec<FieldError>, detail: String| {
            out.push(FieldError::new(
                ErrorKind::Invalid,
                field,
                type_value(),
                detail,
            ));
            budget.stop();
        };
        if budget.remaining <= 0 {
            stop(
                budget,
                out,
                "validation failed due to running out of cost budget, no further validation rules will be run".to_owned(),
            );
            return;
        }
        let old = old.filter(|o| !o.is_null());
        let self_val = values::to_val(&self.decls, self.root, value);
        let old_val = old.map(|o| values::to_val(&self.decls, self.root, o));
        let self_ref: Result<&dyn Val, &String> = self_val.as_ref().map(|v| &**v);
        let old_ref: Option<Result<&dyn Val, &String>> =
            old_val.as_ref().map(|o| o.as_ref().map(|v| &**v));
        let mut observed: Option<Vec<u64>> = None;
        let old_optional: Option<Box<dyn Val + '_>> =
            if self.rules.iter().any(|r| r.optional_old_self) {
                Some(Box::new(
                    match old.map(|o| values::to_val(&self.decls, self.root, o)) {
                        Some(Ok(v)) => CelOptional::of(v),
                        _ => CelOptional::none(),
                    },
                ))
            } else {
                None
            };

        for compiled in &self.rules {
            if compiled.uses_old_self && old.is_none() && !compiled.optional_old_self {
                continue;
            }
            let rule_text = rule_error_string(&compiled.rule);

            // The charge: the static estimate, or the estimate with this value's sizes
            // when that is lower.
            let mut charge = compiled.static_cost;
            if charge > 100 {
                let sizes = observed.get_or_insert_with(|| {
                    let mut sizes = vec![0u64; self.decls.nodes.len()];
                    values::observe(&self.decls, self.root, value, &mut sizes);
                    if let Some(o) = old {
                        values::observe(&self.decls, self.root, o, &mut sizes);
                    }
                    sizes
                });
                charge = charge.min(self.runtime_cost(compiled, sizes));
            }
            let cancelled = charge > PER_CALL_LIMIT;
            let charge = charge.min(PER_CALL_LIMIT);
            if charge as i64 > budget.remaining {
                stop(budget, out, "validation failed due to running out of cost budget, no further validation rules will be run".to_owned());
                return;
            }
            budget.remaining -= charge as i64;
            if cancelled {
                stop(
                    budget,
                    out,
                    format!(
                        "'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: {rule_text}"
                    ),
                );
                return;
            }

            let activation = RuleActivation {
                self_val: self_ref,
                old_val: old_ref,
                old_optional: old_optional
                    .as_deref()
                    .filter(|_| compiled.optional_old_self),
            };
            let result = with_stack(compiled.depth, || evaluate(&compiled.program, &activation));
            match result {
                Err(e) if e == NO_SUCH_OVERLOAD => out.push(FieldError::new(
                    ErrorKind::Invalid,
                    field,
                    type_value(),
                    format!(
                        "'{e}': call arguments did not match a supported operator, function or macro signature for rule: {rule_text}"
                    ),
                )),
                Err(e) => out.push(FieldError::new(
                    ErrorKind::Invalid,
                    field,
                    type_value(),
                    format!("{e} evaluating rule: {rule_text}"),
                )),
                Ok(cel::Value::Bool(true)) => {}
                Ok(_) => {
                    let at = match &compiled.field_path {
                        Some(p) if field.is_empty() => p.clone(),
                        Some(p) => format!("{field}.{p}"),
                        None => field.to_owned(),
                    };
                    let mut detail = None;
                    if let Some(message) = &compiled.message {
                        let cost = (compiled.message_cost as i64).min(PER_CALL_LIMIT as i64);
                        if cost > budget.remaining {
                            out.push(FieldError::new(
                                ErrorKind::Invalid,
                                at,
                                type_value(),
                                "messageExpression evaluation failed due to running out of cost budget, no further validation rules will be run",
                            ));
                            budget.stop();
                            return;
                        }
                        budget.remaining -= cost;
                        detail = message_text(with_stack(compiled.depth, || {
                            evaluate(message, &activation)
                        }));
                    }
                    let detail = detail.unwrap_or_else(|| rule_message_or_default(&compiled.rule));
                    let bad = match self.decls.node(self.root).kind {
                        decl::Kind::Object(_) | decl::Kind::Map { .. } | decl::Kind::List { .. } => None,
                        _ => Some(value.clone()),
                    };
                    out.push(error_for_reason(compiled.rule.reason.as_deref(), at, bad, detail));
                }
            }
        }
    }

    /// The estimate of `compiled` with the sizes a value has.
    fn runtime_cost(&self, compiled: &Compiled, sizes: &[u64]) -> u64 {
        let lookup = |id: NodeId| sizes.get(id).copied().unwrap_or(0);
        let vars = rule_vars(&self.decls, self.root, compiled.optional_old_self);
        with_stack(compiled.depth, || {
            check::analyze(compiled.program.expression(), &self.decls, &lookup, &vars)
                .cost
                .max
        })
    }
}

impl Ty {
    fn is_dyn_free_bool(&self) -> bool {
        *self == Ty::Bool
    }
}

/// The runtime budget of one object's validation, shared by all its nodes.
#[derive(Debug, Clone)]
pub struct Budget {
    remaining: i64,
    stopped: bool,
}

impl Budget {
    /// A budget of [`RUNTIME_CEL_COST_BUDGET`].
    pub fn new() -> Budget {
        Budget::with_limit(RUNTIME_CEL_COST_BUDGET)
    }

    /// A budget of `limit`.
    pub fn with_limit(limit: i64) -> Budget {
        Budget {
            remaining: limit,
            stopped: false,
        }
    }

    /// What is left.
    pub fn remaining(&self) -> i64 {
        self.remaining
    }

    /// Whether validation ran out of budget (no further rule runs).
    pub fn is_exhausted(&self) -> bool {
        self.stopped
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.remaining = -1;
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

/// The estimated cost of all rules of a CRD, against [`STATIC_ESTIMATED_CRD_COST_LIMIT`].
#[derive(Debug, Clone, Default)]
pub struct TotalCost {
    total: u64,
    most_expensive: Vec<RuleCost>,
}

impl TotalCost {
    /// Adds the costs of a node's rules.
    pub fn observe(&mut self, rules: &Rules) {
        for cost in &rules.costs {
            self.total = self.total.saturating_add(cost.cost);
            if cost.cost < STATIC_ESTIMATED_CRD_COST_LIMIT / 100 {
                continue;
            }
            self.most_expensive.push(cost.clone());
            self.most_expensive
                .sort_by_key(|c| std::cmp::Reverse(c.cost));
            self.most_expensive.truncate(4);
        }
    }

    /// The total so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The errors when the total is over the limit: one per expensive rule, and one for
    /// the schema at `schema_path` (`spec.versions[0].schema.openAPIV3Schema`).
    pub fn errors(&self, schema_path: &str) -> Vec<FieldError> {
        if self.total <= STATIC_ESTIMATED_CRD_COST_LIMIT {
            return Vec::new();
        }
        let mut out: Vec<FieldError> = self
            .most_expensive
            .iter()
            .map(|c| {
                FieldError::new(
                    ErrorKind::Forbidden,
                    c.path.clone(),
                    None,
                    "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
                )
            })
            .collect();
        out.push(FieldError::new(
            ErrorKind::Forbidden,
            schema_path,
            None,
            cost_error(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                self.total,
                STATIC_ESTIMATED_CRD_COST_LIMIT,
            ),
        ));
        out
    }
}

/// A CEL expression over named JSON values, for uses of CEL beyond CRD rules, such as
/// admission policies. [`Expression::compile`] gives every variable the type `dyn`; an
/// [`Env`] may type them by a schema, and adds composited variables.
#[derive(Debug)]
pub struct Expression {
    program: Program,
    vars: Vec<Var>,
    decls: std::sync::Arc<Decls>,
    returns: Ty,
    depth: usize,
    /// The last bound a cost was estimated for, and that cost: objects of one kind are much
    /// alike, so the analysis is seldom redone.
    last_cost: parking_lot::Mutex<Option<(u64, u64)>>,
}

impl Expression {
    /// Parses and checks `source`, which may name `variables`. The error is Kubernetes'
    /// wording of the problems (`ERROR: <input>:1:5: undefined field ...`).
    pub fn compile(source: &str, variables: &[&str]) -> Result<Expression, String> {
        let vars: Vec<Var> = variables
            .iter()
            .map(|name| Var {
                name: (*name).to_owned(),
                ty: Ty::Dyn,
                decl: None,
            })
            .collect();
        Expression::compile_with(source, vars, std::sync::Arc::default())
    }

    pub(crate) fn compile_with(
        source: &str,
        vars: Vec<Var>,
        decls: std::sync::Arc<Decls>,
    ) -> Result<Expression, String> {
        let unknown = |_: NodeId| u64::MAX;
        let (program, analysis, depth) = compile_deep(source, &decls, &unknown, &vars)?;
        Ok(Expression {
            program,
            vars,
            decls,
            returns: analysis.ty,
            depth,
            last_cost: parking_lot::Mutex::new(None),
        })
    }

    /// The CEL type the expression returns, when the checker knows it (`bool`, `string`,
    /// `dyn`, ...).
    pub fn return_type(&self) -> String {
        self.returns.to_string()
    }

    pub(crate) fn returns(&self) -> &Ty {
        &self.returns
    }

    /// The estimated cost of evaluating with `values`: the static estimate, with every
    /// value no larger than the largest string, list or map the values hold.
    pub fn cost(&self, values: &[(&str, &Value)]) -> u64 {
        let bound = values.iter().map(|(_, v)| largest(v)).max().unwrap_or(0);
        self.cost_bounded(bound)
    }

    /// The estimated cost with every value at most `bound` long.
    pub(crate) fn cost_bounded(&self, bound: u64) -> u64 {
        if let Some((b, cost)) = *self.last_cost.lock() {
            if b == bound {
                return cost;
            }
        }
        let cost = self.estimate(bound);
        *self.last_cost.lock() = Some((bound, cost));
        cost
    }

    /// The static estimate with every string, list and map no larger than `bound`.
    fn estimate(&self, bound: u64) -> u64 {
        let sizes = |_: NodeId| bound;
        with_stack(self.depth, || {
            check::analyze_bounded(
                self.program.expression(),
                &self.decls,
                &sizes,
                &self.vars,
                Some(bound),
            )
            .cost
            .max
        })
    }

    /// Evaluates with the variables bound to `values` (unlisted ones are unbound: naming
    /// them is an error). The result is JSON. An evaluation whose [`Expression::cost`]
    /// exceeds [`PER_CALL_LIMIT`] is not run.
    pub fn evaluate(&self, values: &[(&str, &Value)]) -> Result<Value, String> {
        if self.cost(values) > PER_CALL_LIMIT {
            return Err("operation cancelled: actual cost limit exceeded".to_owned());
        }
        let bound: Vec<(String, Box<dyn Val + '_>)> = values
            .iter()
            .filter(|(name, _)| self.vars.iter().any(|v| v.name == *name))
            .map(|(name, v)| ((*name).to_owned(), values::dyn_val(v)))
            .collect();
        let resolver = Bound(bound);
        let mut ctx = Context::with_env(library::env());
        ctx.set_variable_resolver(&resolver);
        let result =
            with_stack(self.depth, || self.program.execute(&ctx)).map_err(|e| runtime_error(&e))?;
        values::to_json(&result)
    }

    /// Evaluates to a bool; any other result is an error.
    pub fn evaluate_bool(&self, values: &[(&str, &Value)]) -> Result<bool, String> {
        match self.evaluate(values)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expected a bool result, got {other}")),
        }
    }

    /// Runs the program against `resolver`, on a stack deep enough.
    pub(crate) fn execute(
        &self,
        resolver: &dyn VariableResolver,
    ) -> Result<cel::Value, ExecutionError> {
        let mut ctx = Context::with_env(library::env());
        ctx.set_variable_resolver(resolver);
        with_stack(self.depth, || self.program.execute(&ctx))
    }
}

/// The longest string, list or map within `v`.
fn largest(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(largest).fold(items.len() as u64, u64::max),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| largest(v).max(k.len() as u64))
            .fold(map.len() as u64, u64::max),
        _ => 1,
    }
}

struct Bound<'v>(Vec<(String, Box<dyn Val + 'v>)>);

impl VariableResolver for Bound<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.0
            .iter()
            .find(|(n, _)| n == variable)
            .map(|(_, v)| CowVal::Borrowed(&**v as &dyn Val))
    }
}

/// `self` and `oldSelf` for one evaluation.
struct RuleActivation<'a> {
    self_val: Result<&'a dyn Val, &'a String>,
    old_val: Option<Result<&'a dyn Val, &'a String>>,
    /// `oldSelf` as an optional, for rules with `optionalOldSelf`; built once per check,
    /// as a rule may name `oldSelf` in a loop.
    old_optional: Option<&'a dyn Val>,
}

impl VariableResolver for RuleActivation<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            "self" => self.self_val.ok().map(CowVal::Borrowed),
            "oldSelf" => match (self.old_optional, self.old_val) {
                (Some(optional), _) => Some(CowVal::Borrowed(optional)),
                (None, Some(Ok(v))) => Some(CowVal::Borrowed(v)),
                _ => None,
            },
            _ => None,
        }
    }
}

const NO_SUCH_OVERLOAD: &str = "no such overload";

/// Runs `program`; the error worded as cel-go words it.
fn evaluate(program: &Program, activation: &RuleActivation<'_>) -> Result<cel::Value, String> {
    if let Err(e) = activation.self_val {
        return Err(e.clone());
    }
    if let Some(Err(e)) = activation.old_val {
        return Err(e.clone());
    }
    let mut ctx = Context::with_env(library::env());
    ctx.set_variable_resolver(activation);
    program.execute(&ctx).map_err(|e| runtime_error(&e))
}

pub(crate) fn runtime_error(e: &ExecutionError) -> String {
    match e {
        ExecutionError::NoSuchKey(k) => format!("no such key: {k}"),
        ExecutionError::IndexOutOfBounds(i) => match i {
            cel::Value::Int(i) => format!("index out of bounds: {i}"),
            cel::Value::UInt(i) => format!("index out of bounds: {i}"),
            other => format!("index out of bounds: {other:?}"),
        },
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "modulus by zero".to_owned(),
        ExecutionError::Overflow(..) => "integer overflow".to_owned(),
        ExecutionError::NoSuchOverload(_)
        | ExecutionError::UnsupportedBinaryOperator(..)
        | ExecutionError::ValuesNotComparable(..)
        | ExecutionError::UnexpectedType { .. }
        | ExecutionError::UnsupportedTargetType { .. }
        | ExecutionError::NotSupportedAsMethod { .. }
        | ExecutionError::UnsupportedIndex(..) => NO_SUCH_OVERLOAD.to_owned(),
        ExecutionError::UndeclaredReference(name) => format!("no such attribute: {name}"),
        ExecutionError::FunctionError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The message a `messageExpression` evaluated to, or `None` to fall back on `message`
/// (Kubernetes logs the reason and uses the static message).
fn message_text(result: Result<cel::Value, String>) -> Option<String> {
    let cel::Value::String(s) = result.ok()? else {
        return None;
    };
    let trimmed = s.trim();
    if trimmed.is_empty()
        || trimmed.len() > MAX_EVALUATED_MESSAGE_EXPRESSION_SIZE_BYTES
        || trimmed.contains('\n')
    {
        return None;
    }
    Some(trimmed.to_owned())
}

fn rule_message_or_default(rule: &Rule) -> String {
    match rule
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        Some(m) => m.to_owned(),
        None => format!("failed rule: {}", rule_error_string(rule)),
    }
}

fn rule_error_string(rule: &Rule) -> String {
    match rule
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        Some(m) => m.to_owned(),
        None => rule.rule.trim().to_owned(),
    }
}

fn error_for_reason(
    reason: Option<&str>,
    field: String,
    value: Option<Value>,
    detail: String,
) -> FieldError {
    match reason {
        Some("FieldValueForbidden") => FieldError::new(ErrorKind::Forbidden, field, None, detail),
        Some("FieldValueRequired") => FieldError::new(ErrorKind::Required, field, None, detail),
        Some("FieldValueDuplicate") => FieldError::new(ErrorKind::Duplicate, field, value, ""),
        _ => FieldError::new(ErrorKind::Invalid, field, value, detail),
    }
}

/// `self` (and `oldSelf`) typed by the node's schema.
fn rule_vars(decls: &Decls, root: NodeId, optional_old_self: bool) -> Vec<Var> {
    let ty = check::node_ty(decls, root);
    let old_ty = if optional_old_self {
        Ty::Optional(Box::new(ty.clone()))
    } else {
        ty.clone()
    };
    vec![
        Var {
            name: "self".to_owned(),
            ty,
            decl: Some(root),
        },
        Var {
            name: "oldSelf".to_owned(),
            ty: old_ty,
            decl: if optional_old_self { None } else { Some(root) },
        },
    ]
}

/// The longest expression cel-go parses, in code points.
const MAX_EXPRESSION_CODE_POINTS: usize = 100_000;
/// The deepest expression accepted. cel-go refuses parse trees nested beyond 250; the AST
/// here is bounded the same, so that checking and evaluating it (both recursive) fit the
/// stack of any thread.
const MAX_EXPRESSION_DEPTH: usize = 250;
/// The stack parsing runs on: the parser recurses once per nesting level, and a rule is
/// request input.
const PARSE_STACK_BYTES: usize = 128 << 20;
/// The stack checking or evaluating an expression may take per level of nesting (measured
/// in unoptimized builds, with room to spare), and beyond that.
const STACK_PER_LEVEL: usize = 24 << 10;
const STACK_MARGIN: usize = 512 << 10;

/// Runs `f`, which recurses through an expression `depth` deep, on a stack large enough:
/// the current one when it has room, a fresh one otherwise.
fn with_stack<R>(depth: usize, f: impl FnOnce() -> R) -> R {
    let need = depth * STACK_PER_LEVEL + STACK_MARGIN;
    stacker::maybe_grow(need, need * 2, f)
}

/// Parses and checks `source`, returning how deep it is nested too; the error is the
/// problems as cel-go lists them.
fn compile_deep(
    source: &str,
    decls: &Decls,
    sizes: &dyn Fn(NodeId) -> u64,
    vars: &[Var],
) -> Result<(Program, Analysis, usize), String> {
    let size = source.chars().count();
    if size > MAX_EXPRESSION_CODE_POINTS {
        return Err(format!(
            "ERROR: <input>:-1:0: expression code point size exceeds limit: size: {size}, limit {MAX_EXPRESSION_CODE_POINTS}"
        ));
    }
    let env = library::env();
    // Parsed, and if too deep also dropped (dropping recurses too), on a stack of its own.
    let program = stacker::grow(PARSE_STACK_BYTES, || {
        let program = env.compile(source).map_err(|errs| {
            let issues: Vec<(usize, usize, String)> = errs
                .errors
                .iter()
                .map(|e| {
                    let line = usize::try_from(e.pos.0).unwrap_or(1).max(1);
                    let col = usize::try_from(e.pos.1).unwrap_or(1).max(1) - 1;
                    (line, col, e.msg.clone())
                })
                .collect();
            format_issues(source, issues)
        })?;
        let (depth, deepest) = depth(program.expression());
        if depth > MAX_EXPRESSION_DEPTH {
            let offset = program
                .source_info()
                .offset_for(deepest)
                .map_or(0, |(start, _)| start as usize);
            let (line, col) = location(source, offset);
            return Err(format_issues(
                source,
                vec![(
                    line,
                    col,
                    format!("expression recursion limit exceeded: {MAX_EXPRESSION_DEPTH}"),
                )],
            ));
        }
        Ok((program, depth))
    })?;
    let (program, depth) = program;
    let analysis = with_stack(depth, || {
        check::analyze(program.expression(), decls, sizes, vars)
    });
    if !analysis.errors.is_empty() {
        let issues = analysis
            .errors
            .iter()
            .map(|(id, msg)| {
                let offset = program
                    .source_info()
                    .offset_for(*id)
                    .map_or(0, |(start, _)| start as usize);
                let (line, col) = location(source, offset);
                (line, col, msg.clone())
            })
            .collect();
        return Err(format_issues(source, issues));
    }
    Ok((program, analysis, depth))
}

/// How deep an expression is nested, and its deepest node; found without recursion.
fn depth(root: &cel::IdedExpr) -> (usize, u64) {
    use cel::common::ast::{EntryExpr, Expr};
    let mut deepest = (1, root.id);
    let mut stack = vec![(root, 1usize)];
    while let Some((e, depth)) = stack.pop() {
        if depth > deepest.0 {
            deepest = (depth, e.id);
        }
        let next = depth + 1;
        match &e.expr {
            Expr::Call(c) => {
                stack.extend(c.target.iter().map(|t| (&**t, next)));
                stack.extend(c.args.iter().map(|a| (a, next)));
            }
            Expr::Select(sel) => stack.push((&sel.operand, next)),
            Expr::List(l) => stack.extend(l.elements.iter().map(|x| (x, next))),
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        stack.push((&me.key, next));
                        stack.push((&me.value, next));
                    }
                }
            }
            Expr::Struct(st) => {
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        stack.push((&f.value, next));
                    }
                }
            }
            Expr::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    stack.push((part, next));
                }
            }
            Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        }
    }
    deepest
}

/// The 1-based line and 0-based column (in characters) of a byte offset.
fn location(source: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut col = 0;
    for (i, c) in source.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            col = 0;
        } else {
            col += 1;
        }
    }
    (line, col)
}

/// cel-go's `Errors.ToDisplayString`: each problem with its place and the source line.
fn format_issues(source: &str, mut issues: Vec<(usize, usize, String)>) -> String {
    issues.sort_by_key(|(line, col, _)| (*line, *col));
    let mut out = String::new();
    for (i, (line, col, msg)) in issues.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = write!(out, "ERROR: <input>:{line}:{}: {msg}", col + 1);
        if let Some(snippet) = source.lines().nth(line - 1) {
            let snippet = snippet.replace('\t', " ");
            let _ = write!(out, "\n | {snippet}\n | ");
            for c in snippet.chars().take(*col) {
                out.push(if c.len_utf8() > 1 { '\u{ff0e}' } else { '.' });
            }
            out.push('^');
        }
    }
    out
}

fn cost_error(name: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{name} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// A rule as Kubernetes prints it in an error: its JSON, empty fields left out.
fn rule_json(rule: &Rule) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("rule".to_owned(), Value::String(rule.rule.clone()));
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            m.insert(k.to_owned(), Value::String(v.clone()));
        }
    };
    opt("message", &rule.message);
    opt("messageExpression", &rule.message_expression);
    opt("reason", &rule.reason);
    opt("fieldPath", &rule.field_path);
    if let Some(b) = rule.optional_old_self {
        m.insert("optionalOldSelf".to_owned(), Value::Bool(b));
    }
    Value::Object(m)
}

/// The checks a CRD write makes on a rule's fields before compiling it.
fn validate_rule_fields(node: &Schema, rule: &Rule, at: &str, errors: &mut Vec<FieldError>) {
    let trimmed_rule = rule.rule.trim();
    let message = rule.message.as_deref().unwrap_or("");
    let trimmed_msg = message.trim();
    let newline = |s: &str| s.contains(['\n', '\r']);
    if trimmed_rule.is_empty() {
        errors.push(FieldError::new(
            ErrorKind::Required,
            format!("{at}.rule"),
            None,
            "rule is not specified",
        ));
    } else if !message.is_empty() && trimmed_msg.is_empty() {
        errors.push(FieldError::new(
            ErrorKind::Invalid,
            format!("{at}.message"),
            Some(Value::String(message.to_owned())),
            "must be non-empty if specified",
        ));
    } else if newline(trimmed_msg) {
        errors.push(FieldError::new(
            ErrorKind::Invalid,
            format!("{at}.message"),
            Some(Value::String(message.to_owned())),
            "must not contain line breaks",
        ));
    } else if newline(trimmed_rule) && trimmed_msg.is_empty() {
        errors.push(FieldError::new(
            ErrorKind::Required,
            format!("{at}.message"),
            None,
            "message must be specified if rule contains line breaks",
        ));
    }
    if let Some(expr) = &rule.message_expression {
        if !expr.is_empty() && expr.trim().is_empty() {
            errors.push(FieldError::new(
                ErrorKind::Required,
                format!("{at}.messageExpression"),
                None,
                "messageExpression must be non-empty if specified",
            ));
        }
    }
    if let Some(reason) = &rule.reason {
        if !SUPPORTED_REASONS.contains(&reason.as_str()) {
            let supported = SUPPORTED_REASONS
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            errors.push(FieldError::new(
                ErrorKind::NotSupported,
                format!("{at}.reason"),
                Some(Value::String(reason.clone())),
                format!("supported values: {supported}"),
            ));
        }
    }
    if let Some(path) = &rule.field_path {
        if !path.is_empty() && path.trim().is_empty() {
            errors.push(FieldError::new(
                ErrorKind::Invalid,
                format!("{at}.fieldPath"),
                Some(Value::String(path.clone())),
                "must be non-empty if specified",
            ));
        }
        if newline(path) {
            errors.push(FieldError::new(
                ErrorKind::Invalid,
                format!("{at}.fieldPath"),
                Some(Value::String(path.clone())),
                "must not contain line breaks",
            ));
        }
        if !path.is_empty() && valid_field_path(path, node).is_err() {
            errors.push(FieldError::new(
                ErrorKind::Invalid,
                format!("{at}.fieldPath"),
                Some(Value::String(path.clone())),
                "must be a valid path",
            ));
        }
    }
}

/// Checks a rule's `fieldPath` (`.spec.x`, `.labels['a.b']`) against the node's schema
/// and returns it as a field path (`spec.x`, `labels[a.b]`), as Kubernetes'
/// `ValidFieldPath` does.
pub fn valid_field_path(path: &str, node: &Schema) -> Result<String, String> {
    let mut out = String::new();
    let mut schema = node;
    let mut rest = path;
    let step = |name: &str, schema: &mut &Schema, out: &mut String| -> Result<(), String> {
        if !schema.properties.is_empty() {
            let next = schema
                .properties
                .get(name)
                .ok_or_else(|| "does not refer to a valid field".to_owned())?;
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(name);
            *schema = next;
        } else if let Some(values) = schema.value_schema() {
            let _ = write!(out, "[{name}]");
            *schema = values;
        } else {
            return Err("does not refer to a valid field".to_owned());
        }
        Ok(())
    };
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[', ']']).unwrap_or(after.len());
            if end == 0 {
                return Err("unexpected end of JSON path".to_owned());
            }
            step(&after[..end], &mut schema, &mut out)?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(quoted) = after.strip_prefix('\'') else {
                return Err(format!("expected single quoted string but got {after}"));
            };
            let mut end = None;
            let bytes = quoted.as_bytes();
            for i in 0..bytes.len() {
                if bytes[i] == b'\'' && (i == 0 || bytes[i - 1] != b'\\') {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or_else(|| "unexpected end of JSON path".to_owned())?;
            let key = unescape_single_quoted(&quoted[..end])?;
            step(&key, &mut schema, &mut out)?;
            rest = quoted[end + 1..]
                .strip_prefix(']')
                .ok_or_else(|| "expected ] at end of key".to_owned())?;
        } else {
            return Err(format!("expected [ or . but got: {rest}"));
        }
    }
    Ok(out)
}

fn unescape_single_quoted(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('a') => '\u{7}',
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some('v') => '\u{b}',
            Some('\'') => '\'',
            Some('\\') => '\\',
            other => {
                return Err(format!(
                    "invalid string literal: invalid escape char \\{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
