//! The CSR signing controller: issues the certificates of approved CertificateSigningRequests
//! for the API server's client signers (`kubernetes.io/kube-apiserver-client-kubelet` and
//! `kubernetes.io/kube-apiserver-client`) with the cluster CA, as kube-controller-manager's
//! `csrsigning` does with `--cluster-signing-cert-file` and `--cluster-signing-key-file`.
//!
//! A request is signed once: approved, not failed, no certificate yet. One its signer may not
//! issue (a kubelet certificate that is not `system:node:NAME` in `system:nodes`, usages that
//! are not a client's) gets the `Failed` condition instead, reason `SignerValidationFailure`.
//! The certificate lives `--cluster-signing-duration` (default a year), or
//! `spec.expirationSeconds` when shorter, never past the CA's own end; its start is set five
//! minutes back (at most a tenth of its lifetime), so that a clock slightly behind still
//! accepts it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::ByteString;
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use skiff_client::controller::{Action, Config as RunConfig, Controller};
use skiff_client::reflector::ObjectKey;
use skiff_client::{Api, PostParams};
use tokio_util::sync::CancellationToken;

use crate::csr_approval::{check_node_client, parse_request, CLIENT_SIGNER, KUBELET_CLIENT_SIGNER};
use crate::Context;

/// How far back a certificate's validity starts (Kubernetes' backdate).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The default `--cluster-signing-duration`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(8760 * 3600);

/// Why a CA cannot sign.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The CA's certificate or key could not be used.
    #[error("the signing CA: {0}")]
    Ca(String),
}

/// The cluster CA and how long its certificates live.
#[derive(Clone)]
pub struct Signer {
    ca_cert_pem: String,
    ca_key_pem: String,
    ca_not_after: time::OffsetDateTime,
    /// The longest lifetime a certificate gets (`--cluster-signing-duration`).
    pub duration: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("ca_not_after", &self.ca_not_after)
            .field("duration", &self.duration)
            .finish()
    }
}

impl Signer {
    /// A signer with this CA certificate and key (PEM).
    pub fn new(
        ca_cert_pem: &str,
        ca_key_pem: &str,
        duration: Duration,
    ) -> Result<Self, SignerError> {
        let err = |e: &dyn std::fmt::Display| SignerError::Ca(e.to_string());
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| err(&e))?;
        Issuer::from_ca_cert_pem(ca_cert_pem, key).map_err(|e| err(&e))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(ca_cert_pem.as_bytes()).map_err(|e| err(&e))?;
        let cert = pem.parse_x509().map_err(|e| err(&e))?;
        Ok(Signer {
            ca_cert_pem: ca_cert_pem.into(),
            ca_key_pem: ca_key_pem.into(),
            ca_not_after: cert.validity().not_after.to_datetime(),
            duration,
        })
    }

    /// The PEM certificate for `csr`, or why its signer may not issue it.
    pub fn sign(
        &self,
        csr: &CertificateSigningRequest,
        now: time::OffsetDateTime,
    ) -> Result<String, Refusal> {
        let spec = &csr.spec;
        let usages = spec.usages.clone().unwrap_or_default();
        let text = std::str::from_utf8(&spec.request.0)
            .map_err(|_| Refusal::invalid("the request is not PEM text"))?;
        let req = parse_request(text.as_bytes()).map_err(Refusal::invalid)?;
        match spec.signer_name.as_str() {
            KUBELET_CLIENT_SIGNER => check_node_client(&req, &usages).map_err(Refusal::invalid)?,
            CLIENT_SIGNER => client_only(&usages).map_err(Refusal::invalid)?,
            other => {
                return Err(Refusal::invalid(format!(
                    "not a signer of this CA: {other}"
                )))
            }
        }
        let mut params = CertificateSigningRequestParams::from_pem(text)
            .map_err(|e| Refusal::invalid(format!("certificate request: {e}")))?;
        let p = &mut params.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = usages.iter().filter_map(|u| key_usage(u)).collect();
        p.extended_key_usages = usages.iter().filter_map(|u| extended_usage(u)).collect();
        p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        p.use_authority_key_identifier_extension = true;
        let lifetime = match spec.expiration_seconds {
            Some(s) if s > 0 => self
                .duration
                .min(Duration::from_secs(s.unsigned_abs().into())),
            _ => self.duration,
        };
        // A short-lived certificate gives up less of its life to the backdate.
        p.not_before = now - BACKDATE.min(lifetime / 10);
        p.not_after = (p.not_before + lifetime).min(self.ca_not_after);
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(|e| Refusal::ca(&e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.ca_cert_pem, key).map_err(|e| Refusal::ca(&e))?;
        let cert = params.signed_by(&issuer).map_err(|e| Refusal::ca(&e))?;
        Ok(cert.pem())
    }
}

