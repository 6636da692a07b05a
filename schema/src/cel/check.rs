//! The static pass over a parsed expression, as Kubernetes runs cel-go's checker and cost
//! estimator on every rule before it accepts a CRD: the type of every subexpression (so
//! that `self.nosuch` is "undefined field 'nosuch'", `self.count == 'x'` has no matching
//! overload, and a rule must be a bool), and the cost of the worst case.
//!
//! The cost model is cel-go's (`checker/cost.go`) with Kubernetes' library estimates
//! (`k8s.io/apiserver/pkg/cel/library/cost.go`): 1 per variable, field selection and
//! function call, 0 per constant, 10 per list and 30 per map literal, a loop costing the
//! size of what it ranges over times its body; string functions cost a tenth of the
//! string's length, regular expressions a quarter of the pattern's length more. Sizes come
//! from the schema ([`super::decl`]) or, when estimating at run time, from the value.
//!
//! The checker is an honest subset of cel-go's: it knows the functions Skiff's environment
//! provides, treats `dyn` (int-or-string values, `dyn()`) as anything, and where cel-go
//! would infer a type parameter it may settle for `dyn`.

use std::collections::BTreeSet;
use std::fmt;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use super::decl::{Decls, Kind, NodeId};

/// A CEL type, as the checker sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ty {
    Dyn,
    /// A subexpression that already failed to check: no further errors about it.
    Error,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    TypeVal,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// An object of the schema, by its node.
    Object(NodeId),
    Optional(Box<Ty>),
    Quantity,
    Url,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Dyn => f.write_str("dyn"),
            Ty::Error => f.write_str("*error*"),
            Ty::Null => f.write_str("null_type"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Duration => f.write_str("google.protobuf.Duration"),
            Ty::Timestamp => f.write_str("google.protobuf.Timestamp"),
            Ty::TypeVal => f.write_str("type"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
            Ty::Object(_) => f.write_str("object"),
            Ty::Optional(t) => write!(f, "optional_type({t})"),
            Ty::Quantity => f.write_str("kubernetes.Quantity"),
            Ty::Url => f.write_str("kubernetes.URL"),
        }
    }
}

impl Ty {
    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn | Ty::Error)
    }

    fn is_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }

    fn is_scalar(&self) -> bool {
        match self {
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint => true,
            Ty::Optional(t) => t.is_scalar(),
            _ => false,
        }
    }

    fn elem(&self) -> Ty {
        match self {
            Ty::List(t) => (**t).clone(),
            _ => Ty::Dyn,
        }
    }
}

/// The CEL type of the values of schema node `id`.
pub(crate) fn node_ty(decls: &Decls, id: NodeId) -> Ty {
    match &decls.node(id).kind {
        Kind::Object(_) => Ty::Object(id),
        Kind::List { elem, .. } => Ty::List(Box::new(node_ty(decls, *elem))),
        Kind::Map { elem } => Ty::Map(Box::new(Ty::String), Box::new(node_ty(decls, *elem))),
        Kind::String => Ty::String,
        Kind::Bytes => Ty::Bytes,
        Kind::Int => Ty::Int,
        Kind::Double => Ty::Double,
        Kind::Bool => Ty::Bool,
        Kind::Duration => Ty::Duration,
        Kind::Timestamp => Ty::Timestamp,
        Kind::IntOrString | Kind::Any => Ty::Dyn,
    }
}

/// Whether a value of type `b` may stand where `a` is expected.
fn assignable(a: &Ty, b: &Ty) -> bool {
    match (a, b) {
        _ if a.is_dyn() || b.is_dyn() => true,
        (Ty::List(x), Ty::List(y)) => assignable(x, y),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => assignable(k1, k2) && assignable(v1, v2),
        (Ty::Optional(x), Ty::Optional(y)) => assignable(x, y),
        (Ty::Null, other) | (other, Ty::Null) => !matches!(
            other,
            Ty::Bool | Ty::Int | Ty::Uint | Ty::Double | Ty::String | Ty::Bytes
        ),
        _ => a == b,
    }
}

/// The type both `a` and `b` fit, where one exists.
fn join(a: &Ty, b: &Ty) -> Option<Ty> {
    match (a, b) {
        _ if a == b => Some(a.clone()),
        (Ty::Error, t) | (t, Ty::Error) => Some(t.clone()),
        (Ty::Dyn, _) | (_, Ty::Dyn) => Some(Ty::Dyn),
        (Ty::List(x), Ty::List(y)) => Some(Ty::List(Box::new(join_elem(x, y)?))),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => Some(Ty::Map(
            Box::new(join_elem(k1, k2)?),
            Box::new(join_elem(v1, v2)?),
        )),
        (Ty::Optional(x), Ty::Optional(y)) => Some(Ty::Optional(Box::new(join_elem(x, y)?))),
        (Ty::Null, t) | (t, Ty::Null) if assignable(t, &Ty::Null) => Some(t.clone()),
        _ => None,
    }
}

/// As [`join`], but an element type known on one side wins over `dyn` (an empty literal).
fn join_elem(a: &Ty, b: &Ty) -> Option<Ty> {
    match (a, b) {
        (Ty::Dyn, t) | (t, Ty::Dyn) => Some(t.clone()),
        _ => join(a, b),
    }
}

/// A `[min, max]` estimate of a size or a cost, saturating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Est {
    pub min: u64,
    pub max: u64,
}

impl Est {
    pub const UNKNOWN: Est = Est {
        min: 0,
        max: u64::MAX,
    };

    pub fn fixed(n: u64) -> Est {
        Est { min: n, max: n }
    }

