//! The CSR approving controller: approves the CertificateSigningRequests a node makes to get
//! (or renew) its client certificate, as kube-controller-manager's `csrapproving` does, and
//! Skiff's proxy certificate; everything else waits for a human (`kubectl certificate
//! approve|deny`).
//!
//! A request is recognised by what it asks for, then approved only if its requester may ask
//! for that kind of certificate:
//! - `nodeclient`: signer `kubernetes.io/kube-apiserver-client-kubelet`, CN `system:node:NAME`,
//!   O exactly `system:nodes`, no subject alternative names, usages `client auth` and
//!   `digital signature` (and `key encipherment`): a node joining with a bootstrap token.
//! - `selfnodeclient`: the same, requested by that very node (`system:node:NAME` in
//!   `system:nodes`): a certificate renewal.
//! - `kubeproxyclient` (Skiff's): signer `kubernetes.io/kube-apiserver-client`, CN
//!   `system:kube-proxy` and no O, the same usages: the proxy of a joining node (a node
//!   process rather than a pod here, so it gets a certificate the way the kubelet does).
//! - `skiffcsiclient` (Skiff's): the same for CN `system:skiff-csi`, the identity of a
//!   joining node's CSI provisioner and resizer.
//!
//! Whether the requester may is asked with a SubjectAccessReview for `create` on
//! `certificatesigningrequests/<kind>` in `certificates.k8s.io`, as Kubernetes does (the proxy's
//! kind asks for `nodeclient`, the right a joining node has). An API server that does not serve
//! SubjectAccessReviews gets the group rules of Kubernetes' default bindings instead:
//! `system:bootstrappers` for `nodeclient` and the proxy, `system:nodes` for `selfnodeclient`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, Client, PostParams};
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other client certificates for the API server.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The group of nodes.
pub const NODES_GROUP: &str = "system:nodes";
/// The group of bootstrap tokens.
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The proxy's user name.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
/// The user name of the CSI driver's provisioner and resizer.
pub const SKIFF_CSI_USER: &str = "system:skiff-csi";

/// What the PEM request of a CSR says about its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations, in order.
    pub organizations: Vec<String>,
    /// Whether it asks for any subject alternative name (DNS, IP, email, URI).
    pub has_sans: bool,
}

/// Parses and checks the signature of a PEM `CERTIFICATE REQUEST`.
pub fn parse_request(pem: &[u8]) -> Result<Request, String> {
    use x509_parser::prelude::*;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("PEM: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            pem.label
        ));
    }
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| format!("certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|e| format!("certificate request signature: {e}"))?;
    let subject = &csr.certification_request_info.subject;
    let text = |a: &AttributeTypeAndValue<'_>| a.as_str().map(str::to_string).unwrap_or_default();
    let common_name = subject
        .iter_common_name()
        .next()
        .map(text)
        .unwrap_or_default();
    let organizations = subject.iter_organization().map(text).collect();
    let has_sans = csr.requested_extensions().is_some_and(|mut exts| {
        exts.any(|e| {
            matches!(e, ParsedExtension::SubjectAlternativeName(san) if !san.general_names.is_empty())
        })
    });
    Ok(Request {
        common_name,
        organizations,
        has_sans,
    })
}

/// A kind of request this controller approves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A node's client certificate, asked for by a bootstrap token.
    NodeClient,
    /// A node's client certificate, asked for by that node (a renewal).
    SelfNodeClient,
    /// The proxy's client certificate, asked for by a bootstrap token.
    KubeProxyClient,
    /// The CSI provisioner's client certificate, asked for by a bootstrap token.
    SkiffCsiClient,
}

impl Kind {
    /// The `certificatesigningrequests` subresource the requester must be allowed to create.
    pub fn subresource(self) -> &'static str {
        match self {
            Kind::NodeClient | Kind::KubeProxyClient | Kind::SkiffCsiClient => "nodeclient",
            Kind::SelfNodeClient => "selfnodeclient",
        }
    }

    /// The approval condition's message, as Kubernetes words it.
    pub fn message(self) -> &'static str {
        match self {
            Kind::NodeClient => {
                "Auto approving kubelet client certificate after SubjectAccessReview."
            }
            Kind::SelfNodeClient => {
                "Auto approving self kubelet client certificate after SubjectAccessReview."
            }
            Kind::KubeProxyClient => {
                "Auto approving kube-proxy client certificate after SubjectAccessReview."
            }
            Kind::SkiffCsiClient => {
                "Auto approving skiff-csi client certificate after SubjectAccessReview."
            }
        }
    }

    /// Kubernetes' default bindings as group rules: who may ask for this kind when no
    /// SubjectAccessReview can be made.
    pub fn allowed_by_groups(self, username: &str, groups: &[String], cn: &str) -> bool {
        let in_group = |g: &str| groups.iter().any(|x| x == g);
        match self {
            Kind::NodeClient | Kind::KubeProxyClient | Kind::SkiffCsiClient => {
                in_group(BOOTSTRAPPERS_GROUP)
            }
            Kind::SelfNodeClient => username == cn && in_group(NODES_GROUP),
        }
    }
}