/// Why a request was not signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request is not one this signer issues: it fails for good.
    Invalid(String),
    /// The CA could not sign: worth another try.
    Ca(String),
}

impl Refusal {
    fn invalid(m: impl Into<String>) -> Self {
        Refusal::Invalid(m.into())
    }
    fn ca(e: &dyn std::fmt::Display) -> Self {
        Refusal::Ca(e.to_string())
    }
}

fn client_only(usages: &[String]) -> Result<(), String> {
    if !usages.iter().any(|u| u == "client auth") {
        return Err("usages must include client auth".into());
    }
    match usages
        .iter()
        .find(|u| !["digital signature", "key encipherment", "client auth"].contains(&u.as_str()))
    {
        Some(u) => Err(format!("usage not allowed for this signer: {u}")),
        None => Ok(()),
    }
}

fn key_usage(u: &str) -> Option<KeyUsagePurpose> {
    Some(match u {
        "digital signature" => KeyUsagePurpose::DigitalSignature,
        "key encipherment" => KeyUsagePurpose::KeyEncipherment,
        "content commitment" => KeyUsagePurpose::ContentCommitment,
        "data encipherment" => KeyUsagePurpose::DataEncipherment,
        "key agreement" => KeyUsagePurpose::KeyAgreement,
        _ => return None,
    })
}

fn extended_usage(u: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match u {
        "client auth" => ExtendedKeyUsagePurpose::ClientAuth,
        "server auth" => ExtendedKeyUsagePurpose::ServerAuth,
        _ => return None,
    })
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// Whether `csr` waits for this controller: one of its signers, approved, not failed, not
/// yet issued.
pub fn to_sign(csr: &CertificateSigningRequest) -> bool {
    matches!(
        csr.spec.signer_name.as_str(),
        KUBELET_CLIENT_SIGNER | CLIENT_SIGNER
    ) && condition(csr, "Approved")
        && !condition(csr, "Denied")
        && !condition(csr, "Failed")
        && csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_none_or(|c| c.0.is_empty())
}

/// Runs the controller until `shutdown`.
pub async fn run(ctx: Arc<Context>, signer: Signer, shutdown: CancellationToken) {
    let csrs = ctx.informers.informer::<CertificateSigningRequest>();
    let ctrl = Controller::new(csrs, RunConfig::default());
    let signer = Arc::new(signer);
    ctrl.run(
        move |key, csr| {
            let (ctx, signer) = (ctx.clone(), signer.clone());
            async move { reconcile(&ctx, &signer, key, csr).await }
        },
        shutdown,
    )
    .await;
}

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Api(#[from] skiff_client::Error),
    #[error("signing: {0}")]
    Ca(String),
}