    fn add(self, o: Est) -> Est {
        Est {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }

    fn mul(self, o: Est) -> Est {
        Est {
            min: self.min.saturating_mul(o.min),
            max: self.max.saturating_mul(o.max),
        }
    }

    fn factor(self, f: f64) -> Est {
        Est {
            min: mul_factor(self.min, f),
            max: mul_factor(self.max, f),
        }
    }

    fn union(self, o: Est) -> Est {
        Est {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// `x * f` rounded up, saturating at `u64::MAX`.
fn mul_factor(x: u64, f: f64) -> u64 {
    let v = (x as f64 * f).ceil();
    if v >= 18_446_744_073_709_551_615.0 {
        u64::MAX
    } else {
        v as u64
    }
}

const STRING_TRAVERSAL: f64 = 0.1;
const REGEX_LENGTH: f64 = 0.25;
const LIST_CREATE: u64 = 10;
const MAP_CREATE: u64 = 30;

/// The entries of a list or map built in the expression: their sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    key: Est,
    val: Est,
}

/// What the pass knows of one subexpression.
#[derive(Debug, Clone)]
struct Info {
    ty: Ty,
    /// The schema node the value is, when it comes straight from a variable.
    decl: Option<NodeId>,
    /// A size worked out from the expression itself.
    size: Option<Est>,
    entry: Option<Entry>,
    cost: Est,
}

impl Info {
    fn of(ty: Ty, cost: Est) -> Info {
        Info {
            ty,
            decl: None,
            size: None,
            entry: None,
            cost,
        }
    }
}

/// A variable an expression may name. A name with a dot (`variables.foo`) is a field of a
/// record of variables, which a variable named with a trailing dot (`variables.`) declares.
#[derive(Debug, Clone)]
pub(crate) struct Var {
    pub name: String,
    pub ty: Ty,
    /// The schema node it holds, for sizes.
    pub decl: Option<NodeId>,
}

/// The outcome of the pass.
#[derive(Debug)]
pub(crate) struct Analysis {
    pub ty: Ty,
    pub cost: Est,
    /// Problems, with the id of the subexpression they are at.
    pub errors: Vec<(u64, String)>,
    /// The variables the expression names.
    pub used: BTreeSet<String>,
}

/// Checks and estimates `expr`, naming `vars`; `sizes` gives the most elements each schema
/// node can hold.
pub(crate) fn analyze(
    expr: &IdedExpr,
    decls: &Decls,
    sizes: &dyn Fn(NodeId) -> u64,
    vars: &[Var],
) -> Analysis {
    analyze_bounded(expr, decls, sizes, vars, None)
}

/// As [`analyze`], with every `dyn` value known to be at most `dyn_bound` long (the
/// largest string, list or map of the values the variables hold).
pub(crate) fn analyze_bounded(
    expr: &IdedExpr,
    decls: &Decls,
    sizes: &dyn Fn(NodeId) -> u64,
    vars: &[Var],
    dyn_bound: Option<u64>,
) -> Analysis {
    let mut a = Analyzer {
        dyn_bound,
        root: vars.iter().find(|v| v.name == "self").and_then(|v| v.decl),
        decls,
        sizes,
        vars,
        locals: Vec::new(),
        errors: Vec::new(),
        used: BTreeSet::new(),
    };
    let info = a.visit(expr);
    Analysis {
        ty: info.ty,
        cost: info.cost,
        errors: a.errors,
        used: a.used,
    }
}

struct Analyzer<'a> {
    dyn_bound: Option<u64>,
    root: Option<NodeId>,
    decls: &'a Decls,
    sizes: &'a dyn Fn(NodeId) -> u64,
    vars: &'a [Var],
    locals: Vec<(String, Info)>,
    errors: Vec<(u64, String)>,
    used: BTreeSet<String>,
}

/// Namespaces of global functions, which the parser hands over as a member call on an
/// identifier (`optional.of(x)` calls `of` on `optional`).
const NAMESPACES: &[&str] = &["optional", "sets", "strings", "lists"];

impl Analyzer<'_> {
    fn error(&mut self, id: u64, msg: String) -> Info {
        self.errors.push((id, msg));
        Info::of(Ty::Error, Est::default())
    }

    fn size_of(&self, i: &Info) -> Est {
        if let Some(s) = i.size {
            return s;
        }
        if let Some(d) = i.decl {
            return Est {
                min: 0,
                max: (self.sizes)(d),
            };
        }
        if i.ty.is_scalar() {
            return Est::fixed(1);
        }
        // Estimating for given values, a value of unknown size (`dyn`, or a string made by
        // a conversion such as `string(x)`) is taken to be no larger than the largest of
        // them. Lists made by functions stay unknown: `lists.range(n)` may be anything.
        match (self.dyn_bound, &i.ty) {
            (Some(bound), t) if t.is_dyn() || matches!(t, Ty::String | Ty::Bytes) => {
                Est { min: 0, max: bound }
            }
            _ => Est::UNKNOWN,
        }
    }

    fn visit(&mut self, e: &IdedExpr) -> Info {
        match &e.expr {
            Expr::Literal(lit) => literal(lit),
            Expr::Ident(name) => self.ident(e.id, name),
            Expr::Select(sel) => {
                if let Some(info) = self.record_field(e.id, &sel.operand, &sel.field, sel.test) {
                    return info;
                }
                let operand = self.visit(&sel.operand);
                if sel.test {
                    self.presence(e.id, operand, &sel.field)
                } else {
                    self.select(e.id, operand, &sel.field)
                }
            }
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    if let Expr::Ident(ns) = &target.expr {
                        if NAMESPACES.contains(&ns.as_str()) && !self.is_variable(ns) {
                            let name = format!("{ns}.{}", call.func_name);
                            return self.call(e.id, &name, None, &call.args);
                        }
                    }
                }
                self.call(e.id, &call.func_name, call.target.as_deref(), &call.args)
            }
            Expr::List(list) => {
                let mut cost = Est::fixed(LIST_CREATE);
                let mut elem = Ty::Dyn;
                let mut val = Est {
                    min: if list.elements.is_empty() {
                        0
                    } else {
                        u64::MAX
                    },
                    max: 0,
                };
                for (i, item) in list.elements.iter().enumerate() {
                    let info = self.visit(item);
                    cost = cost.add(info.cost);
                    val = val.union(self.size_of(&info));
                    let mut t = info.ty;
                    if list.optional_indices.contains(&i) {
                        t = match t {
                            Ty::Optional(inner) => *inner,
                            _ => Ty::Dyn,
                        };
                    }
                    elem = if i == 0 {
                        t
                    } else {
                        join_elem(&elem, &t).unwrap_or(Ty::Dyn)
                    };
                }
                Info {
                    ty: Ty::List(Box::new(elem)),
                    decl: None,
                    size: Some(Est::fixed(list.elements.len() as u64)),
                    entry: Some(Entry {
                        key: Est::fixed(1),
                        val,
                    }),
                    cost,
                }
            }
            Expr::Map(map) => {
                let mut cost = Est::fixed(MAP_CREATE);
                let (mut kt, mut vt) = (Ty::Dyn, Ty::Dyn);
                let start = if map.entries.is_empty() { 0 } else { u64::MAX };
                let mut key = Est { min: start, max: 0 };
                let mut val = Est { min: start, max: 0 };
                for (i, entry) in map.entries.iter().enumerate() {
                    let EntryExpr::MapEntry(entry) = &entry.expr else {
                        continue;
                    };
                    let k = self.visit(&entry.key);
                    let v = self.visit(&entry.value);
                    cost = cost.add(k.cost).add(v.cost);
                    key = key.union(self.size_of(&k));
                    val = val.union(self.size_of(&v));
                    if i == 0 {
                        (kt, vt) = (k.ty, v.ty);
                    } else {
                        kt = join_elem(&kt, &k.ty).unwrap_or(Ty::Dyn);
                        vt = join_elem(&vt, &v.ty).unwrap_or(Ty::Dyn);
                    }
                }
                Info {
                    ty: Ty::Map(Box::new(kt), Box::new(vt)),
                    decl: None,
                    size: Some(Est::fixed(map.entries.len() as u64)),
                    entry: Some(Entry { key, val }),
                    cost,
                }
            }
            Expr::Struct(s) => self.error(
                e.id,
                format!(
                    "undeclared reference to '{}' (in container '')",
                    s.type_name
                ),
            ),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Unspecified => Info::of(Ty::Error, Est::default()),
        }
    }

    fn is_variable(&self, name: &str) -> bool {
        self.locals.iter().any(|(n, _)| n == name) || self.vars.iter().any(|v| v.name == name)
    }

    /// `ns.field` where `ns` is a record of variables: declared as a variable named `ns.`,
    /// each of its fields as a variable named `ns.field` (an admission policy's
    /// `variables.NAME`). A field the record does not declare is an error, as selecting an
    /// undeclared field of an object type is in cel-go. `None` when `operand` is no record.
    fn record_field(
        &mut self,
        id: u64,
        operand: &IdedExpr,
        field: &str,
        test: bool,
    ) -> Option<Info> {
        let Expr::Ident(ns) = &operand.expr else {
            return None;
        };
        if self.locals.iter().any(|(n, _)| n == ns) || !self.is_record(ns) {
            return None;
        }
        let full = format!("{ns}.{field}");
        if !self.vars.iter().any(|v| v.name == full) {
            return Some(self.error(id, format!("undefined field '{field}'")));
        }
        if test {
            self.used.insert(full);
            return Some(Info::of(Ty::Bool, Est::fixed(1)));
        }
        let mut info = self.ident(id, &full);
        info.cost = info.cost.add(Est::fixed(1));
        Some(info)
    }

    fn is_record(&self, name: &str) -> bool {
        self.vars
            .iter()
            .any(|v| v.name.strip_suffix('.') == Some(name))
    }

    fn ident(&mut self, id: u64, name: &str) -> Info {
        if let Some((_, info)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            let mut info = info.clone();
            info.cost = Est::fixed(1);
            return info;
        }
        if self.is_record(name) {
            self.used.insert(name.to_owned());
            return Info::of(Ty::Dyn, Est::fixed(1));
        }
        if let Some(v) = self.vars.iter().find(|v| v.name == name) {
            self.used.insert(name.to_owned());
            return Info {
                ty: v.ty.clone(),
                decl: v.decl,
                size: None,
                entry: None,
                cost: Est::fixed(1),
            };
        }
        match name {
            "int" | "uint" | "double" | "bool" | "string" | "bytes" | "list" | "map"
            | "null_type" | "type" | "dyn" => Info {
                // Kubernetes sizes every path by the root of the schema whatever its first
                // name, so a type name is as large as `self`.
                decl: self.root,
                ..Info::of(Ty::TypeVal, Est::fixed(1))
            },
            _ => self.error(
                id,
                format!("undeclared reference to '{name}' (in container '')"),
            ),
        }
    }

    fn field_of(
        &mut self,
        id: u64,
        operand: &Info,
        field: &str,
    ) -> Result<(Ty, Option<NodeId>), Info> {
        match &operand.ty {
            Ty::Object(node) => {
                let Kind::Object(fields) = &self.decls.node(*node).kind else {
                    return Ok((Ty::Dyn, None));
                };
                match fields.get(field) {
                    Some(f) => Ok((node_ty(self.decls, f.node), Some(f.node))),
                    None => Err(self.error(id, format!("undefined field '{field}'"))),
                }
            }
            // cel-go's size estimate follows a map's values only through `[...]`, not
            // through a field selection: the selected value has no known size.
            Ty::Map(_, v) => Ok(((**v).clone(), None)),
            t if t.is_dyn() => Ok((Ty::Dyn, None)),
            t => Err(self.error(id, format!("type '{t}' does not support field selection"))),
        }
    }

    fn select(&mut self, id: u64, operand: Info, field: &str) -> Info {
        let mut cost = operand.cost;
        if matches!(operand.ty, Ty::Object(_) | Ty::Map(..)) {
            cost = cost.add(Est::fixed(1));
        }
        match self.field_of(id, &operand, field) {
            Ok((ty, decl)) => Info {
                ty,
                decl,
                size: None,
                entry: None,
                cost,
            },
            Err(err) => err,
        }
    }

    fn presence(&mut self, id: u64, operand: Info, field: &str) -> Info {
        let cost = operand.cost;
        match self.field_of(id, &operand, field) {
            Ok(_) => Info::of(Ty::Bool, cost),
            Err(err) => err,
        }
    }

    fn comprehension(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Info {
        let range = self.visit(&c.iter_range);
        let init = self.visit(&c.accu_init);
        let is_bind = matches!(&c.iter_range.expr, Expr::List(l) if l.elements.is_empty())
            && matches!(
                &c.loop_cond.expr,
                Expr::Literal(LiteralValue::Boolean(b)) if !*b.inner()
            )
            && c.accu_var != "@result";
        self.locals.push((c.accu_var.clone(), init.clone()));
        if is_bind {
            let result = self.visit(&c.result);
            self.locals.pop();
            let cost = range.cost.add(init.cost).add(result.cost);
            return Info { cost, ..result };
        }

        let range_size = self.size_of(&range);
        let (iter_ty, iter_decl, iter_size) = match (
            &range.ty,
            range.decl.map(|d| &self.decls.node(d).kind),
        ) {
            (_, Some(Kind::List { elem, .. })) => (node_ty(self.decls, *elem), Some(*elem), None),
            (_, Some(Kind::Map { .. })) => (Ty::String, None, Some(Est::fixed(0))),
            (Ty::List(t), _) => ((**t).clone(), None, range.entry.map(|e| e.val)),
            (Ty::Map(k, _), _) => ((**k).clone(), None, range.entry.map(|e| e.key)),
            (t, _) if t.is_dyn() => (Ty::Dyn, None, None),
            (t, _) => {
                let msg = format!(
                    "expression of type '{t}' cannot be range of a comprehension (must be list, map, or dynamic)"
                );
                self.errors.push((c.iter_range.id, msg));
                (Ty::Error, None, None)
            }
        };
        self.locals.push((
            c.iter_var.clone(),
            Info {
                ty: iter_ty,
                decl: iter_decl,
                size: iter_size,
                entry: None,
                cost: Est::default(),
            },
        ));
        let cond = self.visit(&c.loop_cond);
        let step = self.visit(&c.loop_step);
        self.locals.pop();
        // `map` and `filter` start from `[]`: the accumulator has the type the step builds.
        if let Some((_, accu)) = self.locals.last_mut() {
            if let Some(t) = join_elem(&accu.ty, &step.ty) {
                accu.ty = t;
            }
        }
        let result = self.visit(&c.result);
        self.locals.pop();

        let loop_cost = range_size.mul(cond.cost.add(step.cost));
        let cost = range.cost.add(init.cost).add(result.cost).add(loop_cost);
        let (size, entry) = match &c.accu_init.expr {
            Expr::Literal(lit) => (literal(lit).size, None),
            Expr::List(_) | Expr::Map(_) => (Some(range_size), step.entry.or(init.entry)),
            _ => (None, None),
        };
        Info {
            ty: result.ty,
            decl: None,
            size,
            entry,
            cost,
        }
    }

    fn call(&mut self, id: u64, name: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Info {
        let target = target.map(|t| self.visit(t));
        let infos: Vec<Info> = args.iter().map(|a| self.visit(a)).collect();
        let arg_cost = infos.iter().fold(Est::default(), |acc, i| acc.add(i.cost));
        let target_cost = target.as_ref().map_or(Est::default(), |t| t.cost);
        let tys: Vec<Ty> = infos.iter().map(|i| i.ty.clone()).collect();

        if target.as_ref().is_some_and(|t| t.ty == Ty::Error) || tys.contains(&Ty::Error) {
            return Info::of(Ty::Error, target_cost.add(arg_cost));
        }

        // Optional field selection and indexing name the field as a literal argument.
        if name == "_?._" {
            let field = match args.get(1).map(|a| &a.expr) {
                Some(Expr::Literal(LiteralValue::String(s))) => s.inner().to_owned(),
                _ => String::new(),
            };
            let operand = infos
                .first()
                .cloned()
                .unwrap_or_else(|| Info::of(Ty::Dyn, Est::default()));
            let operand = match operand.ty.clone() {
                Ty::Optional(inner) => Info {
                    ty: *inner,
                    ..operand
                },
                _ => operand,
            };
            return match self.field_of(id, &operand, &field) {
                Ok((ty, decl)) => Info {
                    ty: Ty::Optional(Box::new(ty)),
                    decl,
                    size: None,
                    entry: None,
                    cost: arg_cost.add(Est::fixed(1)),
                },
                Err(err) => err,
            };
        }

        let Some(result) = signature(name, target.as_ref().map(|t| &t.ty), &tys) else {
            if !KNOWN.iter().any(|(n, _)| *n == name) {
                return self.error(
                    id,
                    format!("undeclared reference to '{name}' (in container '')"),
                );
            }
            let types = tys.iter().map(Ty::to_string).collect::<Vec<_>>().join(", ");
            let applied = match &target {
                Some(t) => format!("{}.({types})", t.ty),
                None => format!("({types})"),
            };
            return self.error(
                id,
                format!("found no matching overload for '{name}' applied to '{applied}'"),
            );
        };

        let mut info = Info::of(result, Est::default());
        let size = |i: usize| infos.get(i).map_or(Est::UNKNOWN, |a| self.size_of(a));
        let target_size = target.as_ref().map_or(Est::UNKNOWN, |t| self.size_of(t));
        let one = Est::fixed(1);
        let fn_cost: Est = match name {
            "_&&_" | "_||_" => {
                let (l, r) = (infos[0].cost, infos[1].cost);
                info.cost = Est {
                    min: l.min,
                    max: l.max.saturating_add(r.max),
                };
                return info;
            }
            "_?_:_" => {
                info.size = Some(size(1).union(size(2)));
                info.entry = match (infos[1].entry, infos[2].entry) {
                    (Some(a), Some(b)) => Some(Entry {
                        key: a.key.union(b.key),
                        val: a.val.union(b.val),
                    }),
                    _ => None,
                };
                info.cost = infos[0].cost.add(infos[1].cost.union(infos[2].cost));
                return info;
            }
            "dyn" => {
                info.size = infos[0].size;
                info.decl = infos[0].decl;
                info.entry = infos[0].entry;
                one.add(arg_cost)
            }
            "_==_" | "_!=_" => {
                if matches!(tys[0], Ty::Quantity | Ty::Url) {
                    one.add(arg_cost)
                } else {
                    equality_cost(size(0), size(1)).add(arg_cost)
                }
            }
            "_<_" | "_<=_" | "_>_" | "_>=_" if matches!(tys[0], Ty::String | Ty::Bytes) => {
                equality_cost(size(0), size(1)).add(arg_cost)
            }
            "_+_" if matches!(info.ty, Ty::String | Ty::Bytes | Ty::List(_)) => {
                let sum = size(0).add(size(1));
                info.size = Some(sum);
                if let (Some(a), Some(b)) = (infos[0].entry, infos[1].entry) {
                    info.entry = Some(Entry {
                        key: a.key.union(b.key),
                        val: a.val.union(b.val),
                    });
                }
                if matches!(info.ty, Ty::List(_)) {
                    one.add(arg_cost)
                } else {
                    sum.factor(STRING_TRAVERSAL).add(arg_cost)
                }
            }
            "@in" if matches!(tys[1], Ty::List(_)) => size(1).add(arg_cost),
            "_[_]" => {
                let container = &infos[0];
                if let Some(entry) = container.entry {
                    info.size = Some(entry.val);
                }
                info.decl = container.decl.and_then(|d| match self.decls.node(d).kind {
                    Kind::List { elem, .. } | Kind::Map { elem } => Some(elem),
                    _ => None,
                });
                one.add(arg_cost)
            }
            "matches" => {
                let (s, re) = match &target {
                    Some(_) => (target_size, size(0)),
                    None => (size(0), size(1)),
                };
                s.add(one)
                    .factor(STRING_TRAVERSAL)
                    .mul(re.factor(REGEX_LENGTH))
                    .add(arg_cost)
            }
            "contains" if target.is_some() => target_size
                .factor(STRING_TRAVERSAL)
                .mul(size(0).factor(STRING_TRAVERSAL))
                .add(arg_cost),
            "startsWith" | "endsWith" => size(0).factor(STRING_TRAVERSAL).add(arg_cost),
            "strings.quote" => {
                let s = size(0);
                info.size = Some(Est {
                    min: s.min.saturating_add(2),
                    max: s.max.saturating_mul(2).saturating_add(2),
                });
                s.factor(STRING_TRAVERSAL).add(arg_cost)
            }
            "format" if target.is_some() => target_size.factor(STRING_TRAVERSAL).add(arg_cost),
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" if target.is_some() => {
                let t = target.as_ref().map(|t| t.ty.clone()).unwrap_or(Ty::Dyn);
                match t {
                    Ty::List(elem) => {
                        let mut el = one;
                        if matches!(*elem, Ty::String | Ty::Bytes) {
                            let el_size = match target.as_ref().and_then(|t| t.decl) {
                                Some(d) => match self.decls.node(d).kind {
                                    Kind::List { elem, .. } => Est {
                                        min: 0,
                                        max: (self.sizes)(elem),
                                    },
                                    _ => Est::UNKNOWN,
                                },
                                None => target
                                    .as_ref()
                                    .and_then(|t| t.entry)
                                    .map_or(Est::UNKNOWN, |e| e.val),
                            };
                            el = el.add(el_size.factor(STRING_TRAVERSAL));
                        }
                        target_size.mul(el).add(arg_cost)
                    }
                    _ => target_size.factor(STRING_TRAVERSAL).add(arg_cost),
                }
            }
            "url" => {
                info.size = Some(size(0));
                size(0).factor(STRING_TRAVERSAL).add(arg_cost)
            }
            "lowerAscii" | "upperAscii" | "substring" | "trim" if target.is_some() => {
                info.size = Some(target_size);
                target_size.factor(STRING_TRAVERSAL).add(arg_cost)
            }
            "replace" if target.is_some() && args.len() >= 2 => {
                info.size = Some(replace_size(target_size, size(0), size(1)));
                target_size.factor(2.0 * STRING_TRAVERSAL).add(arg_cost)
            }
            "split" if target.is_some() => {
                let limit = match args.get(1).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::Int(n))) => u64::try_from(*n.inner()).ok(),
                    _ => None,
                };
                info.size = Some(Est {
                    min: 0,
                    max: limit.unwrap_or(target_size.max),
                });
                target_size.factor(2.0 * STRING_TRAVERSAL).add(arg_cost)
            }
            "join" if target.is_some() => {
                let list = target_size;
                let elem = target
                    .as_ref()
                    .and_then(|t| {
                        t.entry.map(|e| e.val).or_else(|| {
                            t.decl.and_then(|d| match self.decls.node(d).kind {
                                Kind::List { elem, .. } => Some(Est {
                                    min: 0,
                                    max: (self.sizes)(elem),
                                }),
                                _ => None,
                            })
                        })
                    })
                    .unwrap_or(Est::UNKNOWN);
                let mut sz = list.mul(elem);
                if !args.is_empty() {
                    let seps = Est {
                        min: list.min.saturating_sub(1),
                        max: list.max.saturating_sub(1),
                    };
                    sz = sz.add(size(0).mul(seps));
                }
                info.size = Some(sz);
                sz.factor(STRING_TRAVERSAL).add(arg_cost)
            }
            "find" | "findAll" if target.is_some() => {
                info.size = Some(Est {
                    min: 0,
                    max: target_size.max,
                });
                target_size
                    .add(one)
                    .factor(STRING_TRAVERSAL)
                    .mul(size(0).factor(REGEX_LENGTH))
                    .add(arg_cost)
            }
            "quantity" | "isQuantity" => size(0).factor(STRING_TRAVERSAL).add(arg_cost),
            _ => one.add(arg_cost),
        };
        info.cost = target_cost.add(fn_cost);
        info
    }
}

