//! The API server's modules form layers: no module reaches, directly or through others, a
//! module that reaches back to it. Read from the source, so a new import that closes a cycle
//! fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `crate::MODULE` a file names outside its tests and comments.
fn references(source: &str) -> BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The top-level module → the top-level modules it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let targets = edges.entry(top.clone()).or_default();
            for r in references(&source) {
                if r != top {
                    targets.insert(r);
                }
            }
        }
    }
    edges
}

/// A cycle through `start`, if any.
fn cycle_from(edges: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        edges: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        for next in edges.get(node).into_iter().flatten() {
            if *next == path[0] {
                let mut c = path.clone();
                c.push(next.clone());
                return Some(c);
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if let Some(c) = walk(edges, next, path, seen) {
                    return Some(c);
                }
                path.pop();
            }
        }
        None
    }
    walk(
        edges,
        start,
        &mut vec![start.to_string()],
        &mut BTreeSet::new(),
    )
}

#[test]
fn modules_form_no_import_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    assert!(edges.contains_key("store") && edges["store"].contains("registry"));
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|m| cycle_from(&edges, m))
        .map(|c| c.join(" → "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_check_sees_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert!(cycle_from(&edges, "a").is_none());
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycle_from(&edges, "a").unwrap(), vec!["a", "b", "c", "a"]);
    assert_eq!(
        references("use crate::store::X;\n// crate::rest\nfn f() { crate::error::E }"),
        ["error", "store"].iter().map(|s| s.to_string()).collect()
    );
}
