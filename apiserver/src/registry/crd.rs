//! CustomResourceDefinitions (apiextensions.k8s.io/v1): types defined at run time. This file
//! is the definition object's own strategy (defaults, validation, columns); what serves the
//! types they define is [`super::custom`] and `crate::crd`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, CustomResourceDefinitionVersion,
    ServiceReference,
};
use serde_json::{json, Value};

use super::{col, Builtin, Column, Typed};
use crate::error::Cause;
use crate::validation as v;

/// The finalizer that holds a definition until every object of its type is gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// The customresourcedefinitions resource.
pub static INFO: Builtin = Builtin {
    group: "apiextensions.k8s.io",
    version: "v1",
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    singular: "customresourcedefinition",
    short_names: &["crd", "crds"],
    categories: &["api-extensions"],
    namespaced: false,
    subresources: &[("status", &super::subresource::STATUS)],
    selectable: &[],
    has_generation: true,
    strategy: &STRATEGY,
    schema: super::schema_of::<CustomResourceDefinition>,
};

/// The resource as served: stored where kube-apiserver keeps definitions.
pub fn info() -> super::ResourceInfo {
    super::ResourceInfo::from(&INFO).with(|r| {
        r.storage = "apiextensions.k8s.io/customresourcedefinitions".into();
    })
}

static STRATEGY: Typed<CustomResourceDefinition> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_create,
    prepare_update,
    ..Typed::new(columns, cells)
};

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col(
            "Created At",
            "date",
            0,
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        ),
    ]
}

fn cells(obj: &Value) -> Vec<Value> {
    vec![
        super::name(obj),
        obj.pointer("/metadata/creationTimestamp")
            .cloned()
            .unwrap_or(Value::Null),
    ]
}

/// What kube-apiserver's create strategy does: a new definition starts with no status but
/// the storage version recorded, and is held by the clean-up finalizer.
fn prepare_create(obj: &mut Value) {
    let storage = storage_version(obj);
    obj["status"] = json!({
        "conditions": [],
        "acceptedNames": {"plural": "", "kind": ""},
        "storedVersions": storage.into_iter().collect::<Vec<_>>(),
    });
    let fins = &mut obj["metadata"]["finalizers"];
    if !fins.is_array() {
        *fins = json!([]);
    }
    if let Some(a) = fins.as_array_mut() {
        if !a.iter().any(|f| f == CLEANUP_FINALIZER) {
            a.push(json!(CLEANUP_FINALIZER));
        }
    }
}

/// A new storage version joins `status.storedVersions`.
fn prepare_update(new: &mut Value, old: &Value) {
    let mut stored: Vec<Value> = old
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(v) = storage_version(new) {
        if !stored.iter().any(|s| s == v.as_str()) {
            stored.push(json!(v));
        }
    }
    if let Some(status) = new.get_mut("status").filter(|s| s.is_object()) {
        status["storedVersions"] = json!(stored);
    }
}

fn storage_version(obj: &Value) -> Option<String> {
    obj.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage") == Some(&json!(true)))
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map(String::from)
}

fn defaults(crd: &mut CustomResourceDefinition) {
    let names = &mut crd.spec.names;
    if names.singular.as_deref().unwrap_or("").is_empty() {
        names.singular = Some(names.kind.to_lowercase());
    }
    if names.list_kind.as_deref().unwrap_or("").is_empty() && !names.kind.is_empty() {
        names.list_kind = Some(format!("{}List", names.kind));
    }
    let conversion = crd.spec.conversion.get_or_insert_with(Default::default);
    if conversion.strategy.is_empty() {
        conversion.strategy = "None".into();
    }
    let service = conversion
        .webhook
        .as_mut()
        .and_then(|w| w.client_config.as_mut())
        .and_then(|cc| cc.service.as_mut());
    if let Some(svc) = service {
        svc.port.get_or_insert(443);
    }
    for version in &mut crd.spec.versions {
        for c in version.additional_printer_columns.iter_mut().flatten() {
            if c.priority.is_none() {
                c.priority = Some(0);
            }
        }
    }
}