fn equality_cost(l: Est, r: Est) -> Est {
    let smallest = l.max.min(r.max);
    Est {
        min: u64::from(smallest > 0),
        max: smallest,
    }
    .factor(STRING_TRAVERSAL)
}

/// The size of `s.replace(from, to)`, as Kubernetes estimates it.
fn replace_size(s: Est, from: Est, to: Est) -> Est {
    let (mut count, mut kept) = (Est::default(), Est::default());
    if from.min == 0 {
        count.max = s.max.saturating_add(1);
        kept.max = s.max;
    } else if to.max <= from.min {
        kept.max = s.max;
    } else {
        count.max = s.max.div_ceil(from.min);
    }
    if from.max == 0 {
        count.min = s.min.saturating_add(1);
        kept.min = s.min;
    } else if from.max <= to.min {
        kept.min = s.min;
    } else {
        count.min = s.min.div_ceil(from.max);
    }
    count.mul(to).add(kept)
}

fn literal(lit: &LiteralValue) -> Info {
    let (ty, size) = match lit {
        LiteralValue::Boolean(_) => (Ty::Bool, 1),
        LiteralValue::Int(_) => (Ty::Int, 1),
        LiteralValue::UInt(_) => (Ty::Uint, 1),
        LiteralValue::Double(_) => (Ty::Double, 1),
        LiteralValue::Null => (Ty::Null, 1),
        LiteralValue::String(s) => (Ty::String, s.inner().chars().count() as u64),
        LiteralValue::Bytes(b) => (Ty::Bytes, b.inner().len() as u64),
    };
    Info {
        ty,
        decl: None,
        size: Some(Est::fixed(size)),
        entry: None,
        cost: Est::default(),
    }
}

