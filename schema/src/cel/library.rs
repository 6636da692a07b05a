//! The CEL environment Kubernetes gives validation rules: CEL's standard library, the
//! strings and lists extensions, `cel.bind`, optional values, and Kubernetes' own
//! libraries (k8s.io/apiserver/pkg/cel/library): list functions (`isSorted`, `sum`, `min`,
//! `max`, `indexOf`, `lastIndexOf`), regular expressions (`find`, `findAll`), quantities
//! (`quantity()`, `isQuantity()` and their methods), URLs (`url()`, `isURL()` and their
//! getters) and sets (`sets.contains`, `sets.equivalent`, `sets.intersects`).
//!
//! The interpreter is the `cel` crate's; this module only adds what it lacks.

use std::any::Any;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelString, Type, DYN_TYPE, INT_TYPE,
    LIST_TYPE, STRING_TYPE,
};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{DeclarationError, Env, ExecutionError};

use skiff_rules::Quantity;

/// The CEL type of Kubernetes quantities.
pub(crate) static QUANTITY_TYPE: Type = Type::new_unspecified_type("kubernetes.Quantity");
/// The CEL type of Kubernetes URLs.
pub(crate) static URL_TYPE: Type = Type::new_unspecified_type("kubernetes.URL");

/// The shared environment; built once, as building it declares a few hundred overloads.
pub(crate) fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        Arc::new(build().unwrap_or_else(|e| {
            // Only a programming error in the declarations below can land here, and every
            // test would fail on it.
            panic!("the CEL environment does not build: {e}")
        }))
    })
    .clone()
}

fn build() -> Result<Env, DeclarationError> {
    let mut env = Env::stdlib();
    env.add_extension(cel::extensions::strings)?;
    env.add_extension(cel::extensions::lists)?;
    env.add_macro(Macro::receiver("bind", 3, bind_macro))?;

    for (name, f) in [
        ("isSorted", is_sorted as cel::common::functions::Function),
        ("sum", sum),
        ("min", list_min),
        ("max", list_max),
    ] {
        env.add_member_overload(name, &format!("list_{name}"), LIST_TYPE, vec![], f)?;
    }
    env.add_member_overload(
        "indexOf",
        "list_indexOf",
        LIST_TYPE,
        vec![DYN_TYPE],
        list_index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_lastIndexOf",
        LIST_TYPE,
        vec![DYN_TYPE],
        list_last_index_of,
    )?;

    env.add_member_overload(
        "find",
        "string_find_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find_all,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string_int",
        STRING_TYPE,
        vec![STRING_TYPE, INT_TYPE],
        find_all,
    )?;

    let q = || QUANTITY_TYPE.to_owned();
    env.add_overload(
        "quantity",
        "string_to_quantity",
        vec![STRING_TYPE],
        to_quantity,
    )?;
    env.add_overload(
        "isQuantity",
        "is_quantity_string",
        vec![STRING_TYPE],
        is_quantity,
    )?;
    env.add_member_overload("sign", "quantity_sign", q(), vec![], quantity_sign)?;
    env.add_member_overload(
        "isGreaterThan",
        "quantity_is_greater_than",
        q(),
        vec![q()],
        quantity_gt,
    )?;
    env.add_member_overload(
        "isLessThan",
        "quantity_is_less_than",
        q(),
        vec![q()],
        quantity_lt,
    )?;
    env.add_member_overload(
        "compareTo",
        "quantity_compare_to",
        q(),
        vec![q()],
        quantity_cmp,
    )?;
    env.add_member_overload(
        "asApproximateFloat",
        "quantity_get_float",
        q(),
        vec![],
        quantity_float,
    )?;
    env.add_member_overload("asInteger", "quantity_get_int", q(), vec![], quantity_int)?;
    env.add_member_overload(
        "isInteger",
        "quantity_is_integer",
        q(),
        vec![],
        quantity_is_int,
    )?;
    env.add_member_overload("add", "quantity_add", q(), vec![q()], quantity_add)?;
    env.add_member_overload("add", "quantity_add_int", q(), vec![INT_TYPE], quantity_add)?;
    env.add_member_overload("sub", "quantity_sub", q(), vec![q()], quantity_sub)?;
    env.add_member_overload("sub", "quantity_sub_int", q(), vec![INT_TYPE], quantity_sub)?;

    let u = || URL_TYPE.to_owned();
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], to_url)?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], is_url)?;
    env.add_member_overload("getScheme", "url_get_scheme", u(), vec![], url_scheme)?;
    env.add_member_overload("getHost", "url_get_host", u(), vec![], url_host)?;
    env.add_member_overload("getHostname", "url_get_hostname", u(), vec![], url_hostname)?;
    env.add_member_overload("getPort", "url_get_port", u(), vec![], url_port)?;
    env.add_member_overload(
        "getEscapedPath",
        "url_get_escaped_path",
        u(),
        vec![],
        url_path,
    )?;
    env.add_member_overload("getQuery", "url_get_query", u(), vec![], url_query)?;

    env.add_overload(
        "sets.contains",
        "list_sets_contains_list",
        vec![LIST_TYPE, LIST_TYPE],
        sets_contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "list_sets_equivalent_list",
        vec![LIST_TYPE, LIST_TYPE],
        sets_equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "list_sets_intersects_list",
        vec![LIST_TYPE, LIST_TYPE],
        sets_intersects,
    )?;
    Ok(env)
}

