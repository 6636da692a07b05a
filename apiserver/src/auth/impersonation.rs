//! Impersonation: a user allowed to `impersonate` acts as another (`Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid`, `Impersonate-Extra-KEY` headers, or gRPC metadata
//! of the same names), as `kubectl --as`, `--as-group` ask. Each requested attribute is
//! authorized on its own, as kube-apiserver does.

use std::collections::BTreeMap;

use http::HeaderMap;

use super::{forbidden, Attributes, Authorizer, Decision, UserInfo};
use crate::error::{Error, Result};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";
const SA_PREFIX: &str = "system:serviceaccount:";

/// Whether a request asks to impersonate anyone.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

fn values<'a>(headers: &'a HeaderMap, name: &str) -> Result<Vec<&'a str>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::bad_request(format!("invalid {name} header")))
        })
        .collect()
}

/// The user `user` acts as: itself when nothing is asked, else the impersonated user, once
/// `authz` allows `user` to impersonate every requested attribute (403 otherwise).
pub fn impersonate(
    headers: &HeaderMap,
    user: UserInfo,
    authz: &dyn Authorizer,
) -> Result<UserInfo> {
    if !requested(headers) {
        return Ok(user);
    }
    let name = values(headers, USER)?.first().map(|s| s.to_string());
    let groups: Vec<String> = values(headers, GROUP)?
        .into_iter()
        .map(String::from)
        .collect();
    let uid = values(headers, UID)?.first().map(|s| s.to_string());
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in headers.keys() {
        if let Some(k) = key.as_str().strip_prefix(EXTRA) {
            let k = percent_encoding::percent_decode_str(k)
                .decode_utf8_lossy()
                .into_owned();
            for v in values(headers, key.as_str())? {
                extra.entry(k.clone()).or_default().push(v.to_string());
            }
        }
    }
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        let mut asked = Vec::new();
        for g in &groups {
            asked.push(format!("group {g:?}"));
        }
        if let Some(u) = &uid {
            asked.push(format!("uid {u:?}"));
        }
        for (k, v) in &extra {
            asked.push(format!("extra {k}={v:?}"));
        }
        return Err(Error::bad_request(format!(
            "requested [{}] without impersonating a user",
            asked.join(" ")
        )));
    };

    let check = |group: &str, resource: &str, sub: &str, ns: &str, object: &str| -> Result<()> {
        let attrs = Attributes {
            user: &user,
            verb: "impersonate",
            resource_request: true,
            api_group: group,
            resource,
            subresource: sub,
            namespace: ns,
            name: object,
            path: "",
            field_selector: "",
        };
        match authz.authorize(&attrs) {
            Decision::Allow => Ok(()),
            Decision::Deny(why) | Decision::NoOpinion(why) => Err(forbidden(&attrs, &why)),
        }
    };
    let service_account = name
        .strip_prefix(SA_PREFIX)
        .and_then(|rest| rest.split_once(':'));
    match service_account {
        Some((ns, sa)) => check("", "serviceaccounts", "", ns, sa)?,
        None => check("", "users", "", "", &name)?,
    }
    for g in &groups {
        check("", "groups", "", "", g)?;
    }
    if let Some(u) = &uid {
        check("authentication.k8s.io", "uids", "", "", u)?;
    }
    for (k, vs) in &extra {
        for v in vs {
            check("authentication.k8s.io", "userextras", k, "", v)?;
        }
    }

    let mut out_groups = groups;
    if let Some((ns, _)) = service_account {
        if out_groups.is_empty() {
            out_groups = vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
            ];
        }
    }
    let implied = if name == "system:anonymous" {
        "system:unauthenticated"
    } else {
        "system:authenticated"
    };
    if !out_groups.iter().any(|g| g == implied) {
        out_groups.push(implied.into());
    }
    Ok(UserInfo {
        name,
        uid: uid.unwrap_or_default(),
        groups: out_groups,
        extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::user;

    /// Allows impersonating anything but user "root".
    struct NotRoot;

    impl Authorizer for NotRoot {
        fn authorize(&self, a: &Attributes<'_>) -> Decision {
            if a.resource == "users" && a.name == "root" {
                Decision::NoOpinion(String::new())
            } else {
                Decision::Allow
            }
        }
    }

    #[test]
    fn impersonation_is_authorized_per_attribute() {
        let alice = user("alice", &["system:authenticated"]);
        let mut h = HeaderMap::new();
        assert_eq!(impersonate(&h, alice.clone(), &NotRoot).unwrap(), alice);
        h.insert(USER, "bob".parse().unwrap());
        h.append(GROUP, "dev".parse().unwrap());
        h.append(GROUP, "ops".parse().unwrap());
        h.insert("impersonate-extra-scopes%2Fa", "x".parse().unwrap());
        let bob = impersonate(&h, alice.clone(), &NotRoot).unwrap();
        assert_eq!(bob.name, "bob");
        assert_eq!(bob.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(bob.extra["scopes/a"], vec!["x"]);

        h.insert(USER, "root".parse().unwrap());
        let e = impersonate(&h, alice.clone(), &NotRoot).unwrap_err();
        assert_eq!(
            e.status()["message"],
            "users \"root\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        );

        let mut sa = HeaderMap::new();
        sa.insert(USER, "system:serviceaccount:ns1:robot".parse().unwrap());
        let robot = impersonate(&sa, alice.clone(), &NotRoot).unwrap();
        assert_eq!(
            robot.groups,
            vec![
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );

        let mut only_group = HeaderMap::new();
        only_group.insert(GROUP, "dev".parse().unwrap());
        assert_eq!(
            impersonate(&only_group, alice, &NotRoot)
                .unwrap_err()
                .code(),
            400
        );
    }
}