const KIND_RULE: &str =
    "may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?";
const PRINTER_TYPES: &[&str] = &["integer", "number", "string", "boolean", "date"];

fn validate(crd: &CustomResourceDefinition) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = &crd.spec;
    let name = crd.metadata.name.as_deref().unwrap_or("");
    if spec.group.is_empty() {
        out.push(Cause::required("spec.group"));
    } else {
        v::subdomain("spec.group", &spec.group, &mut out);
        if spec.group.split('.').count() < 2 {
            out.push(Cause::invalid(
                "spec.group",
                &json!(spec.group),
                "should be a domain with at least one dot",
            ));
        }
    }
    let expected = format!("{}.{}", spec.names.plural, spec.group);
    if name != expected {
        out.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    validate_names(&spec.names, &mut out);
    match spec.scope.as_str() {
        "Namespaced" | "Cluster" => {}
        "" => out.push(Cause::required("spec.scope")),
        other => out.push(Cause::not_supported(
            "spec.scope",
            other,
            &["Cluster", "Namespaced"],
        )),
    }
    if let Some(c) = &spec.conversion {
        if c.strategy != "None" && spec.preserve_unknown_fields == Some(true) {
            out.push(Cause::invalid(
                "spec.conversion.strategy",
                &json!(c.strategy),
                "must be None if spec.preserveUnknownFields is true",
            ));
        }
        validate_conversion(c, &mut out);
    }
    validate_versions(spec.versions.as_slice(), &mut out);
    out
}

/// `spec.conversion`, as kube-apiserver checks it. Its messages name the fields as
/// Kubernetes' internal type does (`webhookClientConfig`, `conversionReviewVersions` directly
/// under `spec.conversion`), as kube-apiserver's do.
fn validate_conversion(c: &CustomResourceConversion, out: &mut Vec<Cause>) {
    const AT: &str = "spec.conversion";
    let client_config = c.webhook.as_ref().and_then(|w| w.client_config.as_ref());
    let review_versions = c
        .webhook
        .as_ref()
        .map(|w| w.conversion_review_versions.as_slice())
        .unwrap_or_default();
    match c.strategy.as_str() {
        "Webhook" => {
            match client_config {
                None => out.push(Cause::required_because(
                    format!("{AT}.webhookClientConfig"),
                    "required when strategy is set to Webhook",
                )),
                Some(cc) => match (&cc.url, &cc.service) {
                    (Some(url), None) => {
                        webhook_url(&format!("{AT}.webhookClientConfig.url"), url, out)
                    }
                    (None, Some(svc)) => {
                        webhook_service(&format!("{AT}.webhookClientConfig.service"), svc, out)
                    }
                    _ => out.push(Cause::required_because(
                        format!("{AT}.webhookClientConfig"),
                        "exactly one of url or service is required",
                    )),
                },
            }
            review_versions_valid(
                &format!("{AT}.conversionReviewVersions"),
                review_versions,
                out,
            );
        }
        other => {
            if other.is_empty() {
                out.push(Cause::required(format!("{AT}.strategy")));
            } else if other != "None" {
                out.push(Cause::not_supported(
                    format!("{AT}.strategy"),
                    other,
                    &["None", "Webhook"],
                ));
            }
            if client_config.is_some() {
                out.push(Cause::forbidden(
                    format!("{AT}.webhookClientConfig"),
                    "should not be set when strategy is not set to Webhook",
                ));
            }
            if !review_versions.is_empty() {
                out.push(Cause::forbidden(
                    format!("{AT}.conversionReviewVersions"),
                    "should not be set when strategy is not set to Webhook",
                ));
            }
        }
    }
}