/// `cel.bind(name, init, expr)`: `expr` with `name` bound to `init`, expanded (as cel-go
/// expands it) into a comprehension over an empty list whose accumulator is `name`.
fn bind_macro(
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    if !matches!(target.as_ref().map(|t| &t.expr), Some(Expr::Ident(n)) if n == "cel") {
        return Ok(None);
    }
    let [var, init, result] = std::mem::take(args)
        .try_into()
        .map_err(|_| helper.new_error(0, "cel.bind() takes three arguments"))?;
    let Expr::Ident(name) = var.expr else {
        return Err(helper.new_error(
            var.id,
            "cel.bind() variable names must be simple identifiers",
        ));
    };
    let empty = helper.next_expr(Expr::List(ListExpr::new(Vec::new())));
    let never = helper.next_expr(Expr::Literal(LiteralValue::Boolean(false.into())));
    let step = helper.next_expr(Expr::Ident(name.clone()));
    let bind = ComprehensionExpr {
        iter_range: empty,
        iter_var: "#unused".to_owned(),
        iter_var2: None,
        accu_var: name,
        accu_init: init,
        loop_cond: never,
        loop_step: step,
        result,
    };
    Ok(Some(helper.next_expr(Expr::Comprehension(Box::new(bind)))))
}

type Res<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

fn owned<'b, 'v, T: Val + 'v>(v: T) -> Res<'b, 'v> {
    Ok(CowVal::owned(v))
}

fn nth<'a, 'b, 'v>(
    args: &'a [CowVal<'b, 'v>],
    i: usize,
) -> Result<&'a (dyn Val + 'v), ExecutionError> {
    args.get(i)
        .map(|a| a.as_ref())
        .ok_or_else(|| ExecutionError::invalid_argument_count(i + 1, args.len()))
}

fn string_arg<'a, 'v>(v: &'a (dyn Val + 'v), function: &str) -> Result<&'a str, ExecutionError> {
    <&str>::try_from(v).map_err(|_| no_overload(function, &[v]))
}

fn no_overload(function: &str, args: &[&dyn Val]) -> ExecutionError {
    ExecutionError::no_such_overload(
        function,
        args.iter()
            .map(|a| a.get_type().name().to_owned())
            .collect(),
    )
}

/// The items of a list value.
fn items<'a, 'v>(
    v: &'a (dyn Val + 'v),
    function: &str,
) -> Result<Vec<&'a (dyn Val + 'v)>, ExecutionError> {
    let iterable = v.as_iterable().ok_or_else(|| no_overload(function, &[v]))?;
    let mut it = iterable.iter();
    let mut out = Vec::new();
    while let Some(item) = it.next() {
        out.push(item);
    }
    Ok(out)
}

fn compare(a: &dyn Val, b: &dyn Val, function: &str) -> Result<Ordering, ExecutionError> {
    a.as_comparer()
        .ok_or_else(|| no_overload(function, &[a, b]))?
        .compare(b)
}