/// Every function the environment declares: name, and whether it is called on a target
/// (kept for the reader: only the names decide between "undeclared" and "no overload").
const KNOWN: &[(&str, bool)] = &[
    ("!_", false),
    ("-_", false),
    ("_&&_", false),
    ("_||_", false),
    ("_?_:_", false),
    ("_==_", false),
    ("_!=_", false),
    ("_<_", false),
    ("_<=_", false),
    ("_>_", false),
    ("_>=_", false),
    ("_+_", false),
    ("_-_", false),
    ("_*_", false),
    ("_/_", false),
    ("_%_", false),
    ("_[_]", false),
    ("_[?_]", false),
    ("@in", false),
    ("@not_strictly_false", false),
    ("size", false),
    ("size", true),
    ("int", false),
    ("uint", false),
    ("double", false),
    ("string", false),
    ("bytes", false),
    ("bool", false),
    ("duration", false),
    ("timestamp", false),
    ("type", false),
    ("dyn", false),
    ("matches", false),
    ("matches", true),
    ("quantity", false),
    ("isQuantity", false),
    ("url", false),
    ("isURL", false),
    ("optional.of", false),
    ("optional.ofNonZeroValue", false),
    ("optional.none", false),
    ("sets.contains", false),
    ("sets.equivalent", false),
    ("sets.intersects", false),
    ("strings.quote", false),
    ("lists.range", false),
    ("contains", true),
    ("startsWith", true),
    ("endsWith", true),
    ("charAt", true),
    ("indexOf", true),
    ("lastIndexOf", true),
    ("lowerAscii", true),
    ("upperAscii", true),
    ("trim", true),
    ("reverse", true),
    ("replace", true),
    ("split", true),
    ("substring", true),
    ("format", true),
    ("find", true),
    ("findAll", true),
    ("join", true),
    ("isSorted", true),
    ("sum", true),
    ("min", true),
    ("max", true),
    ("slice", true),
    ("flatten", true),
    ("distinct", true),
    ("sort", true),
    ("getFullYear", true),
    ("getMonth", true),
    ("getDayOfYear", true),
    ("getDayOfMonth", true),
    ("getDate", true),
    ("getDayOfWeek", true),
    ("getHours", true),
    ("getMinutes", true),
    ("getSeconds", true),
    ("getMilliseconds", true),
    ("sign", true),
    ("isGreaterThan", true),
    ("isLessThan", true),
    ("compareTo", true),
    ("asApproximateFloat", true),
    ("asInteger", true),
    ("isInteger", true),
    ("add", true),
    ("sub", true),
    ("getScheme", true),
    ("getHost", true),
    ("getHostname", true),
    ("getPort", true),
    ("getEscapedPath", true),
    ("getQuery", true),
    ("hasValue", true),
    ("value", true),
    ("orValue", true),
    ("or", true),
];

