//! CertificateApproval and CertificateSigning, as kube-apiserver's: approving or denying a
//! CertificateSigningRequest (its `approval` subresource) needs the `approve` verb, and
//! issuing it or changing its conditions through `status` the `sign` verb, on the resource
//! `signers` of `certificates.k8s.io` named by the request's signer — or by its domain with
//! `/*` (`kubernetes.io/*`). So a user who may update approvals still approves only for the
//! signers an administrator granted.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::{forbidden, Attributes, Operation, Plugin};
use crate::auth::{self, Authorizer, Decision, UserInfo};
use crate::error::Result;
use crate::registry::Objects;

/// The authorizer admission asks, set once the server has built it.
pub type AuthorizerCell = Arc<OnceLock<Arc<dyn Authorizer>>>;

/// Whether `user` may `verb` the signer `signer` (or its domain's `/*`). Without an
/// authorizer (a chain built outside a server) nothing is checked.
fn authorized(cell: &AuthorizerCell, user: &UserInfo, verb: &str, signer: &str) -> bool {
    let Some(authz) = cell.get() else {
        return true;
    };
    let domain = signer.split('/').next().unwrap_or("");
    let wildcard = format!("{domain}/*");
    let allowed = [signer, wildcard.as_str()].into_iter().any(|name| {
        authz.authorize(&auth::Attributes::resource(
            user,
            verb,
            "certificates.k8s.io",
            "signers",
            "",
            name,
        )) == Decision::Allow
    });
    allowed
}

fn is_csr(a: &Attributes<'_>, sub: &str) -> bool {
    a.operation == Operation::Update
        && a.resource.group == "certificates.k8s.io"
        && a.resource.plural == "certificatesigningrequests"
        && a.subresource == sub
}

fn signer(old: Option<&Value>) -> &str {
    old.and_then(|o| o.pointer("/spec/signerName"))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The CertificateApproval plugin.
pub struct CertificateApproval(pub AuthorizerCell);

#[async_trait::async_trait]
impl Plugin for CertificateApproval {
    fn name(&self) -> &'static str {
        "CertificateApproval"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        if !is_csr(a, "approval") {
            return Ok(());
        }
        let signer = signer(a.old);
        if !authorized(&self.0, a.user, "approve", signer) {
            return Err(forbidden(
                a,
                obj,
                &format!("user not permitted to approve requests with signerName {signer:?}"),
            ));
        }
        Ok(())
    }
}

/// The CertificateSigning plugin.
pub struct CertificateSigning(pub AuthorizerCell);

#[async_trait::async_trait]
impl Plugin for CertificateSigning {
    fn name(&self) -> &'static str {
        "CertificateSigning"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: Option<&Value>,
        _objs: &dyn Objects,
    ) -> Result<()> {
        if !is_csr(a, "status") {
            return Ok(());
        }
        let part = |o: Option<&Value>, p: &str| o.and_then(|o| o.pointer(p)).cloned();
        let changed = ["/status/certificate", "/status/conditions"]
            .iter()
            .any(|p| part(obj, p) != part(a.old, p));
        if !changed {
            return Ok(());
        }
        let signer = signer(a.old);
        if !authorized(&self.0, a.user, "sign", signer) {
            return Err(forbidden(
                a,
                obj,
                &format!("user not permitted to sign requests with signerName {signer:?}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixed;
    use crate::auth::authn::user;
    use crate::registry::builtin;
    use serde_json::json;

    /// Allows `approve`/`sign` on the signer names listed, for user `approver`.
    struct Grants(Vec<&'static str>);

    impl Authorizer for Grants {
        fn authorize(&self, a: &auth::Attributes<'_>) -> Decision {
            if a.user.name == "approver"
                && a.resource == "signers"
                && matches!(a.verb, "approve" | "sign")
                && self.0.contains(&a.name)
            {
                Decision::Allow
            } else {
                Decision::NoOpinion(String::new())
            }
        }
    }

    async fn run(
        grants: Vec<&'static str>,
        who: &str,
        sub: &str,
        new: Value,
    ) -> std::result::Result<(), String> {
        let cell: AuthorizerCell = Arc::default();
        let _ = cell.set(Arc::new(Grants(grants)));
        let r = builtin("certificates.k8s.io", "certificatesigningrequests").unwrap();
        let old = json!({"metadata": {"name": "c"}, "spec": {"signerName": "example.com/web"}});
        let u = user(who, &[]);
        let a = Attributes {
            operation: Operation::Update,
            resource: &r,
            subresource: sub,
            namespace: "",
            name: "c",
            old: Some(&old),
            user: &u,
            dry_run: false,
            options: crate::admission::Options::None,
            reinvocation: None,
        };
        let objs = Fixed::default();
        let res = if sub == "approval" {
            CertificateApproval(cell)
                .validate(&a, Some(&new), &objs)
                .await
        } else {
            CertificateSigning(cell)
                .validate(&a, Some(&new), &objs)
                .await
        };
        res.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn approving_and_signing_need_the_signer() {
        let approved = json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}});
        assert!(run(
            vec!["example.com/web"],
            "approver",
            "approval",
            approved.clone()
        )
        .await
        .is_ok());
        assert!(run(
            vec!["example.com/*"],
            "approver",
            "approval",
            approved.clone()
        )
        .await
        .is_ok());
        assert_eq!(
            run(vec!["other.com/*"], "approver", "approval", approved.clone()).await.unwrap_err(),
            "certificatesigningrequests.certificates.k8s.io \"c\" is forbidden: user not permitted to approve requests with signerName \"example.com/web\""
        );
        assert!(
            run(vec!["example.com/web"], "mallory", "approval", approved)
                .await
                .is_err()
        );
        let issued = json!({"status": {"certificate": "eA=="}});
        assert!(run(
            vec!["example.com/web"],
            "approver",
            "status",
            issued.clone()
        )
        .await
        .is_ok());
        assert_eq!(
            run(vec![], "approver", "status", issued).await.unwrap_err(),
            "certificatesigningrequests.certificates.k8s.io \"c\" is forbidden: user not permitted to sign requests with signerName \"example.com/web\""
        );
        // A status write that changes neither needs nothing.
        assert!(run(vec![], "anyone", "status", json!({"status": {}}))
            .await
            .is_ok());
    }
}