fn is_sorted<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let list = items(nth(&args, 0)?, "isSorted")?;
    for pair in list.windows(2) {
        if compare(pair[0], pair[1], "isSorted")? == Ordering::Greater {
            return owned(CelBool::from(false));
        }
    }
    owned(CelBool::from(true))
}

fn sum<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let list = items(nth(&args, 0)?, "sum")?;
    let Some((first, rest)) = list.split_first() else {
        return owned(CelInt::from(0));
    };
    let mut acc: Box<dyn Val + 'v> = first.clone_as_boxed();
    for item in rest {
        let next = acc
            .as_adder()
            .ok_or_else(|| no_overload("sum", &[acc.as_ref()]))?
            .add(*item)?
            .into_owned();
        acc = next;
    }
    Ok(CowVal::Owned(acc))
}

fn extreme<'b, 'v>(args: Vec<CowVal<'b, 'v>>, name: &str, want: Ordering) -> Res<'b, 'v> {
    let list = items(nth(&args, 0)?, name)?;
    let Some((first, rest)) = list.split_first() else {
        return Err(ExecutionError::function_error(
            name,
            format!("{name} called on empty list"),
        ));
    };
    let mut best = *first;
    for item in rest {
        if compare(*item, best, name)? == want {
            best = *item;
        }
    }
    Ok(CowVal::Owned(best.clone_as_boxed()))
}

fn list_min<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    extreme(args, "min", Ordering::Less)
}

fn list_max<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    extreme(args, "max", Ordering::Greater)
}

fn list_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let list = items(nth(&args, 0)?, "indexOf")?;
    let needle = nth(&args, 1)?;
    let at = list.iter().position(|i| i.equals(needle));
    owned(CelInt::from(at.map_or(-1, |i| i as i64)))
}

fn list_last_index_of<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let list = items(nth(&args, 0)?, "lastIndexOf")?;
    let needle = nth(&args, 1)?;
    let at = list.iter().rposition(|i| i.equals(needle));
    owned(CelInt::from(at.map_or(-1, |i| i as i64)))
}

fn regex(pattern: &str) -> Result<regex::Regex, ExecutionError> {
    regex::Regex::new(pattern)
        .map_err(|e| ExecutionError::function_error("find", format!("Illegal regex: {e}")))
}

fn find<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "find")?;
    let re = regex(string_arg(nth(&args, 1)?, "find")?)?;
    let found = re
        .find(s)
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    owned(CelString::from(found))
}

fn find_all<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "findAll")?;
    let re = regex(string_arg(nth(&args, 1)?, "findAll")?)?;
    let limit = match args.get(2) {
        Some(n) => {
            *<&i64>::try_from(n.as_ref()).map_err(|_| no_overload("findAll", &[n.as_ref()]))?
        }
        None => -1,
    };
    let found: Vec<Box<dyn Val + 'v>> = re
        .find_iter(s)
        .take(usize::try_from(limit).unwrap_or(usize::MAX))
        .map(|m| Box::new(CelString::from(m.as_str().to_owned())) as Box<dyn Val + 'v>)
        .collect();
    owned(CelList::from(found))
}

/// A Kubernetes quantity as a CEL value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuantityVal(pub Quantity);

impl Val for QuantityVal {
    fn get_type(&self) -> &Type {
        &QUANTITY_TYPE
    }
    fn cel_type() -> &'static Type {
        &QUANTITY_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other
            .downcast_ref::<QuantityVal>()
            .is_some_and(|o| o.0 == self.0)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
impl StaticVal for QuantityVal {}

fn quantity_of<'a>(v: &'a dyn Val, function: &str) -> Result<&'a Quantity, ExecutionError> {
    v.downcast_ref::<QuantityVal>()
        .map(|q| &q.0)
        .ok_or_else(|| no_overload(function, &[v]))
}

fn to_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "quantity")?;
    let q: Quantity = s
        .parse()
        .map_err(|e: skiff_rules::quantity::QuantityError| {
            ExecutionError::function_error("quantity", e)
        })?;
    owned(QuantityVal(q))
}

