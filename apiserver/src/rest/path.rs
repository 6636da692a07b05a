//! What a request path addresses: discovery, a resource (with its namespace, name and
//! subresource), or one of the server's other paths.

use crate::query::decode_segment;

/// A parsed resource path.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Resource plural.
    pub resource: String,
    /// Object name.
    pub name: Option<String>,
    /// Subresource.
    pub subresource: Option<String>,
    /// Whether the path used the legacy `/watch/` prefix.
    pub legacy_watch: bool,
    /// What follows the subresource, as sent (`/a/b/` of `.../pods/x/proxy/a/b/`): the path a
    /// `proxy` subresource passes on. Empty when nothing follows.
    pub rest: String,
}

/// What a path addresses.
#[derive(Debug)]
pub enum Route {
    /// A resource request.
    Resource(Target),
    /// `/api`, `/apis`, `/apis/<group>`, `/api/v1`, `/apis/<g>/<v>`.
    Discovery(Vec<String>),
    /// Anything else (`/version`, `/healthz`, `/openapi/...`).
    Other(String),
}

/// Splits a path into a route. Never fails: what is not a resource path is `Other`.
pub fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode_segment)
        .collect();
    let (group, version, rest) = match segs.first().map(String::as_str) {
        Some("api") if segs.len() <= 2 => return Route::Discovery(segs),
        Some("api") => (String::new(), segs[1].clone(), &segs[2..]),
        Some("apis") if segs.len() <= 3 => return Route::Discovery(segs),
        Some("apis") => (segs[1].clone(), segs[2].clone(), &segs[3..]),
        _ => return Route::Other(path.to_string()),
    };
    let mut t = Target {
        group,
        version,
        ..Default::default()
    };
    let mut rest = rest.to_vec();
    if rest.first().map(String::as_str) == Some("watch") {
        t.legacy_watch = true;
        rest.remove(0);
    }
    let namespaced_form = rest.first().map(String::as_str) == Some("namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && matches!(rest[2].as_str(), "status" | "finalize"));
    if namespaced_form {
        t.namespace = Some(rest[1].clone());
        rest.drain(0..2);
    }
    t.resource = rest.first().cloned().unwrap_or_default();
    t.name = rest.get(1).cloned();
    t.subresource = rest.get(2).cloned();
    if rest.len() > 3 {
        if t.subresource.as_deref() != Some("proxy") {
            return Route::Other(path.to_string());
        }
        t.rest = after_segments(path, segs.len() - (rest.len() - 3)).to_string();
    }
    Route::Resource(t)
}

/// What follows the first `n` non-empty segments of `path`, from the `/` before the next.
fn after_segments(path: &str, n: usize) -> &str {
    let mut seen = 0;
    let mut in_segment = false;
    for (i, c) in path.char_indices() {
        if c == '/' {
            if in_segment && seen == n {
                return &path[i..];
            }
            in_segment = false;
        } else if !in_segment {
            in_segment = true;
            seen += 1;
        }
    }
    ""
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn routes() {
        let Route::Resource(t) = route("/api/v1/namespaces/default/pods/web/status") else {
            panic!()
        };
        assert_eq!(
            (
                t.namespace.as_deref(),
                t.resource.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            (Some("default"), "pods", Some("web"), Some("status"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!(
            (t.namespace, t.resource.as_str(), t.name.as_deref()),
            (None, "namespaces", Some("kube-system"))
        );
        let Route::Resource(t) = route("/api/v1/namespaces/x/status") else {
            panic!()
        };
        assert_eq!(
            (
                t.resource.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("namespaces", Some("x"), Some("status"))
        );
        let Route::Resource(t) = route("/apis/apps/v1/namespaces/d/deployments") else {
            panic!()
        };
        assert_eq!(
            (
                t.group.as_str(),
                t.namespace.as_deref(),
                t.resource.as_str()
            ),
            ("apps", Some("d"), "deployments")
        );
        let Route::Resource(t) = route("/api/v1/watch/namespaces/d/pods") else {
            panic!()
        };
        assert!(t.legacy_watch);
        assert!(matches!(route("/apis/apps"), Route::Discovery(_)));
        assert!(matches!(route("/version"), Route::Other(_)));
        let Route::Resource(t) = route("/api/v1/namespaces/d/pods/a%1\u{e9}") else {
            panic!()
        };
        assert_eq!(t.name.as_deref(), Some("a%1\u{e9}"));
        let Route::Resource(t) =
            route("/api/v1/namespaces/d/pods/https:web:8443/proxy/a%20b//c/?x")
        else {
            panic!()
        };
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref(), t.rest.as_str()),
            (Some("https:web:8443"), Some("proxy"), "/a%20b//c/?x")
        );
        let Route::Resource(t) = route("/api/v1/nodes/n1/proxy/") else {
            panic!()
        };
        assert_eq!((t.name.as_deref(), t.rest.as_str()), (Some("n1"), ""));
        assert!(matches!(
            route("/api/v1/namespaces/d/pods/x/status/more"),
            Route::Other(_)
        ));
    }

    proptest! {
        #[test]
        fn any_path_routes(path in ".*") {
            let _ = route(&path);
        }

        #[test]
        fn api_paths_route(segs in proptest::collection::vec("[^/]*", 0..8)) {
            let _ = route(&format!("/api/v1/{}", segs.join("/")));
            let _ = route(&format!("/apis/{}", segs.join("/")));
        }
    }
}
