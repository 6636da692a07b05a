//! Field paths as Kubernetes' `field.Path` prints them: `spec.ports[0].port`,
//! `spec.labels[app]`, `properties[spec].type`. The empty string stands for the nil path,
//! which Kubernetes prints as `<nil>` (errors about the whole object).

/// `base.name` (or `name` under the nil path).
pub(crate) fn child(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}.{name}")
    }
}

/// `base[key]`.
pub(crate) fn key(base: &str, k: &str) -> String {
    format!("{base}[{k}]")
}

/// `base[i]`.
pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// The path as an error names it: `<nil>` for the nil path.
pub(crate) fn shown(p: &str) -> String {
    if p.is_empty() {
        "<nil>".to_string()
    } else {
        p.to_string()
    }
}