fn is_quantity<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "isQuantity")?;
    owned(CelBool::from(s.parse::<Quantity>().is_ok()))
}

fn quantity_sign<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let q = quantity_of(nth(&args, 0)?, "sign")?;
    owned(CelInt::from(i64::from(q.signum())))
}

fn quantity_pair<'a>(
    args: &'a [CowVal<'_, '_>],
    function: &str,
) -> Result<(&'a Quantity, &'a Quantity), ExecutionError> {
    Ok((
        quantity_of(nth(args, 0)?, function)?,
        quantity_of(nth(args, 1)?, function)?,
    ))
}

fn quantity_gt<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = quantity_pair(&args, "isGreaterThan")?;
    owned(CelBool::from(a > b))
}

fn quantity_lt<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = quantity_pair(&args, "isLessThan")?;
    owned(CelBool::from(a < b))
}

fn quantity_cmp<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = quantity_pair(&args, "compareTo")?;
    owned(CelInt::from(a.cmp(b) as i64))
}

const NANOS_PER_UNIT: i128 = 1_000_000_000;

fn quantity_float<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let q = quantity_of(nth(&args, 0)?, "asApproximateFloat")?;
    owned(CelDouble::from(q.as_nanos() as f64 / NANOS_PER_UNIT as f64))
}

/// The quantity as a whole number of units, when it is one and fits an int64.
fn exact_integer(q: &Quantity) -> Option<i64> {
    let n = q.as_nanos();
    if n % NANOS_PER_UNIT != 0 {
        return None;
    }
    i64::try_from(n / NANOS_PER_UNIT).ok()
}

fn quantity_int<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let q = quantity_of(nth(&args, 0)?, "asInteger")?;
    let n = exact_integer(q).ok_or_else(|| {
        ExecutionError::function_error("asInteger", "cannot convert value to integer")
    })?;
    owned(CelInt::from(n))
}

fn quantity_is_int<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let q = quantity_of(nth(&args, 0)?, "isInteger")?;
    owned(CelBool::from(exact_integer(q).is_some()))
}

/// The second operand of `add`/`sub`: a quantity, or an int of whole units.
fn quantity_operand(v: &dyn Val, function: &str) -> Result<Quantity, ExecutionError> {
    if let Some(q) = v.downcast_ref::<QuantityVal>() {
        return Ok(q.0);
    }
    let n = <&i64>::try_from(v).map_err(|_| no_overload(function, &[v]))?;
    Ok(Quantity::from_value(
        *n,
        skiff_rules::quantity::Format::DecimalSI,
    ))
}

fn quantity_add<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let a = *quantity_of(nth(&args, 0)?, "add")?;
    let b = quantity_operand(nth(&args, 1)?, "add")?;
    let sum = a
        .checked_add(b)
        .ok_or_else(|| ExecutionError::function_error("add", "quantity is out of range"))?;
    owned(QuantityVal(sum))
}

fn quantity_sub<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let a = *quantity_of(nth(&args, 0)?, "sub")?;
    let b = quantity_operand(nth(&args, 1)?, "sub")?;
    let diff = a
        .checked_sub(b)
        .ok_or_else(|| ExecutionError::function_error("sub", "quantity is out of range"))?;
    owned(QuantityVal(diff))
}

/// A URL as Go's `net/url` splits one: what `url()` returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct UrlVal {
    scheme: String,
    /// `user:pass@`, kept only so that two URLs compare as their full text.
    userinfo: Option<String>,
    host: String,
    path: String,
    query: Option<String>,
    fragment: Option<String>,
    opaque: Option<String>,
}

impl Val for UrlVal {
    fn get_type(&self) -> &Type {
        &URL_TYPE
    }
    fn cel_type() -> &'static Type {
        &URL_TYPE
    }
    fn equals(&self, other: &dyn Val) -> bool {
        other.downcast_ref::<UrlVal>().is_some_and(|o| o == self)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}
impl StaticVal for UrlVal {}