/// The usages every client certificate asks for, and the one more it may.
const REQUIRED_USAGES: [&str; 2] = ["digital signature", "client auth"];
const OPTIONAL_USAGES: [&str; 1] = ["key encipherment"];

fn client_usages(usages: &[String]) -> bool {
    REQUIRED_USAGES
        .iter()
        .all(|u| usages.iter().any(|x| x == u))
        && usages
            .iter()
            .all(|u| REQUIRED_USAGES.contains(&u.as_str()) || OPTIONAL_USAGES.contains(&u.as_str()))
}

/// Whether a request is a valid node client certificate request (Kubernetes'
/// `ValidateKubeletClientCSR`); the reason when not.
pub fn check_node_client(req: &Request, usages: &[String]) -> Result<(), String> {
    if req.organizations != [NODES_GROUP] {
        return Err(format!("subject organization is not {NODES_GROUP}"));
    }
    if req.has_sans {
        return Err("subject alternative names are not allowed".into());
    }
    if !req.common_name.starts_with(NODE_USER_PREFIX) || req.common_name == NODE_USER_PREFIX {
        return Err(format!(
            "subject common name does not begin with {NODE_USER_PREFIX}"
        ));
    }
    if !client_usages(usages) {
        return Err(format!(
            "usages must include {} and may add {}",
            REQUIRED_USAGES.join(", "),
            OPTIONAL_USAGES.join(", ")
        ));
    }
    Ok(())
}

/// Whether a request is a valid proxy client certificate request; the reason when not.
pub fn check_kube_proxy_client(req: &Request, usages: &[String]) -> Result<(), String> {
    check_component_client(req, usages, KUBE_PROXY_USER)
}

/// Whether a request is a valid client certificate request of the node component `user`
/// (CN `user`, no organization, no alternative names, client usages); the reason when not.
pub fn check_component_client(req: &Request, usages: &[String], user: &str) -> Result<(), String> {
    if req.common_name != user {
        return Err(format!("subject common name is not {user}"));
    }
    if !req.organizations.is_empty() {
        return Err("subject organization must be empty".into());
    }
    if req.has_sans {
        return Err("subject alternative names are not allowed".into());
    }
    if !client_usages(usages) {
        return Err("usages must be client ones".into());
    }
    Ok(())
}

/// The kinds a CSR is a request of (none: a human decides). A node's own renewal is both a
/// `selfnodeclient` and a `nodeclient` request, as in Kubernetes; either right approves it.
pub fn recognize(csr: &CertificateSigningRequest) -> Vec<Kind> {
    let spec = &csr.spec;
    let Ok(req) = parse_request(&spec.request.0) else {
        return vec![];
    };
    let usages = spec.usages.clone().unwrap_or_default();
    match spec.signer_name.as_str() {
        KUBELET_CLIENT_SIGNER if check_node_client(&req, &usages).is_ok() => {
            let mut kinds = vec![];
            if spec.username.as_deref() == Some(req.common_name.as_str()) {
                kinds.push(Kind::SelfNodeClient);
            }
            kinds.push(Kind::NodeClient);
            kinds
        }
        CLIENT_SIGNER if check_kube_proxy_client(&req, &usages).is_ok() => {
            vec![Kind::KubeProxyClient]
        }
        CLIENT_SIGNER if check_component_client(&req, &usages, SKIFF_CSI_USER).is_ok() => {
            vec![Kind::SkiffCsiClient]
        }
        _ => vec![],
    }
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind))
}

/// Whether a CSR has been decided (approved or denied), has failed, or has its certificate.
pub fn finished(csr: &CertificateSigningRequest) -> bool {
    ["Approved", "Denied", "Failed"]
        .iter()
        .any(|k| has_condition(csr, k))
        || csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty())
}

