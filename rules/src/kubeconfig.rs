//! Kubeconfig files, as `kubectl` reads and writes them: the serde types, the choice of the
//! current context, and a builder for the usual "one cluster, one user, one context" file.
//! Text goes through a YAML serializer, so values are quoted and escaped as YAML needs.
//!
//! Reading the files the config points at (`certificate-authority`, `tokenFile`) is I/O and
//! belongs to the caller (the SDK's `Config`).

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Why a kubeconfig could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Not YAML of a kubeconfig's shape.
    #[error("parsing: {0}")]
    Parse(#[source] serde_norway::Error),
    /// Could not be written as YAML.
    #[error("writing: {0}")]
    Write(#[source] serde_norway::Error),
    /// No context to use.
    #[error("no context")]
    NoContext,
    /// The current context names a cluster the file does not have.
    #[error("cluster {0:?} not found")]
    ClusterNotFound(String),
}

/// `Result` with a [`KubeconfigError`].
pub type Result<T, E = KubeconfigError> = std::result::Result<T, E>;

/// A kubeconfig file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// `v1`.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// `Config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The clusters, by name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<NamedCluster>,
    /// The users, by name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<NamedUser>,
    /// The contexts (a cluster, a user, a namespace), by name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<NamedContext>,
    /// The context in use.
    #[serde(
        rename = "current-context",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
}

/// `kubectl` writes `null` for an empty list.
fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A cluster with its name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCluster {
    /// The name contexts refer to it by.
    pub name: String,
    /// The cluster.
    pub cluster: Cluster,
}

/// Where an API server is and how to trust it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    /// `https://host:port`.
    pub server: String,
    /// The CA's PEM, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    /// A file holding the CA's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

/// A user with its name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedUser {
    /// The name contexts refer to it by.
    pub name: String,
    /// The credentials.
    #[serde(default)]
    pub user: User,
}

/// Credentials: a client certificate and key, or a bearer token, inline or in files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    /// The client certificate's PEM, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_data: Option<String>,
    /// A file holding the client certificate's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<String>,
    /// The client key's PEM, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_data: Option<String>,
    /// A file holding the client key's PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding a bearer token.
    #[serde(rename = "tokenFile", default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// A context with its name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedContext {
    /// The name `current-context` refers to it by.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// A cluster, a user and a default namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    /// The cluster's name.
    pub cluster: String,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The namespace requests default to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What the current context resolves to.
