//! An environment for CEL expressions beyond a CRD's rules, as Kubernetes' admission
//! policies compile them: named inputs (`object`, `request`, `params`, ...), each either
//! `dyn` or typed by a schema, and composited variables (`variables.NAME`), each an
//! expression over the inputs and the variables defined before it, evaluated at most once
//! per [`Activation`] and only when an expression names it (Kubernetes'
//! `CompositedCompiler` and its lazy `variables` map).
//!
//! Typed inputs are checked as a CRD's `self` is: a field the schema does not declare is
//! "undefined field", and the values are read through the schema (a `date-time` string is
//! a timestamp). A `dyn` input takes any JSON.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use cel::common::types::{CelMap, CelMapKey, CelNull};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use serde_json::Value;

use super::check::{node_ty, Ty, Var};
use super::decl::{Decls, NodeId};
use super::{largest, runtime_error, values, Expression, PER_CALL_LIMIT};
use crate::structural::Schema;

/// What an input of an [`Env`] holds, as far as the checker knows.
#[derive(Debug, Clone)]
pub enum InputType {
    /// Anything (`dyn`): JSON as it comes, whole numbers as ints.
    Dyn,
    /// A value of this schema. Nodes CEL cannot see (no `type`) are left out of it.
    Schema(Box<Schema>),
}

/// The inputs and composited variables expressions may name.
#[derive(Debug, Clone)]
pub struct Env {
    decls: Arc<Decls>,
    /// Each input's name and, when typed, its schema node.
    inputs: Vec<(String, Option<NodeId>)>,
    vars: Vec<Var>,
    /// The name composited variables are fields of (`variables`), if any.
    record: Option<String>,
}

impl Env {
    /// An environment of `inputs`, without composited variables.
    pub fn new(inputs: Vec<(String, InputType)>) -> Env {
        let mut decls = Decls {
            untyped_as_dyn: true,
            ..Decls::default()
        };
        let mut vars = Vec::new();
        let mut named = Vec::new();
        for (name, ty) in inputs {
            let node = match ty {
                InputType::Dyn => None,
                InputType::Schema(s) => decls.add_root(&s),
            };
            vars.push(Var {
                name: name.clone(),
                ty: node.map_or(Ty::Dyn, |n| node_ty(&decls, n)),
                decl: node,
            });
            named.push((name, node));
        }
        Env {
            decls: Arc::new(decls),
            inputs: named,
            vars,
            record: None,
        }
    }

    /// The same environment with composited variables named as fields of `record`
    /// (`variables`): none yet, so that `variables.x` is "undefined field 'x'" until `x` is
    /// added.
    pub fn with_record(mut self, record: &str) -> Env {
        self.vars.push(Var {
            name: format!("{record}."),
            ty: Ty::Dyn,
            decl: None,
        });
        self.record = Some(record.to_owned());
        self
    }

    /// Parses and checks `source` against the inputs and the variables added so far. The
    /// error is cel-go's wording of the problems (`ERROR: <input>:1:5: ...`).
    pub fn compile(&self, source: &str) -> Result<Expression, String> {
        Expression::compile_with(source, self.vars.clone(), self.decls.clone())
    }

    /// Declares the composited variable `name`, of the type `compiled` returns (`dyn` when
    /// it did not compile: naming it is then an error at evaluation, as in Kubernetes).
    /// Without a record (see [`Env::with_record`]) it does nothing.
    pub fn add_variable(&mut self, name: &str, compiled: Option<&Expression>) {
        let Some(record) = &self.record else {
            return;
        };
        self.vars.push(Var {
            name: format!("{record}.{name}"),
            ty: compiled.map_or(Ty::Dyn, |e| e.returns().clone()),
            decl: None,
        });
    }
}

/// A composited variable: its name and what compiling its expression gave.
#[derive(Debug)]
pub struct Composited {
    /// The name (`variables.NAME`).
    pub name: String,
    /// The expression, or why it did not compile.
    pub expression: Result<Expression, String>,
}

/// The values of one evaluation of an [`Env`]'s expressions: the inputs, converted once,
/// and the composited variables, each evaluated at most once and only when named.
pub struct Activation<'a> {
    values: Vec<(&'a str, Box<dyn Val + 'a>)>,
    record: Option<&'a str>,
    composited: &'a [Composited],
    cache: Vec<OnceLock<Result<Box<dyn Val + 'a>, String>>>,
    /// Which variables are being evaluated now: a variable that (through a mismatched
    /// environment) named itself fails instead of waiting on itself.
    busy: Vec<std::sync::atomic::AtomicBool>,
    /// Why variables named by the expression being evaluated failed, latest last: the
    /// interpreter only sees them as missing.
    failures: parking_lot::Mutex<Vec<String>>,
    /// The largest string, list or map among the inputs, which bounds the cost estimates.
    bound: u64,
    spent: AtomicU64,
}