/// The `ConversionReview` versions a webhook may speak: at least one this server knows.
fn review_versions_valid(at: &str, versions: &[String], out: &mut Vec<Cause>) {
    if versions.is_empty() {
        out.push(Cause::required(at));
        return;
    }
    let mut seen = Vec::new();
    for (n, version) in versions.iter().enumerate() {
        if seen.contains(&version) {
            out.push(Cause::invalid(
                format!("{at}[{n}]"),
                &json!(version),
                "duplicate version",
            ));
            continue;
        }
        seen.push(version);
        if !v::is_dns1035_label(version) {
            out.push(Cause::invalid(
                format!("{at}[{n}]"),
                &json!(version),
                v::DNS1035_LABEL_MSG,
            ));
        }
    }
    let known = super::custom::conversion::REVIEW_VERSIONS;
    if !versions.iter().any(|v| known.contains(&v.as_str())) {
        // The value as Kubernetes prints a list of strings.
        let listed: Vec<String> = versions.iter().map(|v| format!("{v:?}")).collect();
        out.push(Cause {
            kind: crate::error::CauseKind::Invalid,
            field: at.to_string(),
            message: format!(
                "[]string{{{}}}: must include at least one of v1, v1beta1",
                listed.join(", ")
            ),
        });
    }
}

const URL_FORM: &str = "; desired format: https://host[/path]";