#[derive(Debug, Clone, PartialEq)]
pub struct Current<'a> {
    /// The cluster.
    pub cluster: &'a Cluster,
    /// The user (empty credentials when the context names none, or one the file lacks).
    pub user: User,
    /// The context's namespace, when it sets a non-empty one.
    pub namespace: Option<&'a str>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Kubeconfig {
    /// A kubeconfig with one cluster at `server`, one user and one context, all called
    /// `name`, the context current. Add credentials with the other builder methods.
    pub fn single(name: &str, server: &str) -> Kubeconfig {
        Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: name.into(),
                cluster: Cluster {
                    server: server.into(),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: name.into(),
                user: User::default(),
            }],
            contexts: vec![NamedContext {
                name: name.into(),
                context: Context {
                    cluster: name.into(),
                    user: Some(name.into()),
                    namespace: None,
                },
            }],
            current_context: Some(name.into()),
        }
    }

    /// A kubeconfig that only says where the cluster is (the cluster named `""`, no users, no
    /// contexts), as kubeadm publishes in `kube-public/cluster-info`.
    pub fn cluster_only(server: &str) -> Kubeconfig {
        let mut k = Kubeconfig::single("", server);
        k.users.clear();
        k.contexts.clear();
        k
    }

    /// Trusts the CA with this PEM (embedded) for every cluster.
    pub fn with_certificate_authority(mut self, ca_pem: &[u8]) -> Self {
        for c in &mut self.clusters {
            c.cluster.certificate_authority_data = Some(b64(ca_pem));
        }
        self
    }

    /// Gives every user this bearer token.
    pub fn with_token(mut self, token: &str) -> Self {
        for u in &mut self.users {
            u.user.token = Some(token.into());
        }
        self
    }

    /// Gives every user this client certificate and key (PEM, embedded).
    pub fn with_client_certificate(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        for u in &mut self.users {
            u.user.client_certificate_data = Some(b64(cert_pem));
            u.user.client_key_data = Some(b64(key_pem));
        }
        self
    }

    /// Renames the user (a [`Kubeconfig::single`] file's) and the contexts that use it.
    pub fn with_user_name(mut self, name: &str) -> Self {
        for u in &mut self.users {
            let old = std::mem::replace(&mut u.name, name.into());
            for c in &mut self.contexts {
                if c.context.user.as_deref() == Some(old.as_str()) {
                    c.context.user = Some(name.into());
                }
            }
        }
        self
    }

    /// Sets the namespace of every context.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        for c in &mut self.contexts {
            c.context.namespace = Some(namespace.into());
        }
        self
    }

    /// Points every cluster at `server`.
    pub fn set_server(&mut self, server: &str) {
        for c in &mut self.clusters {
            c.cluster.server = server.into();
        }
    }

    /// Reads a kubeconfig's YAML.
    pub fn from_yaml(text: &str) -> Result<Kubeconfig> {
        serde_norway::from_str(text).map_err(KubeconfigError::Parse)
    }

    /// Writes it as YAML.
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self).map_err(KubeconfigError::Write)
    }

    /// The current context (the first one when `current-context` names none of them) and
    /// the cluster and user it names.
    pub fn current(&self) -> Result<Current<'_>> {
        let name = self.current_context.as_deref().unwrap_or("");
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .or_else(|| self.contexts.first())
            .map(|c| &c.context)
            .ok_or(KubeconfigError::NoContext)?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .map(|c| &c.cluster)
            .ok_or_else(|| KubeconfigError::ClusterNotFound(ctx.cluster.clone()))?;
        let user = self
            .users
            .iter()
            .find(|u| Some(&u.name) == ctx.user.as_ref())
            .map(|u| u.user.clone())
            .unwrap_or_default();
        Ok(Current {
            cluster,
            user,
            namespace: ctx.namespace.as_deref().filter(|n| !n.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_one_cluster_one_user_one_context() {
        let k = Kubeconfig::single("skiff", "https://127.0.0.1:6443")
            .with_certificate_authority(b"CA")
            .with_token("s3cret: #not a comment")
            .with_user_name("admin");
        let text = k.to_yaml().unwrap();
        let back = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(back, k, "{text}");
        let cur = back.current().unwrap();
        assert_eq!(cur.cluster.server, "https://127.0.0.1:6443");
        assert_eq!(
            cur.cluster.certificate_authority_data.as_deref(),
            Some("Q0E=")
        );
        assert_eq!(cur.user.token.as_deref(), Some("s3cret: #not a comment"));
        assert_eq!(cur.namespace, None);
        assert!(text.contains("current-context: skiff"), "{text}");
        assert!(text.starts_with("apiVersion: v1\nkind: Config\n"), "{text}");
    }

    #[test]
    fn values_that_are_not_plain_yaml_are_quoted() {
        for token in ["yes", "123", "", "a\nb", "'q'", "{x}", "- y", "null"] {
            let k = Kubeconfig::single("c", "https://h:1").with_token(token);
            let back = Kubeconfig::from_yaml(&k.to_yaml().unwrap()).unwrap();
            assert_eq!(back.current().unwrap().user.token.as_deref(), Some(token));
        }
    }

    #[test]
    fn cluster_info_has_only_the_cluster() {
        let k = Kubeconfig::cluster_only("https://10.0.0.1:6443").with_certificate_authority(b"CA");
        let text = k.to_yaml().unwrap();
        let back = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(back.clusters.len(), 1);
        assert_eq!(back.clusters[0].name, "");
        assert!(back.users.is_empty() && back.contexts.is_empty());
        assert_eq!(back.current_context.as_deref(), Some(""));
        assert!(matches!(back.current(), Err(KubeconfigError::NoContext)));
    }

    #[test]
    fn reads_kubectl_files() {
        let text = r#"
apiVersion: v1
kind: Config
current-context: b
preferences: {}
clusters:
- name: one
  cluster: {server: "https://10.0.0.1:6443", certificate-authority-data: "Q0E="}
- name: two
  cluster: {server: "https://127.0.0.1:7443", certificate-authority: ca.crt}
contexts:
- name: a
  context: {cluster: one, user: u}
- name: b
  context: {cluster: two, user: t, namespace: team}
users:
- name: u
  user: {client-certificate-data: "Q0VSVA==", client-key-data: "S0VZ"}
- name: t
  user: {tokenFile: token}
"#;
        let k = Kubeconfig::from_yaml(text).unwrap();
        let cur = k.current().unwrap();
        assert_eq!(cur.cluster.server, "https://127.0.0.1:7443");
        assert_eq!(cur.cluster.certificate_authority.as_deref(), Some("ca.crt"));
        assert_eq!(cur.user.token_file.as_deref(), Some("token"));
        assert_eq!(cur.namespace, Some("team"));
        let nulls = "clusters:\n- name: c\n  cluster: {server: s}\nusers: null\ncontexts: null\n";
        assert!(matches!(
            Kubeconfig::from_yaml(nulls).unwrap().current(),
            Err(KubeconfigError::NoContext)
        ));
        let missing = "contexts: [{name: a, context: {cluster: nope}}]\n";
        let e = Kubeconfig::from_yaml(missing)
            .unwrap()
            .current()
            .unwrap_err();
        assert_eq!(e.to_string(), "cluster \"nope\" not found");
        assert!(Kubeconfig::from_yaml("clusters: 5").is_err());
    }
}