/// `csr` with the `Approved` condition added.
pub fn approved(csr: &CertificateSigningRequest, kind: Kind) -> CertificateSigningRequest {
    let mut csr = csr.clone();
    let now = skiff_client::time::now_time();
    csr.status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("AutoApproved".into()),
            message: Some(kind.message().into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    csr
}

/// How requesters' rights are checked.
struct Rights {
    client: Client,
    /// Set once the API server has answered that it serves no SubjectAccessReviews.
    no_reviews: AtomicBool,
}

impl Rights {
    /// Whether the requester of `csr` may ask for `kind`.
    async fn allowed(
        &self,
        csr: &CertificateSigningRequest,
        kind: Kind,
        cn: &str,
    ) -> Result<bool, skiff_client::Error> {
        let spec = &csr.spec;
        let username = spec.username.clone().unwrap_or_default();
        let groups = spec.groups.clone().unwrap_or_default();
        if !self.no_reviews.load(Ordering::Relaxed) {
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(username.clone()),
                    groups: Some(groups.clone()),
                    uid: spec.uid.clone(),
                    extra: spec.extra.clone(),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some("certificates.k8s.io".into()),
                        resource: Some("certificatesigningrequests".into()),
                        subresource: Some(kind.subresource().into()),
                        verb: Some("create".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match Api::<SubjectAccessReview>::all(self.client.clone())
                .create(&PostParams::default(), &review)
                .await
            {
                Ok(r) => return Ok(r.status.is_some_and(|s| s.allowed)),
                Err(e) if e.is_not_found() => {
                    tracing::warn!(
                        "the API server serves no SubjectAccessReviews: approving node certificates by the requester's groups"
                    );
                    self.no_reviews.store(true, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(kind.allowed_by_groups(&username, &groups, cn))
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, shutdown: CancellationToken) {
    let csrs = ctx.informers.informer::<CertificateSigningRequest>();
    let ctrl = Controller::new(csrs, RunConfig::default());
    let rights = Arc::new(Rights {
        client: ctx.client.clone(),
        no_reviews: AtomicBool::new(false),
    });
    ctrl.run(
        move |key, csr| {
            let (ctx, rights) = (ctx.clone(), rights.clone());
            async move { reconcile(&ctx, &rights, key, csr).await }
        },
        shutdown,
    )
    .await;
}

async fn reconcile(
    ctx: &Context,
    rights: &Rights,
    _key: ObjectKey,
    csr: Option<Arc<CertificateSigningRequest>>,
) -> Result<Action, skiff_client::Error> {
    let Some(csr) = csr else {
        return Ok(Action::Done);
    };
    if finished(&csr) {
        return Ok(Action::Done);
    }
    let kinds = recognize(&csr);
    let Some(cn) = parse_request(&csr.spec.request.0)
        .ok()
        .map(|r| r.common_name)
    else {
        return Ok(Action::Done);
    };
    for kind in kinds {
        if !rights.allowed(&csr, kind, &cn).await? {
            continue;
        }
        let name = csr.metadata.name.clone().unwrap_or_default();
        let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
        return match api
            .replace_subresource(
                "approval",
                &name,
                &PostParams::default(),
                &approved(&csr, kind),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(csr = %name, ?kind, "approved");
                Ok(Action::Done)
            }
            Err(e) if e.is_not_found() => Ok(Action::Done),
            Err(e) => Err(e),
        };
    }
    Ok(Action::Done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    /// A PEM request with this CN, these O and these DNS names.
    pub(crate) fn request(cn: &str, orgs: &[&str], dns: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>()).unwrap();
        let mut dn = DistinguishedName::new();
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(
        signer: &str,
        pem: &str,
        usages: &[&str],
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                request: ByteString(pem.as_bytes().to_vec()),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const USAGES: &[&str] = &["digital signature", "client auth"];
    const BOOTSTRAP: &[&str] = &["system:bootstrappers", "system:authenticated"];

    /// Whether the group rules approve `c`.
    fn approves(c: &CertificateSigningRequest) -> Option<Kind> {
        let cn = parse_request(&c.spec.request.0).ok()?.common_name;
        recognize(c).into_iter().find(|k| {
            k.allowed_by_groups(
                c.spec.username.as_deref().unwrap_or(""),
                c.spec.groups.as_deref().unwrap_or(&[]),
                &cn,
            )
        })
    }

    #[test]
    fn a_joining_node_is_approved() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            KUBELET_CLIENT_SIGNER,
            &pem,
            USAGES,
            "system:bootstrap:abcdef",
            BOOTSTRAP,
        );
        assert_eq!(recognize(&c), [Kind::NodeClient]);
        assert_eq!(approves(&c), Some(Kind::NodeClient));
        // Key encipherment may be asked for too.
        let c = csr(
            KUBELET_CLIENT_SIGNER,
            &pem,
            &["key encipherment", "digital signature", "client auth"],
            "system:bootstrap:abcdef",
            BOOTSTRAP,
        );
        assert_eq!(approves(&c), Some(Kind::NodeClient));
    }

    #[test]
    fn a_node_renews_its_own_certificate_only() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let groups = &["system:nodes", "system:authenticated"];
        let own = csr(
            KUBELET_CLIENT_SIGNER,
            &pem,
            USAGES,
            "system:node:n1",
            groups,
        );
        assert_eq!(recognize(&own), [Kind::SelfNodeClient, Kind::NodeClient]);
        assert_eq!(approves(&own), Some(Kind::SelfNodeClient));
        let other = csr(
            KUBELET_CLIENT_SIGNER,
            &pem,
            USAGES,
            "system:node:n2",
            groups,
        );
        assert_eq!(approves(&other), None);
    }

    #[test]
    fn bad_requests_wait_for_a_human() {
        let good = request("system:node:n1", &["system:nodes"], &[]);
        let cases = [
            // Wrong O: none, another, one more.
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("system:node:n1", &[], &[]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("system:node:n1", &["system:masters"], &[]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("system:node:n1", &["system:nodes", "system:masters"], &[]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            // Wrong CN.
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("alice", &["system:nodes"], &[]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("system:node:", &["system:nodes"], &[]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            // Names asked for.
            csr(
                KUBELET_CLIENT_SIGNER,
                &request("system:node:n1", &["system:nodes"], &["n1"]),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            // Wrong usages: server auth, missing client auth, missing digital signature.
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                &["digital signature", "client auth", "server auth"],
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                &["digital signature"],
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                &["client auth"],
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            // Wrong requester: a user, another node, a service account.
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                USAGES,
                "alice",
                &["system:authenticated"],
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                USAGES,
                "system:node:n2",
                &["system:nodes"],
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &good,
                USAGES,
                "system:serviceaccount:a:b",
                &["system:serviceaccounts"],
            ),
            // Wrong signer.
            csr(
                CLIENT_SIGNER,
                &good,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                "example.com/signer",
                &good,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            // Not a request at all, or one whose signature does not match.
            csr(
                KUBELET_CLIENT_SIGNER,
                "garbage",
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &tampered(&good),
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
        ];
        for (i, c) in cases.iter().enumerate() {
            assert_eq!(approves(c), None, "case {i}");
        }
    }

    /// `pem` with one byte of its signed part changed.
    fn tampered(pem: &str) -> String {
        use base64::Engine;
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = p.contents.clone();
        // Inside the subject, well before the signature.
        der[30] ^= 1;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    }

    #[test]
    fn the_csi_provisioner_joins_with_a_bootstrap_token() {
        let pem = request(SKIFF_CSI_USER, &[], &[]);
        let c = csr(CLIENT_SIGNER, &pem, USAGES, "system:bootstrap:a", BOOTSTRAP);
        assert_eq!(approves(&c), Some(Kind::SkiffCsiClient));
        let with_o = request(SKIFF_CSI_USER, &["system:masters"], &[]);
        for c in [
            csr(
                CLIENT_SIGNER,
                &with_o,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                CLIENT_SIGNER,
                &pem,
                USAGES,
                "alice",
                &["system:authenticated"],
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &pem,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
        ] {
            assert_eq!(approves(&c), None);
        }
    }

    #[test]
    fn the_proxy_joins_with_a_bootstrap_token() {
        let pem = request("system:kube-proxy", &[], &[]);
        let c = csr(CLIENT_SIGNER, &pem, USAGES, "system:bootstrap:a", BOOTSTRAP);
        assert_eq!(approves(&c), Some(Kind::KubeProxyClient));
        // Not with an O, not for another name, not for anyone else, not on the kubelet signer.
        let with_o = request("system:kube-proxy", &["system:masters"], &[]);
        let other = request("system:kube-scheduler", &[], &[]);
        for c in [
            csr(
                CLIENT_SIGNER,
                &with_o,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                CLIENT_SIGNER,
                &other,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
            csr(
                CLIENT_SIGNER,
                &pem,
                USAGES,
                "alice",
                &["system:authenticated"],
            ),
            csr(
                KUBELET_CLIENT_SIGNER,
                &pem,
                USAGES,
                "system:bootstrap:a",
                BOOTSTRAP,
            ),
        ] {
            assert_eq!(approves(&c), None);
        }
    }

    #[test]
    fn decided_requests_are_left_alone() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            KUBELET_CLIENT_SIGNER,
            &pem,
            USAGES,
            "system:bootstrap:a",
            BOOTSTRAP,
        );
        assert!(!finished(&c));
        let a = approved(&c, Kind::NodeClient);
        assert!(finished(&a));
        let cond = &a.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_deref()
            ),
            ("Approved", "True", Some("AutoApproved"))
        );
    }
}