/// A webhook's `url`: https, a host, no user, fragment or query.
fn webhook_url(at: &str, url: &str, out: &mut Vec<Cause>) {
    let hostless = match url.split_once("://") {
        Some((_, rest)) => rest.is_empty() || rest.starts_with('/'),
        None => true,
    };
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        // Kubernetes' parser takes a URL without a scheme or a host, then says what it lacks.
        Err(_) if hostless => {
            let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
            if scheme != "https" {
                out.push(Cause::invalid(
                    at,
                    &json!(scheme),
                    format!("'https' is the only allowed URL scheme{URL_FORM}"),
                ));
            }
            out.push(Cause::invalid(
                at,
                &json!(""),
                format!("host must be specified{URL_FORM}"),
            ));
            return;
        }
        Err(e) => {
            out.push(Cause::required_because(
                at,
                format!("url must be a valid URL: {e}{URL_FORM}"),
            ));
            return;
        }
    };
    if parsed.scheme() != "https" {
        out.push(Cause::invalid(
            at,
            &json!(parsed.scheme()),
            format!("'https' is the only allowed URL scheme{URL_FORM}"),
        ));
    }
    if parsed.host_str().unwrap_or("").is_empty() {
        out.push(Cause::invalid(
            at,
            &json!(""),
            format!("host must be specified{URL_FORM}"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let user = match parsed.password() {
            Some(p) => format!("{}:{p}", parsed.username()),
            None => parsed.username().to_string(),
        };
        out.push(Cause::invalid(
            at,
            &json!(user),
            "user information is not permitted in the URL",
        ));
    }
    if let Some(f) = parsed.fragment().filter(|f| !f.is_empty()) {
        out.push(Cause::invalid(
            at,
            &json!(f),
            "fragments are not permitted in the URL",
        ));
    }
    if let Some(q) = parsed.query().filter(|q| !q.is_empty()) {
        out.push(Cause::invalid(
            at,
            &json!(q),
            "query parameters are not permitted in the URL",
        ));
    }
}

/// A webhook's `service`: name, namespace, a valid port, a path of subdomain segments.
fn webhook_service(at: &str, svc: &ServiceReference, out: &mut Vec<Cause>) {
    if svc.name.is_empty() {
        out.push(Cause::required(format!("{at}.name")));
    }
    if svc.namespace.is_empty() {
        out.push(Cause::required(format!("{at}.namespace")));
    }
    let port = svc.port.unwrap_or(443);
    if !(1..=65535).contains(&port) {
        out.push(Cause::invalid(
            format!("{at}.port"),
            &json!(port),
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    let Some(path) = svc.path.as_deref() else {
        return;
    };
    if path.is_empty() || path == "/" {
        return;
    }
    let at = format!("{at}.path");
    if path == "//" {
        out.push(Cause::invalid(
            &at,
            &json!(path),
            "segment[0] may not be empty",
        ));
        return;
    }
    if !path.starts_with('/') {
        out.push(Cause::invalid(&at, &json!(path), "must start with a '/'"));
    }
    let rest = path.get(1..).unwrap_or("");
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for (n, step) in rest.split('/').enumerate() {
        if step.is_empty() {
            out.push(Cause::invalid(
                &at,
                &json!(path),
                format!("segment[{n}] may not be empty"),
            ));
        } else if !v::is_dns1123_subdomain(step) {
            let why = if step.len() > 253 {
                "must be no more than 253 characters".to_string()
            } else {
                v::DNS1123_SUBDOMAIN_MSG.to_string()
            };
            out.push(Cause::invalid(
                &at,
                &json!(path),
                format!("segment[{n}]: {why}"),
            ));
        }
    }
}

/// Whether a CA bundle holds certificates a client can trust; why not, in the words of
/// Kubernetes' client (`unable to load root certificates: ...`).
fn ca_bundle_problem(bundle: &[u8]) -> Option<String> {
    let why = |w: String| Some(format!("unable to load root certificates: {w}"));
    let mut rest = bundle;
    let mut found = false;
    // Leading and trailing text around PEM blocks is allowed, as Go's decoder allows it.
    while !rest.iter().all(u8::is_ascii_whitespace) {
        match x509_parser::pem::parse_x509_pem(rest) {
            Ok((next, block)) => {
                if block.label == "CERTIFICATE" {
                    if let Err(e) = block.parse_x509() {
                        return why(format!("failed to parse certificate: {e}"));
                    }
                    found = true;
                }
                rest = next;
            }
            Err(_) if found => break,
            Err(_) => return why("unable to parse bytes as PEM block".into()),
        }
    }
    if found {
        None
    } else {
        why("no valid certificate authority data seen".into())
    }
}

/// A webhook client config's CA bundle, once the definition is established: an invalid one
/// is refused unless the old one was invalid too (as Kubernetes lets a definition that was
/// created with a bad bundle be fixed step by step).
fn ca_bundle_update(new: &CustomResourceDefinition, old: &CustomResourceDefinition) -> Vec<Cause> {
    let bundle = |c: &CustomResourceDefinition| {
        c.spec
            .conversion
            .as_ref()
            .filter(|c| c.strategy == "Webhook")
            .and_then(|c| c.webhook.as_ref())
            .and_then(|w| w.client_config.as_ref())
            .and_then(|cc| cc.ca_bundle.as_ref())
            .map(|b| b.0.clone())
            .filter(|b| !b.is_empty())
    };
    let Some(new_bundle) = bundle(new) else {
        return Vec::new();
    };
    let established = old
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    if !established || bundle(old).is_some_and(|b| ca_bundle_problem(&b).is_some()) {
        return Vec::new();
    }
    match ca_bundle_problem(&new_bundle) {
        None => Vec::new(),
        Some(why) => {
            // The value as Kubernetes prints bytes.
            let bytes: Vec<String> = new_bundle.iter().map(|b| format!("{b:#x}")).collect();
            vec![Cause {
                kind: crate::error::CauseKind::Invalid,
                field: "spec.conversion.webhookClientConfig.caBundle".into(),
                message: format!("[]byte{{{}}}: {why}", bytes.join(", ")),
            }]
        }
    }
}

fn validate_names(
    names: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionNames,
    out: &mut Vec<Cause>,
) {
    let label = |field: &str, value: &str, out: &mut Vec<Cause>| {
        if !v::is_dns1035_label(value) {
            out.push(Cause::invalid(field, &json!(value), v::DNS1035_LABEL_MSG));
        }
    };
    if names.plural.is_empty() {
        out.push(Cause::required("spec.names.plural"));
    } else {
        label("spec.names.plural", &names.plural, out);
    }
    if let Some(s) = names.singular.as_deref().filter(|s| !s.is_empty()) {
        label("spec.names.singular", s, out);
    }
    let kind_ok = |k: &str| v::is_dns1035_label(&k.to_lowercase());
    if names.kind.is_empty() {
        out.push(Cause::required("spec.names.kind"));
    } else if !kind_ok(&names.kind) {
        out.push(Cause::invalid(
            "spec.names.kind",
            &json!(names.kind),
            KIND_RULE,
        ));
    }
    match names.list_kind.as_deref() {
        None | Some("") => out.push(Cause::required("spec.names.listKind")),
        Some(lk) if !kind_ok(lk) => {
            out.push(Cause::invalid("spec.names.listKind", &json!(lk), KIND_RULE))
        }
        Some(lk) if lk == names.kind => out.push(Cause::invalid(
            "spec.names.listKind",
            &json!(lk),
            "kind and listKind may not be the same or parsing become ambiguous",
        )),
        _ => {}
    }
    for (n, s) in names.short_names.iter().flatten().enumerate() {
        label(&format!("spec.names.shortNames[{n}]"), s, out);
    }
    for (n, c) in names.categories.iter().flatten().enumerate() {
        label(&format!("spec.names.categories[{n}]"), c, out);
    }
}

fn validate_versions(versions: &[CustomResourceDefinitionVersion], out: &mut Vec<Cause>) {
    if versions.is_empty() {
        out.push(Cause::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
        return;
    }
    let storage = versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        out.push(Cause::invalid(
            "spec.versions",
            &v::val(&versions.iter().map(|v| &v.name).collect::<Vec<_>>()),
            "must have exactly one version marked as storage version",
        ));
    }
    if !versions.iter().any(|v| v.served) {
        out.push(Cause::invalid(
            "spec.versions",
            &v::val(&versions.iter().map(|v| &v.name).collect::<Vec<_>>()),
            "must have at least one version served",
        ));
    }
    let mut seen = Vec::new();
    for (n, version) in versions.iter().enumerate() {
        let at = format!("spec.versions[{n}]");
        if !v::is_dns1035_label(&version.name) {
            out.push(Cause::invalid(
                format!("{at}.name"),
                &json!(version.name),
                v::DNS1035_LABEL_MSG,
            ));
        }
        if seen.contains(&&version.name) {
            out.push(Cause::duplicate(format!("{at}.name"), &json!(version.name)));
        }
        seen.push(&version.name);
        match version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
        {
            None => out.push(Cause::required(format!("{at}.schema.openAPIV3Schema"))),
            Some(schema) => {
                let json = v::val(schema);
                out.extend(super::custom::check_schema(
                    &format!("{at}.schema.openAPIV3Schema"),
                    &json,
                ));
            }
        }
        if let Some(scale) = version.subresources.as_ref().and_then(|s| s.scale.as_ref()) {
            let sat = format!("{at}.subresources.scale");
            let spec_path = &scale.spec_replicas_path;
            if !spec_path.starts_with(".spec") {
                out.push(Cause::invalid(
                    format!("{sat}.specReplicasPath"),
                    &json!(spec_path),
                    "should be a json path under .spec",
                ));
            }
            if !scale.status_replicas_path.starts_with(".status") {
                out.push(Cause::invalid(
                    format!("{sat}.statusReplicasPath"),
                    &json!(scale.status_replicas_path),
                    "should be a json path under .status",
                ));
            }
            if let Some(sel) = scale.label_selector_path.as_deref() {
                if !sel.starts_with(".spec") && !sel.starts_with(".status") {
                    out.push(Cause::invalid(
                        format!("{sat}.labelSelectorPath"),
                        &json!(sel),
                        "should be a json path under either .spec or .status",
                    ));
                }
            }
        }
        for (c, column) in version
            .additional_printer_columns
            .iter()
            .flatten()
            .enumerate()
        {
            let cat = format!("{at}.additionalPrinterColumns[{c}]");
            if column.name.is_empty() {
                out.push(Cause::required(format!("{cat}.name")));
            }
            if !PRINTER_TYPES.contains(&column.type_.as_str()) {
                out.push(Cause::not_supported(
                    format!("{cat}.type"),
                    &column.type_,
                    PRINTER_TYPES,
                ));
            }
            if column.json_path.is_empty() {
                out.push(Cause::required(format!("{cat}.JSONPath")));
            } else if let Err(e) = super::custom::check_json_path(&column.json_path) {
                out.push(Cause::invalid(
                    format!("{cat}.JSONPath"),
                    &json!(column.json_path),
                    e,
                ));
            }
        }
        for (f, field) in version.selectable_fields.iter().flatten().enumerate() {
            if !field.json_path.starts_with('.') {
                out.push(Cause::invalid(
                    format!("{at}.selectableFields[{f}].jsonPath"),
                    &json!(field.json_path),
                    "must be a simple json path starting with .",
                ));
            }
        }
    }
}

fn validate_update(new: &CustomResourceDefinition, old: &CustomResourceDefinition) -> Vec<Cause> {
    let mut out = ca_bundle_update(new, old);
    if new.spec.scope != old.spec.scope {
        out.push(Cause::immutable("spec.scope"));
    }
    if new.spec.group != old.spec.group {
        out.push(Cause::immutable("spec.group"));
    }
    // Every version objects may still be stored in stays defined.
    let stored = new
        .status
        .as_ref()
        .and_then(|s| s.stored_versions.clone())
        .unwrap_or_default();
    for (n, s) in stored.iter().enumerate() {
        if !new.spec.versions.iter().any(|v| &v.name == s) {
            out.push(Cause::invalid(
                format!("status.storedVersions[{n}]"),
                &json!(s),
                "must appear in spec.versions",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd(conversion: Value) -> CustomResourceDefinition {
        let mut crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "conversion": conversion,
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v2", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                ],
            },
        }))
        .expect("a definition");
        defaults(&mut crd);
        crd
    }

    fn problems(conversion: Value) -> Vec<String> {
        validate(&crd(conversion)).iter().map(Cause::text).collect()
    }

    fn webhook(client_config: Value, versions: Value) -> Value {
        json!({"strategy": "Webhook", "webhook": {
            "clientConfig": client_config, "conversionReviewVersions": versions,
        }})
    }

    #[test]
    fn a_webhook_by_url_or_service_is_accepted() {
        assert_eq!(
            problems(webhook(
                json!({"url": "https://convert.example.com/crd"}),
                json!(["v1"])
            )),
            Vec::<String>::new()
        );
        let by_service = crd(webhook(
            json!({"service": {"namespace": "ops", "name": "converter", "path": "/convert"}}),
            json!(["v1beta1", "v1"]),
        ));
        assert!(validate(&by_service).is_empty());
        let port = by_service
            .spec
            .conversion
            .as_ref()
            .unwrap()
            .webhook
            .as_ref()
            .unwrap();
        assert_eq!(
            port.client_config
                .as_ref()
                .unwrap()
                .service
                .as_ref()
                .unwrap()
                .port,
            Some(443),
            "the service port defaults to 443"
        );
    }

    #[test]
    fn webhook_settings_are_checked_in_kubernetes_words() {
        let cases = [
            (
                json!({"strategy": "Webhook"}),
                vec![
                    "spec.conversion.webhookClientConfig: Required value: required when strategy is set to Webhook",
                    "spec.conversion.conversionReviewVersions: Required value",
                ],
            ),
            (
                webhook(json!({"url": "https://a.example.com/", "service": {"namespace": "a", "name": "b"}}), json!(["v1"])),
                vec!["spec.conversion.webhookClientConfig: Required value: exactly one of url or service is required"],
            ),
            (
                webhook(json!({"url": "https://a.example.com/"}), json!(["v3", "v3"])),
                vec![
                    r#"spec.conversion.conversionReviewVersions[1]: Invalid value: "v3": duplicate version"#,
                    r#"spec.conversion.conversionReviewVersions: Invalid value: []string{"v3", "v3"}: must include at least one of v1, v1beta1"#,
                ],
            ),
            (
                webhook(json!({"url": "http://user@a.example.com/x?y=1#z"}), json!(["v1"])),
                vec![
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "http": 'https' is the only allowed URL scheme; desired format: https://host[/path]"#,
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "user": user information is not permitted in the URL"#,
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "z": fragments are not permitted in the URL"#,
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "y=1": query parameters are not permitted in the URL"#,
                ],
            ),
            (
                webhook(json!({"url": "convert.example.com"}), json!(["v1"])),
                vec![
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "": 'https' is the only allowed URL scheme; desired format: https://host[/path]"#,
                    r#"spec.conversion.webhookClientConfig.url: Invalid value: "": host must be specified; desired format: https://host[/path]"#,
                ],
            ),
            (
                webhook(json!({"service": {"namespace": "", "name": "", "port": 70000, "path": "convert//Crd"}}), json!(["v1"])),
                vec![
                    "spec.conversion.webhookClientConfig.service.name: Required value",
                    "spec.conversion.webhookClientConfig.service.namespace: Required value",
                    "spec.conversion.webhookClientConfig.service.port: Invalid value: 70000: port is not valid: must be between 1 and 65535, inclusive",
                    r#"spec.conversion.webhookClientConfig.service.path: Invalid value: "convert//Crd": must start with a '/'"#,
                ],
            ),
            (
                json!({"strategy": "None", "webhook": {"clientConfig": {"url": "https://a.example.com/"}, "conversionReviewVersions": ["v1"]}}),
                vec![
                    "spec.conversion.webhookClientConfig: Forbidden: should not be set when strategy is not set to Webhook",
                    "spec.conversion.conversionReviewVersions: Forbidden: should not be set when strategy is not set to Webhook",
                ],
            ),
            (
                json!({"strategy": "Magic"}),
                vec![r#"spec.conversion.strategy: Unsupported value: "Magic": supported values: "None", "Webhook""#],
            ),
        ];
        for (conversion, want) in cases {
            let got = problems(conversion.clone());
            // The path check reports each bad segment too; only the first problems matter here.
            for w in &want {
                assert!(
                    got.iter().any(|g| g == w),
                    "{conversion}\n  missing: {w}\n  got: {got:#?}"
                );
            }
        }
    }

    #[test]
    fn a_bad_ca_bundle_is_refused_once_the_definition_is_established() {
        let bundle = |b: &[u8]| {
            webhook(
                json!({"url": "https://a.example.com/", "caBundle": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)}),
                json!(["v1"]),
            )
        };
        let cert = rcgen::generate_simple_self_signed(vec!["a.example.com".into()])
            .unwrap()
            .cert
            .pem();
        let mut old = crd(bundle(cert.as_bytes()));
        assert!(
            validate(&crd(bundle(b"junk"))).is_empty(),
            "not checked on create"
        );
        let bad = crd(bundle(b"junk"));
        assert!(
            validate_update(&bad, &old).is_empty(),
            "nor before it is established"
        );
        old.status = serde_json::from_value(json!({
            "conditions": [{"type": "Established", "status": "True"}],
        }))
        .unwrap();
        let got: Vec<String> = validate_update(&bad, &old)
            .iter()
            .map(Cause::text)
            .collect();
        assert_eq!(
            got,
            ["spec.conversion.webhookClientConfig.caBundle: Invalid value: []byte{0x6a, 0x75, 0x6e, 0x6b}: unable to load root certificates: unable to parse bytes as PEM block"]
        );
        assert!(validate_update(&crd(bundle(cert.as_bytes())), &old).is_empty());
        // A definition established with a bad bundle may keep a bad one while it is fixed.
        let mut old_bad = bad.clone();
        old_bad.status = old.status.clone();
        assert!(validate_update(&bad, &old_bad).is_empty());
        assert_eq!(
            ca_bundle_problem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            Some(
                "unable to load root certificates: no valid certificate authority data seen".into()
            )
        );
    }
}
