//! CertificateSigningRequests (certificates.k8s.io/v1): a request for a certificate from a
//! signer, with the requester's identity recorded by the server, approved or denied through its
//! `approval` subresource (`kubectl certificate approve|deny`) and issued through its `status`
//! subresource by the signer. Validation and columns as kube-apiserver's.

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest as Csr, CertificateSigningRequestCondition as Condition,
};
use serde_json::{json, Value};

use super::subresource::Subresource;
use super::{
    col, s, Admitted, Builtin, Column, NameRule, Objects, Printer, Rejection, Resource, Typed,
};
use crate::auth::UserInfo;
use crate::error::{Cause, Error, Result};
use crate::patch::{self, PatchType};
use crate::request::{WriteOpts, Written};
use crate::validation as v;

/// The certificatesigningrequests resource.
pub static INFO: Builtin = Builtin {
    group: "certificates.k8s.io",
    version: "v1",
    kind: "CertificateSigningRequest",
    plural: "certificatesigningrequests",
    singular: "certificatesigningrequest",
    short_names: &["csr"],
    categories: &[],
    namespaced: false,
    subresources: &[("status", &STATUS), ("approval", &APPROVAL)],
    selectable: &["spec.signerName"],
    has_generation: false,
    strategy: &STRATEGY,
    schema: super::schema_of::<Csr>,
};

const KIND: &str = "CertificateSigningRequest";
const GROUP: &str = "certificates.k8s.io";

static BASE: Typed<Csr> = Typed {
    status: true,
    defaults,
    validate,
    validate_update,
    prepare_update,
    name_rule: NameRule::PathSegment,
    ..Typed::new(columns, cells)
};

/// The typed strategy, and the requester written into the spec on create.
struct Strategy;

static STRATEGY: Strategy = Strategy;

#[async_trait::async_trait]
impl super::Strategy for Strategy {
    fn default(&self, obj: Value) -> std::result::Result<Admitted, Rejection> {
        BASE.default(obj)
    }
    fn validate(&self, obj: &Value, old: Option<&Value>) -> std::result::Result<(), Rejection> {
        super::Strategy::validate(&BASE, obj, old)
    }
    fn has_status(&self) -> bool {
        true
    }
    fn strict_json(&self, body: &[u8]) -> Vec<crate::strict::Problem> {
        BASE.strict_json(body)
    }
    fn prepare_create(&self, obj: &mut Value, user: &UserInfo) {
        // Whatever the client wrote, the requester is who sent the request, and a request
        // starts neither approved nor issued.
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            for f in ["username", "uid", "groups", "extra"] {
                spec.remove(f);
            }
            spec.insert("username".into(), json!(user.name));
            if !user.uid.is_empty() {
                spec.insert("uid".into(), json!(user.uid));
            }
            if !user.groups.is_empty() {
                spec.insert("groups".into(), json!(user.groups));
            }
            if !user.extra.is_empty() {
                spec.insert("extra".into(), json!(user.extra));
            }
        }
        super::clear_status(obj);
    }
    fn prepare_update(&self, new: &mut Value, old: &Value) {
        prepare_update(new, old)
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn field(&self, obj: &Value, field: &str) -> Option<String> {
        (field == "spec.signerName").then(|| s(obj, "/spec/signerName"))
    }
}

impl Printer for Strategy {
    fn columns(&self) -> Vec<Column> {
        columns()
    }
    fn cells(&self, obj: &Value) -> Vec<Value> {
        cells(obj)
    }
}

/// The spec never changes after create.
fn prepare_update(new: &mut Value, old: &Value) {
    match old.get("spec") {
        Some(spec) => new["spec"] = spec.clone(),
        None => {
            new.as_object_mut().map(|o| o.remove("spec"));
        }
    }
}

fn defaults(csr: &mut Csr) {
    if let Some(conds) = csr.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        for c in conds {
            if c.status.is_empty() {
                c.status = "True".into();
            }
        }
    }
}

const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Parses a PEM certificate request and checks its signature, as Go's x509 does.
pub fn check_request(pem: &[u8]) -> std::result::Result<(), String> {
    use x509_parser::prelude::FromDer;
    let block = x509_parser::pem::parse_x509_pem(pem)
        .ok()
        .map(|(_, p)| p)
        .filter(|p| p.label == "CERTIFICATE REQUEST")
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    req.verify_signature()
        .map_err(|e| format!("x509: signature verification failure: {e}"))
}