async fn reconcile(
    ctx: &Context,
    signer: &Signer,
    _key: ObjectKey,
    csr: Option<Arc<CertificateSigningRequest>>,
) -> Result<Action, SyncError> {
    let Some(csr) = csr else {
        return Ok(Action::Done);
    };
    if !to_sign(&csr) {
        return Ok(Action::Done);
    }
    let name = csr.metadata.name.clone().unwrap_or_default();
    let mut next = (*csr).clone();
    let status = next.status.get_or_insert_with(Default::default);
    match signer.sign(&csr, time::OffsetDateTime::now_utc()) {
        Ok(pem) => status.certificate = Some(ByteString(pem.into_bytes())),
        Err(Refusal::Ca(e)) => return Err(SyncError::Ca(e)),
        Err(Refusal::Invalid(why)) => {
            tracing::info!(csr = %name, %why, "not signing");
            let now = skiff_client::time::now_time();
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(why),
                    last_update_time: Some(now.clone()),
                    last_transition_time: Some(now),
                },
            );
        }
    }
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    match api
        .replace_status(&name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => {
            tracing::info!(csr = %name, "signed");
            Ok(Action::Done)
        }
        Err(e) if e.is_not_found() => Ok(Action::Done),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr_approval::tests::request;
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    };
    use rcgen::{BasicConstraints, CertificateParams, DnType};

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, "test-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = ::time::OffsetDateTime::now_utc();
        p.not_before = now - Duration::from_secs(3600);
        p.not_after = now + Duration::from_secs(3 * 365 * 86400);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn approved_csr(signer: &str, pem: &str, usages: &[&str]) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: signer.into(),
                request: ByteString(pem.as_bytes().to_vec()),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

    #[test]
    fn signed_certificates_verify_with_the_ca() {
        use x509_parser::prelude::*;
        let (ca_pem, ca_key) = ca();
        let signer = Signer::new(&ca_pem, &ca_key, DEFAULT_DURATION).unwrap();
        let mut csr = approved_csr(
            KUBELET_CLIENT_SIGNER,
            &request("system:node:n1", &["system:nodes"], &[]),
            USAGES,
        );
        assert!(to_sign(&csr));
        let now = ::time::OffsetDateTime::now_utc();
        let pem = signer.sign(&csr, now).unwrap();
        let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = p.parse_x509().unwrap();
        let (_, ca_p) = parse_x509_pem(ca_pem.as_bytes()).unwrap();
        let ca = ca_p.parse_x509().unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let o: Vec<_> = cert
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!((cn, o), (vec!["system:node:n1"], vec!["system:nodes"]));
        let v = cert.validity();
        assert_eq!(
            v.not_after.timestamp() - v.not_before.timestamp(),
            8760 * 3600
        );
        assert!(v.not_before.timestamp() <= now.unix_timestamp() - 299);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        assert!(!cert.is_ca());
        // Issued: not signed again.
        csr.status.as_mut().unwrap().certificate = Some(ByteString(pem.into_bytes()));
        assert!(!to_sign(&csr));
    }

    #[test]
    fn lifetimes_are_capped_by_the_request_and_the_ca() {
        use x509_parser::prelude::*;
        let (ca_pem, ca_key) = ca();
        let lifetime = |signer: &Signer, seconds: Option<i32>| {
            let mut csr = approved_csr(
                CLIENT_SIGNER,
                &request("system:kube-proxy", &[], &[]),
                USAGES,
            );
            csr.spec.expiration_seconds = seconds;
            let pem = signer
                .sign(&csr, ::time::OffsetDateTime::now_utc())
                .unwrap();
            let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
            let v = p.parse_x509().unwrap().validity().clone();
            v.not_after.timestamp() - v.not_before.timestamp()
        };
        // A short one is backdated by a tenth of its life only: still valid when issued.
        let short = Signer::new(&ca_pem, &ca_key, Duration::from_secs(60)).unwrap();
        assert_eq!(lifetime(&short, None), 60);
        let mut csr = approved_csr(
            CLIENT_SIGNER,
            &request("system:kube-proxy", &[], &[]),
            USAGES,
        );
        csr.spec.expiration_seconds = None;
        let now = ::time::OffsetDateTime::now_utc();
        let pem = short.sign(&csr, now).unwrap();
        let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
        let v = p.parse_x509().unwrap().validity().clone();
        assert_eq!(v.not_before.timestamp(), now.unix_timestamp() - 6);
        let signer = Signer::new(&ca_pem, &ca_key, Duration::from_secs(7200)).unwrap();
        assert_eq!(lifetime(&signer, None), 7200);
        assert_eq!(lifetime(&signer, Some(600)), 600);
        assert_eq!(lifetime(&signer, Some(100_000)), 7200);
        // Never past the CA's own end (three years here).
        let long = Signer::new(&ca_pem, &ca_key, Duration::from_secs(10 * 365 * 86400)).unwrap();
        assert!(lifetime(&long, None) <= 3 * 365 * 86400 + 3600);
    }

    #[test]
    fn requests_the_signer_may_not_issue_fail() {
        let (ca_pem, ca_key) = ca();
        let signer = Signer::new(&ca_pem, &ca_key, DEFAULT_DURATION).unwrap();
        let now = ::time::OffsetDateTime::now_utc();
        let node = request("system:node:n1", &["system:nodes"], &[]);
        for csr in [
            // A kubelet certificate for a non-node, or for serving.
            approved_csr(KUBELET_CLIENT_SIGNER, &request("alice", &[], &[]), USAGES),
            approved_csr(
                KUBELET_CLIENT_SIGNER,
                &node,
                &["digital signature", "server auth"],
            ),
            // A client certificate that would serve.
            approved_csr(CLIENT_SIGNER, &request("bob", &[], &[]), &["server auth"]),
            approved_csr(
                CLIENT_SIGNER,
                &request("bob", &[], &[]),
                &["client auth", "cert sign"],
            ),
            // Not a request.
            approved_csr(CLIENT_SIGNER, "not pem", USAGES),
        ] {
            assert!(matches!(signer.sign(&csr, now), Err(Refusal::Invalid(_))));
        }
        // Other signers and undecided or denied requests are not this controller's.
        let mut other = approved_csr("example.com/x", &node, USAGES);
        assert!(!to_sign(&other));
        other.spec.signer_name = KUBELET_CLIENT_SIGNER.into();
        other.status = None;
        assert!(!to_sign(&other));
        let mut denied = approved_csr(KUBELET_CLIENT_SIGNER, &node, USAGES);
        denied.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].type_ = "Denied".into();
        assert!(!to_sign(&denied));
    }

    #[test]
    fn a_bad_ca_is_refused() {
        assert!(Signer::new("junk", "junk", DEFAULT_DURATION).is_err());
    }
}