/// Parses `s` as Kubernetes' `url()` does: it must be an absolute URI or an absolute path
/// (Go's `url.ParseRequestURI`), and the fragment is kept apart.
pub(crate) fn parse_url(s: &str) -> Result<UrlVal, String> {
    let err = |why: &str| format!("parse {s:?}: {why}");
    if s.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(err("net/url: invalid control character in URL"));
    }
    let (rest, fragment) = match s.split_once('#') {
        Some((r, f)) => (r, Some(f.to_owned())),
        None => (s, None),
    };
    let mut url = UrlVal {
        fragment,
        ..UrlVal::default()
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q.to_owned())),
        None => (rest, None),
    };
    url.query = query;
    let rest = match scheme_of(rest) {
        Some((scheme, after)) => {
            url.scheme = scheme.to_owned();
            after
        }
        None => {
            if !rest.starts_with('/') {
                return Err(err("invalid URI for request"));
            }
            rest
        }
    };
    if url.scheme.is_empty() && rest.is_empty() {
        return Err(err("empty url"));
    }
    if !url.scheme.is_empty() && !rest.starts_with('/') {
        url.opaque = Some(rest.to_owned());
        return Ok(url);
    }
    if let Some(authority_and_path) = rest.strip_prefix("//") {
        let (authority, path) = match authority_and_path.find('/') {
            Some(i) => authority_and_path.split_at(i),
            None => (authority_and_path, ""),
        };
        let host = match authority.rsplit_once('@') {
            Some((user, host)) => {
                url.userinfo = Some(user.to_owned());
                host
            }
            None => authority,
        };
        validate_host(host).map_err(|why| err(&why))?;
        url.host = host.to_owned();
        url.path = path.to_owned();
    } else {
        url.path = rest.to_owned();
    }
    if url
        .path
        .split('%')
        .skip(1)
        .any(|seg| seg.len() < 2 || !seg.as_bytes()[..2].iter().all(u8::is_ascii_hexdigit))
    {
        return Err(err("invalid URL escape"));
    }
    Ok(url)
}

fn scheme_of(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    if !first.is_ascii_alphabetic()
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    Some((scheme, rest))
}

fn validate_host(host: &str) -> Result<(), String> {
    if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, port)) = v6.split_once(']') else {
            return Err("missing ']' in host".to_owned());
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() && !addr.contains('%') {
            return Err(format!("invalid host {host:?}"));
        }
        return validate_port(port);
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        validate_port(&format!(":{port}"))?;
    }
    Ok(())
}

fn validate_port(port: &str) -> Result<(), String> {
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok(()),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("invalid port {port:?} after host")),
    }
}

impl UrlVal {
    fn hostname(&self) -> &str {
        let host = self.host.as_str();
        if let Some(v6) = host.strip_prefix('[') {
            return v6.split(']').next().unwrap_or("");
        }
        match host.rsplit_once(':') {
            Some((h, _)) => h,
            None => host,
        }
    }

    fn port(&self) -> &str {
        let host = self.host.as_str();
        let after = match host.rfind(']') {
            Some(i) => &host[i + 1..],
            None => host,
        };
        match after.rsplit_once(':') {
            Some((_, p)) => p,
            None => "",
        }
    }
}

fn url_of<'a>(v: &'a dyn Val, function: &str) -> Result<&'a UrlVal, ExecutionError> {
    v.downcast_ref::<UrlVal>()
        .ok_or_else(|| no_overload(function, &[v]))
}

fn to_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "url")?;
    let url = parse_url(s).map_err(|e| {
        ExecutionError::function_error(
            "url",
            format!("URL parse error during conversion from string: {e}"),
        )
    })?;
    owned(url)
}

fn is_url<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let s = string_arg(nth(&args, 0)?, "isURL")?;
    owned(CelBool::from(parse_url(s).is_ok()))
}

fn url_scheme<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    owned(CelString::from(
        url_of(nth(&args, 0)?, "getScheme")?.scheme.clone(),
    ))
}

fn url_host<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    owned(CelString::from(
        url_of(nth(&args, 0)?, "getHost")?.host.clone(),
    ))
}

fn url_hostname<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    owned(CelString::from(
        url_of(nth(&args, 0)?, "getHostname")?.hostname().to_owned(),
    ))
}

fn url_port<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    owned(CelString::from(
        url_of(nth(&args, 0)?, "getPort")?.port().to_owned(),
    ))
}