/// The result type of calling `name` on `target` with arguments of types `args`, or `None`
/// when no overload takes them.
fn signature(name: &str, target: Option<&Ty>, args: &[Ty]) -> Option<Ty> {
    match target {
        Some(t) if t.is_dyn() => {
            // Any overload of that name whose arguments fit.
            let candidates = [
                Ty::String,
                Ty::Bytes,
                Ty::List(Box::new(Ty::Dyn)),
                Ty::Map(Box::new(Ty::Dyn), Box::new(Ty::Dyn)),
                Ty::Timestamp,
                Ty::Duration,
                Ty::Quantity,
                Ty::Url,
                Ty::Optional(Box::new(Ty::Dyn)),
            ];
            let results: Vec<Ty> = candidates
                .iter()
                .filter_map(|c| member(name, c, args))
                .collect();
            let first = results.first()?.clone();
            Some(if results.iter().all(|r| *r == first) {
                first
            } else {
                Ty::Dyn
            })
        }
        Some(t) => member(name, t, args),
        None => global(name, args),
    }
}

fn is(t: &Ty, want: &Ty) -> bool {
    assignable(want, t)
}

fn global(name: &str, a: &[Ty]) -> Option<Ty> {
    use Ty::*;
    let any_dyn = a.iter().any(Ty::is_dyn);
    Some(match (name, a) {
        ("!_", [x]) if is(x, &Bool) => Bool,
        ("-_", [x]) if matches!(x, Int | Double) => x.clone(),
        ("-_", [x]) if x.is_dyn() => Dyn,
        ("_&&_" | "_||_", [x, y]) if is(x, &Bool) && is(y, &Bool) => Bool,
        ("@not_strictly_false", [x]) if is(x, &Bool) => Bool,
        ("_?_:_", [c, x, y]) if is(c, &Bool) => join(x, y)?,
        ("_==_" | "_!=_", [x, y]) if assignable(x, y) || assignable(y, x) => Bool,
        ("_<_" | "_<=_" | "_>_" | "_>=_", [x, y]) => {
            let ok = any_dyn
                || (x.is_number() && y.is_number())
                || (x == y && matches!(x, String | Bytes | Bool | Timestamp | Duration));
            if !ok {
                return None;
            }
            Bool
        }
        ("_+_", [x, y]) => match (x, y) {
            (List(p), List(q)) => List(Box::new(join_elem(p, q).unwrap_or(Dyn))),
            (Timestamp, Duration) | (Duration, Timestamp) => Timestamp,
            (Duration, Duration) => Duration,
            _ if x == y && matches!(x, Int | Uint | Double | String | Bytes) => x.clone(),
            (t, d) | (d, t)
                if d.is_dyn()
                    && matches!(
                        t,
                        Int | Uint | Double | String | Bytes | List(_) | Duration | Timestamp
                    ) =>
            {
                if matches!(t, Int | Uint | Double | String | Bytes | List(_)) {
                    t.clone()
                } else {
                    Dyn
                }
            }
            _ if any_dyn => Dyn,
            _ => return None,
        },
        ("_-_", [x, y]) => match (x, y) {
            (Timestamp, Timestamp) => Duration,
            (Timestamp, Duration) => Timestamp,
            (Duration, Duration) => Duration,
            _ if x == y && x.is_number() => x.clone(),
            (t, d) | (d, t) if d.is_dyn() && t.is_number() => t.clone(),
            _ if any_dyn => Dyn,
            _ => return None,
        },
        ("_*_" | "_/_", [x, y]) => match (x, y) {
            _ if x == y && x.is_number() => x.clone(),
            (t, d) | (d, t) if d.is_dyn() && t.is_number() => t.clone(),
            _ if any_dyn => Dyn,
            _ => return None,
        },
        ("_%_", [x, y]) => match (x, y) {
            _ if x == y && matches!(x, Int | Uint) => x.clone(),
            (t, d) | (d, t) if d.is_dyn() && matches!(t, Int | Uint) => t.clone(),
            _ if any_dyn => Dyn,
            _ => return None,
        },
        ("_[_]", [c, i]) => match c {
            List(e) if is(i, &Int) => (**e).clone(),
            Map(k, v) if assignable(k, i) => (**v).clone(),
            t if t.is_dyn() => Dyn,
            _ => return None,
        },
        ("_[?_]", [c, i]) => {
            let c = match c {
                Optional(inner) => &**inner,
                other => other,
            };
            match c {
                List(e) if is(i, &Int) => Optional(e.clone()),
                Map(k, v) if assignable(k, i) => Optional(v.clone()),
                t if t.is_dyn() => Optional(Box::new(Dyn)),
                _ => return None,
            }
        }
        ("@in", [x, c]) => match c {
            List(e) if assignable(e, x) => Bool,
            Map(k, _) if assignable(k, x) => Bool,
            t if t.is_dyn() => Bool,
            _ => return None,
        },
        ("size", [x]) if matches!(x, String | Bytes | List(_) | Map(..)) || x.is_dyn() => Int,
        ("int", [x]) if matches!(x, Int | Uint | Double | String | Timestamp) || x.is_dyn() => Int,
        ("uint", [x]) if matches!(x, Int | Uint | Double | String) || x.is_dyn() => Uint,
        ("double", [x]) if matches!(x, Int | Uint | Double | String) || x.is_dyn() => Double,
        ("string", [x])
            if matches!(
                x,
                Int | Uint | Double | String | Bytes | Bool | Timestamp | Duration
            ) || x.is_dyn() =>
        {
            String
        }
        ("bytes", [x]) if is(x, &String) || is(x, &Bytes) => Bytes,
        ("bool", [x]) if is(x, &String) || is(x, &Bool) => Bool,
        ("duration", [x]) if is(x, &String) || is(x, &Duration) => Duration,
        ("timestamp", [x]) if is(x, &String) || is(x, &Int) || is(x, &Timestamp) => Timestamp,
        ("type", [_]) => TypeVal,
        ("dyn", [_]) => Dyn,
        ("matches", [x, y]) if is(x, &String) && is(y, &String) => Bool,
        ("quantity", [x]) if is(x, &String) => Quantity,
        ("url", [x]) if is(x, &String) => Url,
        ("isQuantity" | "isURL", [x]) if is(x, &String) => Bool,
        ("optional.of" | "optional.ofNonZeroValue", [x]) => Optional(Box::new(x.clone())),
        ("optional.none", []) => Optional(Box::new(Dyn)),
        ("sets.contains" | "sets.equivalent" | "sets.intersects", [x, y])
            if is(x, &List(Box::new(Dyn)))
                && is(y, &List(Box::new(Dyn)))
                && assignable(&x.elem(), &y.elem()) =>
        {
            Bool
        }
        ("strings.quote", [x]) if is(x, &String) => String,
        ("lists.range", [x]) if is(x, &Int) => List(Box::new(Int)),
        _ => return None,
    })
}