impl<'a> Activation<'a> {
    /// Binds the inputs of `env` to `values` (a missing input is unbound: naming it is an
    /// error; `null` is null whatever the input's type) and the composited variables to
    /// `composited`, which must have been compiled in `env` in order. The error is a typed
    /// input's value not fitting its schema.
    pub fn new(
        env: &'a Env,
        values: &[(&'a str, &'a Value)],
        composited: &'a [Composited],
    ) -> Result<Activation<'a>, String> {
        let mut bound_values = Vec::with_capacity(values.len());
        let mut bound = 0;
        for (name, node) in &env.inputs {
            let Some((_, v)) = values.iter().find(|(n, _)| n == name) else {
                continue;
            };
            bound = bound.max(largest(v));
            let val: Box<dyn Val + 'a> = match (node, v) {
                (_, Value::Null) => Box::new(CelNull),
                (Some(node), v) => values::to_val(&env.decls, *node, v)?,
                (None, v) => values::dyn_val(v),
            };
            bound_values.push((name.as_str(), val));
        }
        Ok(Activation {
            values: bound_values,
            record: env.record.as_deref(),
            composited,
            cache: composited.iter().map(|_| OnceLock::new()).collect(),
            busy: composited
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            failures: parking_lot::Mutex::new(Vec::new()),
            bound,
            spent: AtomicU64::new(0),
        })
    }

    /// Evaluates `expr` (compiled in this activation's environment) to JSON. An expression
    /// whose estimated cost on these values exceeds [`PER_CALL_LIMIT`] is not run. Errors
    /// are worded as cel-go's; one from a composited variable says so (`composited variable
    /// "x" fails to evaluate: ...`).
    pub fn evaluate(&self, expr: &Expression) -> Result<Value, String> {
        let result = self.run(expr)?;
        values::to_json(&result)
    }

    /// What the estimates of everything evaluated so far add up to, composited variables
    /// included once each: what a budget is charged.
    pub fn spent(&self) -> u64 {
        self.spent.load(Ordering::Relaxed)
    }

    fn run(&self, expr: &Expression) -> Result<cel::Value, String> {
        let cost = expr.cost_bounded(self.bound);
        self.spent
            .fetch_add(cost.min(PER_CALL_LIMIT), Ordering::Relaxed);
        if cost > PER_CALL_LIMIT {
            return Err("operation cancelled: actual cost limit exceeded".to_owned());
        }
        self.failures.lock().clear();
        let result = expr.execute(self);
        result.map_err(|e| {
            self.failures
                .lock()
                .pop()
                .unwrap_or_else(|| runtime_error(&e))
        })
    }

    fn variable(&self, i: usize) -> Result<Box<dyn Val + 'a>, String> {
        let c = &self.composited[i];
        let expr = c
            .expression
            .as_ref()
            .map_err(|e| format!("composited variable {:?} fails to compile: {e}", c.name))?;
        if self.busy[i].swap(true, Ordering::AcqRel) {
            return Err(format!(
                "composited variable {:?} fails to evaluate: it refers to itself",
                c.name
            ));
        }
        let outer = std::mem::take(&mut *self.failures.lock());
        let result = self.run(expr);
        *self.failures.lock() = outer;
        self.busy[i].store(false, Ordering::Release);
        let value = result
            .map_err(|e| format!("composited variable {:?} fails to evaluate: {e}", c.name))?;
        Box::<dyn Val>::try_from(value)
            .map_err(|e| format!("composited variable {:?} fails to evaluate: {e}", c.name))
    }

    /// Variable `i`, evaluated on first use. A failure is noted as the reason the
    /// expression being evaluated fails, when `blame` (it named the variable).
    fn lookup(&self, i: usize, blame: bool) -> Option<&(dyn Val + 'a)> {
        match self.cache[i].get_or_init(|| self.variable(i)) {
            Ok(v) => Some(&**v),
            Err(e) => {
                if blame {
                    self.failures.lock().push(e.clone());
                }
                None
            }
        }
    }
}

impl VariableResolver for Activation<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some(record) = self.record {
            if let Some(field) = variable
                .strip_prefix(record)
                .and_then(|r| r.strip_prefix('.'))
            {
                let i = self.composited.iter().position(|c| c.name == field)?;
                return self
                    .lookup(i, true)
                    .map(|v| CowVal::Borrowed(v as &dyn Val));
            }
            if variable == record {
                // The record as a whole (`has(variables.x)`, or passed along): every
                // variable that evaluates.
                let mut map = std::collections::HashMap::new();
                for (i, c) in self.composited.iter().enumerate() {
                    if let Some(v) = self.lookup(i, false) {
                        map.insert(CelMapKey::from(c.name.as_str()), v.clone_as_boxed());
                    }
                }
                return Some(CowVal::owned(CelMap::from(map)));
            }
        }
        self.values
            .iter()
            .find(|(n, _)| *n == variable)
            .map(|(_, v)| CowVal::Borrowed(&**v as &dyn Val))
    }
}