fn url_path<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    owned(CelString::from(
        url_of(nth(&args, 0)?, "getEscapedPath")?.path.clone(),
    ))
}

/// Decodes `%XX` and `+` in a query component, as Go's `url.QueryUnescape`; `None` on a
/// bad escape (Go then drops the pair).
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn url_query<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let url = url_of(nth(&args, 0)?, "getQuery")?;
    let mut values: Vec<(String, Vec<String>)> = Vec::new();
    for pair in url.query.as_deref().unwrap_or("").split(['&', ';']) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (query_unescape(k), query_unescape(v)) else {
            continue;
        };
        match values.iter_mut().find(|(key, _)| *key == k) {
            Some((_, list)) => list.push(v),
            None => values.push((k, vec![v])),
        }
    }
    let map: HashMap<CelMapKey<'v>, Box<dyn Val + 'v>> = values
        .into_iter()
        .map(|(k, vs)| {
            let list: Vec<Box<dyn Val + 'v>> = vs
                .into_iter()
                .map(|v| Box::new(CelString::from(v)) as Box<dyn Val + 'v>)
                .collect();
            (
                CelMapKey::from(k),
                Box::new(CelList::from(list)) as Box<dyn Val + 'v>,
            )
        })
        .collect();
    owned(CelMap::from(map))
}

/// The items of two lists.
type ListPair<'a, 'v> = (Vec<&'a (dyn Val + 'v)>, Vec<&'a (dyn Val + 'v)>);

fn sets_lists<'a, 'v>(
    args: &'a [CowVal<'_, 'v>],
    function: &str,
) -> Result<ListPair<'a, 'v>, ExecutionError> {
    Ok((
        items(nth(args, 0)?, function)?,
        items(nth(args, 1)?, function)?,
    ))
}

fn sets_contains<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = sets_lists(&args, "sets.contains")?;
    owned(CelBool::from(
        b.iter().all(|x| a.iter().any(|y| y.equals(*x))),
    ))
}

fn sets_equivalent<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = sets_lists(&args, "sets.equivalent")?;
    let within = |xs: &[&(dyn Val + 'v)], ys: &[&(dyn Val + 'v)]| {
        xs.iter().all(|x| ys.iter().any(|y| y.equals(*x)))
    };
    owned(CelBool::from(within(&a, &b) && within(&b, &a)))
}