fn member(name: &str, t: &Ty, a: &[Ty]) -> Option<Ty> {
    use Ty::*;
    let s = |x: &Ty| is(x, &String);
    let i = |x: &Ty| is(x, &Int);
    Some(match (t, name, a) {
        (String | Bytes | List(_) | Map(..), "size", []) => Int,
        (String, "contains" | "startsWith" | "endsWith" | "matches", [x]) if s(x) => Bool,
        (String, "charAt", [x]) if i(x) => String,
        (String, "indexOf" | "lastIndexOf", [x]) if s(x) => Int,
        (String, "indexOf" | "lastIndexOf", [x, y]) if s(x) && i(y) => Int,
        (String, "lowerAscii" | "upperAscii" | "trim" | "reverse", []) => String,
        (String, "replace", [x, y]) if s(x) && s(y) => String,
        (String, "replace", [x, y, z]) if s(x) && s(y) && i(z) => String,
        (String, "split", [x]) if s(x) => List(Box::new(String)),
        (String, "split", [x, y]) if s(x) && i(y) => List(Box::new(String)),
        (String, "substring", [x]) if i(x) => String,
        (String, "substring", [x, y]) if i(x) && i(y) => String,
        (String, "format", [x]) if is(x, &List(Box::new(Dyn))) => String,
        (String, "find", [x]) if s(x) => String,
        (String, "findAll", [x]) if s(x) => List(Box::new(String)),
        (String, "findAll", [x, y]) if s(x) && i(y) => List(Box::new(String)),
        (List(e), "join", []) if s(e) => String,
        (List(e), "join", [x]) if s(e) && s(x) => String,
        (List(e), "isSorted", []) if comparable(e) => Bool,
        (List(e), "sum", []) if summable(e) => (**e).clone(),
        (List(e), "min" | "max", []) if comparable(e) => (**e).clone(),
        (List(e), "indexOf" | "lastIndexOf", [x]) if assignable(e, x) => Int,
        (List(e), "slice", [x, y]) if i(x) && i(y) => List(e.clone()),
        (List(e), "flatten", []) => match &**e {
            List(inner) => List(inner.clone()),
            _ => List(Box::new(Dyn)),
        },
        (List(e), "flatten", [x]) if i(x) => List(Box::new(match &**e {
            List(inner) => (**inner).clone(),
            _ => Dyn,
        })),
        (List(e), "distinct" | "reverse" | "sort", []) => List(e.clone()),
        (
            Timestamp,
            "getFullYear" | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate"
            | "getDayOfWeek" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds",
            [] | [String],
        ) => Int,
        (Duration, "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds", []) => Int,
        (Quantity, "sign" | "asInteger", []) => Int,
        (Quantity, "isInteger", []) => Bool,
        (Quantity, "asApproximateFloat", []) => Double,
        (Quantity, "isGreaterThan" | "isLessThan", [x]) if is(x, &Quantity) => Bool,
        (Quantity, "compareTo", [x]) if is(x, &Quantity) => Int,
        (Quantity, "add" | "sub", [x]) if is(x, &Quantity) || i(x) => Quantity,
        (Url, "getScheme" | "getHost" | "getHostname" | "getPort" | "getEscapedPath", []) => String,
        (Url, "getQuery", []) => Map(Box::new(String), Box::new(List(Box::new(String)))),
        (Optional(_), "hasValue", []) => Bool,
        (Optional(v), "value", []) => (**v).clone(),
        (Optional(v), "orValue", [x]) => join_elem(v, x)?,
        (Optional(v), "or", [Optional(x)]) => Optional(Box::new(join_elem(v, x)?)),
        (Optional(_), "or", [x]) if x.is_dyn() => t.clone(),
        _ => return None,
    })
}

fn comparable(t: &Ty) -> bool {
    t.is_dyn()
        || matches!(
            t,
            Ty::Int
                | Ty::Uint
                | Ty::Double
                | Ty::Bool
                | Ty::String
                | Ty::Bytes
                | Ty::Duration
                | Ty::Timestamp
        )
}

fn summable(t: &Ty) -> bool {
    t.is_dyn() || matches!(t, Ty::Int | Ty::Uint | Ty::Double | Ty::Duration)
}