/// Checks that `pem` is one or more PEM CERTIFICATE blocks that parse.
fn check_certificate(mut pem: &[u8]) -> std::result::Result<(), String> {
    let mut blocks = 0;
    while pem.iter().any(|b| !b.is_ascii_whitespace()) {
        let Ok((rest, block)) = x509_parser::pem::parse_x509_pem(pem) else {
            break;
        };
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        x509_parser::parse_x509_certificate(&block.contents).map_err(|e| format!("x509: {e}"))?;
        blocks += 1;
        pem = rest;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

/// Kubernetes' signer name rule: `example.com/signer-name`.
fn signer_name(field: &str, name: &str, out: &mut Vec<Cause>) {
    if name.is_empty() {
        out.push(Cause::required(field));
        return;
    }
    if name == "kubernetes.io/legacy-unknown" {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "the legacy signerName is not allowed via this API version",
        ));
        return;
    }
    let Some((domain, path)) = name.split_once('/').filter(|(_, p)| !p.contains('/')) else {
        out.push(Cause::invalid(
            field,
            &json!(name),
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
        return;
    };
    if domain.len() > 253 {
        out.push(Cause::too_long(field, 253));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if let Some(bad) = labels.iter().find(|l| !v::is_dns1123_label(l)) {
        out.push(Cause::invalid(
            field,
            &json!(domain),
            format!("validating label {bad:?}: {}", v::DNS1123_LABEL_MSG),
        ));
    }
    if labels.len() < 2 {
        out.push(Cause::invalid(
            field,
            &json!(domain),
            "should be a domain with at least two segments separated by dots",
        ));
    }
    if path.len() > 253 + 63 + 1 {
        out.push(Cause::too_long(field, 253 + 63 + 1));
    }
    if let Some(bad) = path.split('.').find(|seg| !v::is_dns1123_subdomain(seg)) {
        out.push(Cause::invalid(
            field,
            &json!(path),
            format!("validating segment {bad:?}: {}", v::DNS1123_SUBDOMAIN_MSG),
        ));
    }
}

fn conditions(csr: &Csr) -> &[Condition] {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[])
}

fn certificate(csr: &Csr) -> &[u8] {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .map(|c| c.0.as_slice())
        .unwrap_or(&[])
}

fn validate(csr: &Csr) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = &csr.spec;
    if let Err(e) = check_request(&spec.request.0) {
        out.push(Cause::invalid("spec.request", &v::val(&spec.request), e));
    }
    let usages = spec.usages.as_deref().unwrap_or(&[]);
    if usages.is_empty() {
        out.push(Cause::required("spec.usages"));
    }
    for (i, u) in usages.iter().enumerate() {
        if !USAGES.contains(&u.as_str()) {
            let mut allowed = USAGES.to_vec();
            allowed.sort_unstable();
            out.push(Cause::not_supported(
                format!("spec.usages[{i}]"),
                u,
                &allowed,
            ));
        }
        if usages[..i].contains(u) {
            out.push(Cause::duplicate(format!("spec.usages[{i}]"), &json!(u)));
        }
    }
    signer_name("spec.signerName", &spec.signer_name, &mut out);
    if let Some(e) = spec.expiration_seconds.filter(|e| *e < 600) {
        out.push(Cause::invalid(
            "spec.expirationSeconds",
            &json!(e),
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
    let (mut approved, mut denied) = (false, false);
    for (i, c) in conditions(csr).iter().enumerate() {
        let at = format!("status.conditions[{i}]");
        if c.type_.is_empty() {
            out.push(Cause::required(format!("{at}.type")));
        }
        let allowed: &[&str] = if matches!(c.type_.as_str(), "Approved" | "Denied") {
            &["True"]
        } else {
            &["False", "True", "Unknown"]
        };
        if c.status.is_empty() {
            out.push(Cause::required(format!("{at}.status")));
        } else if !allowed.contains(&c.status.as_str()) {
            out.push(Cause::not_supported(
                format!("{at}.status"),
                &c.status,
                allowed,
            ));
        }
        match c.type_.as_str() {
            "Approved" => approved = true,
            "Denied" => denied = true,
            _ => {}
        }
        if (c.type_ == "Approved" && denied) || (c.type_ == "Denied" && approved) {
            out.push(Cause::invalid(
                "status.conditions",
                &json!(c.type_),
                "Approved and Denied conditions are mutually exclusive",
            ));
        }
        if conditions(csr)[..i].iter().any(|p| p.type_ == c.type_) {
            out.push(Cause::duplicate(format!("{at}.type"), &json!(c.type_)));
        }
    }
    if let Err(e) = check_certificate_if_set(certificate(csr)) {
        out.push(Cause::invalid(
            "status.certificate",
            &json!("<certificate data>"),
            e,
        ));
    }
    out
}

fn check_certificate_if_set(pem: &[u8]) -> std::result::Result<(), String> {
    if pem.is_empty() {
        Ok(())
    } else {
        check_certificate(pem)
    }
}

fn of_type<'c>(csr: &'c Csr, t: &str) -> Vec<&'c Condition> {
    conditions(csr).iter().filter(|c| c.type_ == t).collect()
}

fn validate_update(new: &Csr, old: &Csr) -> Vec<Cause> {
    let mut out = Vec::new();
    for t in ["Approved", "Denied", "Failed"] {
        if of_type(new, t).len() < of_type(old, t).len() {
            out.push(Cause::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if certificate(new) != certificate(old) && !certificate(old).is_empty() {
        out.push(Cause::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
    out
}

/// What a write through `approval` or `status` may not change besides: approvals may not set
/// the certificate; status writes may not add, remove or change Approved or Denied.
fn validate_subresource(new: &Csr, old: &Csr, approval: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    if approval {
        if certificate(new) != certificate(old) {
            out.push(Cause::forbidden(
                "status.certificate",
                "updates may not set certificate content",
            ));
        }
        return out;
    }
    for t in ["Approved", "Denied"] {
        let (n, o) = (of_type(new, t), of_type(old, t));
        if n.len() > o.len() {
            out.push(Cause::forbidden(
                "status.conditions",
                format!("updates may not add a condition of type {t:?}"),
            ));
        } else if n.len() == o.len() && n != o {
            out.push(Cause::forbidden(
                "status.conditions",
                format!("updates may not modify a condition of type {t:?}"),
            ));
        }
    }
    out
}

/// Conditions without times get them: `lastUpdateTime` now, `lastTransitionTime` the old
/// condition's when its status did not change, else now.
fn condition_times(new: &mut Value, old: &Value) {
    let now = super::now();
    let old_conds = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(conds) = new
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for c in conds {
        let Some(c) = c.as_object_mut() else { continue };
        if c.get("lastUpdateTime").is_none_or(Value::is_null) {
            c.insert("lastUpdateTime".into(), json!(now));
        }
        if c.get("lastTransitionTime").is_none_or(Value::is_null) {
            let same = old_conds
                .iter()
                .find(|o| o.get("type") == c.get("type") && o.get("status") == c.get("status"))
                .and_then(|o| o.get("lastTransitionTime"))
                .filter(|t| !t.is_null())
                .cloned();
            c.insert("lastTransitionTime".into(), same.unwrap_or(json!(now)));
        }
    }
}

/// `approval` (conditions only) or `status` (the status, but Approved and Denied). Both read
/// the stored object and write it back through the store's status path, so admission sees
/// which of the two it is.
pub struct CsrSubresource {
    approval: bool,
}

static STATUS: CsrSubresource = CsrSubresource { approval: false };
static APPROVAL: CsrSubresource = CsrSubresource { approval: true };

fn typed(v: &Value) -> Result<Csr> {
    serde_json::from_value(v.clone()).map_err(|e| {
        Error::bad_request(format!(
            "{KIND} in version \"v1\" cannot be handled as a {KIND}: {e}"
        ))
    })
}

impl CsrSubresource {
    /// The stored object with what the body may change through this subresource.
    fn next(&self, current: &Value, body: &Value) -> Value {
        let mut next = current.clone();
        let status = body.get("status").cloned().unwrap_or(json!({}));
        if self.approval {
            let conds = status.get("conditions").cloned().unwrap_or(Value::Null);
            match next.get_mut("status").and_then(Value::as_object_mut) {
                Some(st) => {
                    st.insert("conditions".into(), conds);
                }
                None => next["status"] = json!({"conditions": conds}),
            }
        } else {
            next["status"] = status;
        }
        condition_times(&mut next, current);
        next
    }

    async fn write(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        name: &str,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        typed(body)?;
        let body_name = s(body, "/metadata/name");
        if !body_name.is_empty() && body_name != name {
            return Err(Error::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let pinned = s(body, "/metadata/resourceVersion");
        loop {
            let current = objs.get(r, None, name).await?;
            let mut next = self.next(&current, body);
            let causes = validate_subresource(&typed(&next)?, &typed(&current)?, self.approval);
            if !causes.is_empty() {
                return Err(Error::invalid(KIND, GROUP, name, causes));
            }
            // The write is conditional on what was read (or on what the client read).
            let rv = if pinned.is_empty() {
                s(&current, "/metadata/resourceVersion")
            } else {
                pinned.clone()
            };
            next["metadata"]["resourceVersion"] = json!(rv);
            let sub = if self.approval { "approval" } else { "status" };
            match objs.update(r, None, name, next, Some(sub), opts).await {
                Err(e) if e.code() == 409 && pinned.is_empty() => continue,
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl Subresource for CsrSubresource {
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "patch", "update"]
    }

    fn writes_status(&self) -> bool {
        true
    }

    async fn get(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        _ns: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        objs.get(r, None, name).await
    }

    async fn update(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        _ns: Option<&str>,
        name: &str,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        self.write(objs, r, name, &body, opts).await
    }

    async fn patch(
        &self,
        objs: &dyn Objects,
        r: &Resource,
        _ns: Option<&str>,
        name: &str,
        ptype: PatchType,
        body: &Value,
        opts: &WriteOpts,
    ) -> Result<Written> {
        if ptype == PatchType::Apply {
            return Err(Error::unsupported_media_type(
                "application/apply-patch+yaml",
                crate::error::PATCH_MEDIA_TYPES,
            ));
        }
        let mut doc = objs.get(r, None, name).await?;
        // A patch's own resourceVersion (if any) is the precondition.
        if let Some(m) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        patch::apply_patch(&mut doc, ptype, body)?;
        self.write(objs, r, name, &doc, opts).await
    }
}

fn columns() -> Vec<Column> {
    vec![
        col("Name", "string", 0, "Name must be unique within a namespace."),
        col("Age", "string", 0, "CreationTimestamp is a timestamp representing the server time when this object was created."),
        col("SignerName", "string", 0, "signerName indicates the requested signer, and is a qualified name."),
        col("Requestor", "string", 0, "username contains the name of the user that created the CertificateSigningRequest."),
        col("RequestedDuration", "string", 0, "expirationSeconds is the requested duration of validity of the issued certificate."),
        col("Condition", "string", 0, "conditions applied to the request. Known conditions are \"Approved\", \"Denied\", and \"Failed\"."),
    ]
}

/// kubectl's CONDITION: `Denied`, `Approved` or `Pending`, then `,Failed` and `,Issued`.
fn condition(csr: &Value) -> String {
    let conds = csr
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c.get("type").and_then(Value::as_str) == Some(t))
    };
    let mut out = if has("Denied") {
        "Denied".to_string()
    } else if has("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has("Failed") {
        out.push_str(",Failed");
    }
    if !s(csr, "/status/certificate").is_empty() {
        out.push_str(",Issued");
    }
    out
}

fn cells(csr: &Value) -> Vec<Value> {
    let signer = s(csr, "/spec/signerName");
    let duration = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map(super::human_duration)
        .unwrap_or_else(|| "<none>".into());
    vec![
        super::name(csr),
        super::age(csr),
        json!(if signer.is_empty() {
            "<none>".into()
        } else {
            signer
        }),
        json!(s(csr, "/spec/username")),
        json!(duration),
        json!(condition(csr)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// A PEM CSR for `cn` in `org`, made with rcgen.
    pub fn csr_pem(cn: &str, org: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(request: &[u8], signer: &str, usages: Value) -> Value {
        json!({
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": "node-csr"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(request),
                "signerName": signer,
                "usages": usages,
            },
        })
    }

    fn causes(obj: &Value) -> Vec<String> {
        match super::super::Strategy::validate(&STRATEGY, obj, None) {
            Ok(()) => Vec::new(),
            Err(Rejection::Invalid(c)) => c.iter().map(|c| c.text()).collect(),
            Err(Rejection::Decode(d)) => vec![d],
        }
    }

    #[test]
    fn a_good_request_validates_and_records_its_requester() {
        let pem = csr_pem("system:node:n1", "system:nodes");
        let mut obj = csr(
            pem.as_bytes(),
            "kubernetes.io/kube-apiserver-client-kubelet",
            json!(["digital signature", "client auth"]),
        );
        assert_eq!(causes(&obj), Vec::<String>::new());
        obj["spec"]["username"] = json!("forged");
        obj["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}]});
        let mut u = crate::auth::authn::user("system:bootstrap:abcdef", &["system:bootstrappers"]);
        u.uid = "7".into();
        super::super::Strategy::prepare_create(&STRATEGY, &mut obj, &u);
        assert_eq!(obj["spec"]["username"], "system:bootstrap:abcdef");
        assert_eq!(obj["spec"]["uid"], "7");
        assert_eq!(obj["spec"]["groups"], json!(["system:bootstrappers"]));
        assert!(obj.get("status").is_none());
    }

    #[test]
    fn malformed_requests_are_refused_naming_the_field() {
        let usages = json!(["client auth"]);
        let bad_pem = causes(&csr(b"not a pem", "example.com/signer", usages.clone()));
        assert_eq!(bad_pem.len(), 1, "{bad_pem:?}");
        assert!(
            bad_pem[0].starts_with("spec.request: Invalid value: ")
                && bad_pem[0].ends_with("PEM block type must be CERTIFICATE REQUEST"),
            "{bad_pem:?}"
        );
        let pem = csr_pem("x", "y");
        let c = causes(&csr(pem.as_bytes(), "", json!([])));
        assert!(
            c.contains(&"spec.usages: Required value".to_string()),
            "{c:?}"
        );
        assert!(
            c.contains(&"spec.signerName: Required value".to_string()),
            "{c:?}"
        );
        let c = causes(&csr(
            pem.as_bytes(),
            "nodomain",
            json!(["client auth", "client auth", "flying"]),
        ));
        assert!(
            c.iter().any(|m| m.starts_with(
                "spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain"
            )),
            "{c:?}"
        );
        assert!(
            c.iter()
                .any(|m| m == "spec.usages[1]: Duplicate value: \"client auth\""),
            "{c:?}"
        );
        assert!(
            c.iter()
                .any(|m| m.starts_with("spec.usages[2]: Unsupported value: \"flying\"")),
            "{c:?}"
        );
        let mut short = csr(pem.as_bytes(), "example.com/x", usages.clone());
        short["spec"]["expirationSeconds"] = json!(599);
        assert_eq!(
            causes(&short),
            vec!["spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"]
        );
        let mut both = csr(pem.as_bytes(), "example.com/x", usages.clone());
        both["status"] = json!({"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert_eq!(
            causes(&both),
            vec!["status.conditions: Invalid value: \"Denied\": Approved and Denied conditions are mutually exclusive"]
        );
        let mut bad_cert = csr(pem.as_bytes(), "example.com/x", usages);
        bad_cert["status"] = json!({"certificate": base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())});
        assert_eq!(
            causes(&bad_cert),
            vec!["status.certificate: Invalid value: \"<certificate data>\": only CERTIFICATE PEM blocks are allowed, found \"CERTIFICATE REQUEST\""]
        );
        // A signature that does not verify.
        let mut tampered = pem.clone().into_bytes();
        let mid = tampered.len() / 2;
        tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
        let c = causes(&csr(&tampered, "example.com/x", json!(["client auth"])));
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].starts_with("spec.request: Invalid value"), "{c:?}");
    }

    #[test]
    fn approval_and_status_change_only_their_part() {
        let old: Csr = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"request": "", "signerName": "example.com/x"},
            "status": {"conditions": [{"type": "Approved", "status": "True"}]},
        }))
        .unwrap();
        let mut issued = old.clone();
        issued.status.as_mut().unwrap().certificate =
            Some(k8s_openapi::ByteString(b"cert".to_vec()));
        assert!(validate_subresource(&issued, &old, false).is_empty());
        assert_eq!(
            validate_subresource(&issued, &old, true)[0].text(),
            "status.certificate: Forbidden: updates may not set certificate content"
        );
        let mut denied = old.clone();
        denied
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(Condition {
                type_: "Denied".into(),
                status: "True".into(),
                ..Default::default()
            });
        assert_eq!(
            validate_subresource(&denied, &old, false)[0].text(),
            "status.conditions: Forbidden: updates may not add a condition of type \"Denied\""
        );
        let mut unapproved = old.clone();
        unapproved.status.as_mut().unwrap().conditions = None;
        assert_eq!(
            validate_update(&unapproved, &old)[0].text(),
            "status.conditions: Forbidden: updates may not remove a condition of type \"Approved\""
        );
    }

    #[test]
    fn the_condition_column_reads_as_kubectl_prints_it() {
        let mut c = json!({"metadata": {"name": "x"}, "spec": {"signerName": "example.com/x", "username": "u", "expirationSeconds": 3600}});
        assert_eq!(
            cells(&c)[2..],
            [
                json!("example.com/x"),
                json!("u"),
                json!("60m"),
                json!("Pending")
            ]
        );
        c["status"] =
            json!({"conditions": [{"type": "Approved", "status": "True"}], "certificate": "eA=="});
        assert_eq!(condition(&c), "Approved,Issued");
        c["status"] = json!({"conditions": [{"type": "Denied", "status": "True"}, {"type": "Failed", "status": "True"}]});
        assert_eq!(condition(&c), "Denied,Failed");
    }
}