fn sets_intersects<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Res<'b, 'v> {
    let (a, b) = sets_lists(&args, "sets.intersects")?;
    owned(CelBool::from(
        a.iter().any(|x| b.iter().any(|y| y.equals(*x))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::{Context, Value};

    fn eval(expr: &str) -> Result<Value, String> {
        let env = env();
        let program = env.compile(expr).map_err(|e| e.to_string())?;
        let ctx = Context::with_env(env);
        program.execute(&ctx).map_err(|e| e.to_string())
    }

    #[test]
    fn list_library() {
        assert_eq!(eval("[1, 2, 3].isSorted()"), Ok(Value::Bool(true)));
        assert_eq!(eval("['b', 'a'].isSorted()"), Ok(Value::Bool(false)));
        assert_eq!(eval("[1, 2, 3].sum()"), Ok(Value::Int(6)));
        assert_eq!(eval("[1.5, 2.0].sum()"), Ok(Value::Float(3.5)));
        assert_eq!(eval("[].sum()"), Ok(Value::Int(0)));
        assert_eq!(eval("[3, 1, 2].min()"), Ok(Value::Int(1)));
        assert_eq!(eval("[3, 1, 2].max()"), Ok(Value::Int(3)));
        assert!(eval("[].max()")
            .unwrap_err()
            .contains("max called on empty list"));
        assert_eq!(eval("[1, 2, 1].indexOf(1)"), Ok(Value::Int(0)));
        assert_eq!(eval("[1, 2, 1].lastIndexOf(1)"), Ok(Value::Int(2)));
        assert_eq!(eval("[1, 2].indexOf(5)"), Ok(Value::Int(-1)));
        assert_eq!(
            eval("'abcabc'.indexOf('c')"),
            Ok(Value::Int(2)),
            "strings keep theirs"
        );
    }

    #[test]
    fn regex_library() {
        assert_eq!(eval("'abc 123'.find('[0-9]+')"), Ok(Value::from("123")));
        assert_eq!(eval("'abc'.find('[0-9]+')"), Ok(Value::from("")));
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+')"),
            Ok(Value::List(Arc::new(vec![
                Value::from("123"),
                Value::from("456")
            ])))
        );
        assert_eq!(
            eval("'123 abc 456'.findAll('[0-9]+', 1)"),
            Ok(Value::List(Arc::new(vec![Value::from("123")])))
        );
        assert!(eval("'x'.find('[')").unwrap_err().contains("Illegal regex"));
    }

    #[test]
    fn quantity_library() {
        assert_eq!(
            eval("quantity('1Gi').isGreaterThan(quantity('1G'))"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("quantity('500m').isLessThan(quantity('1'))"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("quantity('1k').compareTo(quantity('1000'))"),
            Ok(Value::Int(0))
        );
        assert_eq!(eval("quantity('2k').asInteger()"), Ok(Value::Int(2000)));
        assert_eq!(eval("quantity('1.5').isInteger()"), Ok(Value::Bool(false)));
        assert_eq!(
            eval("quantity('1.5').asApproximateFloat()"),
            Ok(Value::Float(1.5))
        );
        assert_eq!(eval("quantity('-3').sign()"), Ok(Value::Int(-1)));
        assert_eq!(eval("quantity('1').add(2).asInteger()"), Ok(Value::Int(3)));
        assert_eq!(
            eval("quantity('1').sub(quantity('500m')) == quantity('0.5')"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("isQuantity('1Mi')"), Ok(Value::Bool(true)));
        assert_eq!(eval("isQuantity('1 Mi')"), Ok(Value::Bool(false)));
        assert!(eval("quantity('1.5').asInteger()")
            .unwrap_err()
            .contains("cannot convert value to integer"));
        assert!(eval("quantity('x')")
            .unwrap_err()
            .contains("quantities must match"));
    }

    #[test]
    fn url_library() {
        assert_eq!(
            eval("url('https://example.com:8080/a%20b?x=1&x=2').getHost()"),
            Ok(Value::from("example.com:8080"))
        );
        assert_eq!(
            eval("url('https://example.com:8080/').getHostname()"),
            Ok(Value::from("example.com"))
        );
        assert_eq!(
            eval("url('https://example.com:8080/').getPort()"),
            Ok(Value::from("8080"))
        );
        assert_eq!(
            eval("url('https://[::1]:80/').getHostname()"),
            Ok(Value::from("::1"))
        );
        assert_eq!(
            eval("url('https://example.com/a%20b').getEscapedPath()"),
            Ok(Value::from("/a%20b"))
        );
        assert_eq!(
            eval("url('https://example.com').getScheme()"),
            Ok(Value::from("https"))
        );
        assert_eq!(
            eval("url('/absolute/path').getScheme()"),
            Ok(Value::from(""))
        );
        assert_eq!(
            eval("url('https://e.com/?x=1&x=2&y=a+b').getQuery()['x'][1]"),
            Ok(Value::from("2"))
        );
        assert_eq!(
            eval("url('https://e.com/?y=a+b').getQuery()['y'][0]"),
            Ok(Value::from("a b"))
        );
        assert_eq!(eval("isURL('https://example.com')"), Ok(Value::Bool(true)));
        assert_eq!(eval("isURL('relative/path')"), Ok(Value::Bool(false)));
        assert_eq!(eval("isURL('https://e.com:port/')"), Ok(Value::Bool(false)));
        assert!(eval("url('nope')").unwrap_err().contains("URL parse error"));
    }

    #[test]
    fn sets_and_bind() {
        assert_eq!(
            eval("sets.contains([1, 2, 3], [3, 1])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("sets.contains([1], [2])"), Ok(Value::Bool(false)));
        assert_eq!(
            eval("sets.equivalent([1, 2, 2], [2, 1])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("sets.intersects([1, 2], [3, 2])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("cel.bind(x, 2, x * x + x)"), Ok(Value::Int(6)));
    }
}
