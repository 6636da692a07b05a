//! A resource's providers, as one list: the first encrypts writes, every one decrypts the
//! values that carry its prefix (the identity provider reads unprefixed values), and a value
//! read with any but the first — or with a key other than its provider's first — is stale.

use std::sync::Arc;
use std::time::Instant;

use super::cipher::{Cbc, CipherError, Gcm, SecretBox};
use super::config::{Key, ProviderConfiguration};
use super::kms::{KmsError, KmsProvider};
use super::metrics::{Metrics, FROM_STORAGE, TO_STORAGE};

/// What every encrypted value starts with; the identity provider refuses such values.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// Why a value could not be transformed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransformError {
    /// An encrypted value where plaintext was expected.
    #[error("identity transformer tried to read encrypted data")]
    EncryptedData,
    /// No provider's prefix matches the value.
    #[error("no matching prefix found")]
    NoPrefix,
    /// No key of the provider is named in the value.
    #[error("no matching key was found for the provided {0} transformer")]
    NoKey(&'static str),
    /// A cipher failed.
    #[error(transparent)]
    Cipher(#[from] CipherError),
    /// The KMS provider failed.
    #[error(transparent)]
    Kms(#[from] KmsError),
    /// Every provider whose prefix matched failed.
    #[error("[{}]", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(", "))]
    All(Vec<TransformError>),
}

impl TransformError {
    /// The `status` label of the transformation metric.
    fn code(&self) -> String {
        match self {
            TransformError::Kms(k) => k.code().to_string(),
            TransformError::All(all) => all.last().map(Self::code).unwrap_or_default(),
            _ => "unknown-non-grpc".into(),
        }
    }
}

/// One cipher under one key name.
enum Keyed {
    Gcm(Gcm),
    Cbc(Cbc),
    SecretBox(SecretBox),
}

/// A provider with named local keys (`aescbc`, `aesgcm`, `secretbox`).
pub struct KeyedProvider {
    kind: &'static str,
    prefix: String,
    keys: Vec<(Vec<u8>, Keyed)>,
}

impl KeyedProvider {
    fn new(kind: &'static str, keys: &[Key]) -> Result<Self, String> {
        let mut out = Vec::new();
        for k in keys {
            let bytes = k.bytes();
            let cipher = match kind {
                "aesgcm" => Gcm::new(&bytes).map(Keyed::Gcm),
                "aescbc" => Cbc::new(&bytes).map(Keyed::Cbc),
                _ => SecretBox::new(&bytes).map(Keyed::SecretBox),
            }
            .map_err(|e| format!("error while creating cipher for named key {}: {e}", k.name))?;
            out.push((format!("{}:", k.name).into_bytes(), cipher));
        }
        Ok(KeyedProvider {
            kind,
            prefix: format!("k8s:enc:{kind}:v1:"),
            keys: out,
        })
    }

    fn label(&self) -> &'static str {
        match self.kind {
            "aesgcm" | "aescbc" => "AES",
            _ => "Secretbox",
        }
    }

    fn encrypt(&self, out: &mut Vec<u8>, plaintext: &[u8], aad: &[u8]) -> Result<(), CipherError> {
        let (name, cipher) = &self.keys[0];
        out.extend_from_slice(name);
        match cipher {
            Keyed::Gcm(c) => c.seal_into(out, plaintext, aad),
            Keyed::Cbc(c) => c.seal_into(out, plaintext),
            Keyed::SecretBox(c) => c.seal_into(out, plaintext),
        }
    }

    fn decrypt(&self, data: &[u8], aad: &[u8]) -> Result<(Vec<u8>, bool), TransformError> {
        let mut errs = Vec::new();
        for (i, (name, cipher)) in self.keys.iter().enumerate() {
            let Some(rest) = data.strip_prefix(name.as_slice()) else {
                continue;
            };
            let r = match cipher {
                Keyed::Gcm(c) => c.open(rest, aad),
                Keyed::Cbc(c) => c.open(rest),
                Keyed::SecretBox(c) => c.open(rest),
            };
            match r {
                Ok(out) => return Ok((out, i != 0)),
                Err(e) => errs.push(TransformError::Cipher(e)),
            }
        }
        match errs.len() {
            0 => Err(TransformError::NoKey(self.label())),
            1 => Err(errs.remove(0)),
            _ => Err(TransformError::All(errs)),
        }
    }
}

/// One provider of a resource list.
pub enum Provider {
    /// No encryption.
    Identity,
    /// Local keys.
    Keyed(KeyedProvider),
    /// KMS v2 envelope encryption.
    Kms(Arc<KmsProvider>),
}

impl Provider {
    /// The provider for a configuration entry; `kms` finds (or makes) the KMS provider of a
    /// `kms` entry.
    pub fn build(
        c: &ProviderConfiguration,
        kms: &mut dyn FnMut(&super::config::KmsConfiguration) -> Result<Arc<KmsProvider>, String>,
    ) -> Result<Provider, String> {
        if let Some(keys) = &c.aesgcm {
            return KeyedProvider::new("aesgcm", keys).map(Provider::Keyed);
        }
        if let Some(keys) = &c.aescbc {
            return KeyedProvider::new("aescbc", keys).map(Provider::Keyed);
        }
        if let Some(keys) = &c.secretbox {
            return KeyedProvider::new("secretbox", keys).map(Provider::Keyed);
        }
        if let Some(k) = &c.kms {
            if k.api_version != "v2" {
                return Err(format!(
                    "could not configure KMS plugin {:?}: KMSv1 is deprecated and not supported; use apiVersion: v2",
                    k.name
                ));
            }
            return kms(k).map(Provider::Kms);
        }
        if c.identity {
            return Ok(Provider::Identity);
        }
        Err("provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity".into())
    }

    /// The prefix of the values it writes (empty for identity).
    pub fn prefix(&self) -> &str {
        match self {
            Provider::Identity => "",
            Provider::Keyed(k) => &k.prefix,
            Provider::Kms(k) => k.prefix(),
        }
    }
}

/// A resource's providers, in order.
pub struct Chain {
    providers: Vec<Arc<Provider>>,
}

impl Chain {
    /// The chain of `providers` (at least one).
    pub fn new(providers: Vec<Arc<Provider>>) -> Self {
        Chain { providers }
    }

    /// The KMS providers in the chain.
    pub fn kms(&self) -> impl Iterator<Item = &Arc<KmsProvider>> {
        self.providers.iter().filter_map(|p| match &**p {
            Provider::Kms(k) => Some(k),
            _ => None,
        })
    }

    /// The stored form of `plaintext` under etcd key `aad`, by the first provider.
    pub fn write(
        &self,
        resource: &str,
        plaintext: Vec<u8>,
        aad: &[u8],
        metrics: &Metrics,
    ) -> Result<Vec<u8>, TransformError> {
        let start = Instant::now();
        let first = &self.providers[0];
        let r: Result<Vec<u8>, TransformError> = match &**first {
            Provider::Identity => Ok(plaintext),
            Provider::Keyed(k) => {
                let mut out = Vec::with_capacity(k.prefix.len() + plaintext.len() + 64);
                out.extend_from_slice(k.prefix.as_bytes());
                k.encrypt(&mut out, &plaintext, aad)
                    .map(|()| out)
                    .map_err(Into::into)
            }
            Provider::Kms(k) => k
                .encrypt(&plaintext, aad)
                .map(|body| {
                    let mut out = Vec::with_capacity(k.prefix().len() + body.len());
                    out.extend_from_slice(k.prefix().as_bytes());
                    out.extend_from_slice(&body);
                    out
                })
                .map_err(Into::into),
        };
        let status = match &r {
            Ok(_) => "OK".to_string(),
            Err(e) => e.code(),
        };
        metrics.transformation(
            resource,
            TO_STORAGE,
            first.prefix(),
            start.elapsed(),
            &status,
        );
        r
    }

    /// The plaintext of a stored value and whether it is stale.
    pub async fn read(
        &self,
        resource: &str,
        data: &[u8],
        aad: &[u8],
        metrics: &Metrics,
    ) -> Result<(Vec<u8>, bool), TransformError> {
        let start = Instant::now();
        let mut errs = Vec::new();
        for (i, p) in self.providers.iter().enumerate() {
            let Some(rest) = data.strip_prefix(p.prefix().as_bytes()) else {
                continue;
            };
            let r = match &**p {
                Provider::Identity => {
                    if data.starts_with(ENCRYPTED_PREFIX) {
                        Err(TransformError::EncryptedData)
                    } else {
                        Ok((data.to_vec(), false))
                    }
                }
                Provider::Keyed(k) => k.decrypt(rest, aad),
                Provider::Kms(k) => k.decrypt(rest, aad).await.map_err(Into::into),
            };
            let status = match &r {
                Ok(_) => "OK".to_string(),
                Err(e) => e.code(),
            };
            metrics.transformation(resource, FROM_STORAGE, p.prefix(), start.elapsed(), &status);
            // Providers may share a prefix (the same kind twice, a key being rotated in and
            // one rotated out): a failure is no reason not to try the next.
            match r {
                Ok((out, stale)) => return Ok((out, stale || i != 0)),
                Err(e) => errs.push(e),
            }
        }
        match errs.len() {
            0 => {
                metrics.transformation(
                    resource,
                    FROM_STORAGE,
                    "unknown",
                    start.elapsed(),
                    "unknown-non-grpc",
                );
                Err(TransformError::NoPrefix)
            }
            1 => Err(errs.remove(0)),
            _ => Err(TransformError::All(errs)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encryption::cipher::tests::unhex;

    const AAD: &[u8] = b"/registry/secrets/default/s1";
    const PLAIN: &[u8] = br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s1","namespace":"default"},"data":{"k":"dg=="}}"#;

    fn key(name: &str, bytes: &[u8]) -> Key {
        use base64::Engine;
        Key {
            name: name.into(),
            secret: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    fn chain(kind: &str, keys: &[Key]) -> Chain {
        let mut c = ProviderConfiguration::default();
        let keys = Some(keys.to_vec());
        match kind {
            "aesgcm" => c.aesgcm = keys,
            "aescbc" => c.aescbc = keys,
            _ => c.secretbox = keys,
        }
        let p = Provider::build(&c, &mut |_| unreachable!()).unwrap();
        Chain::new(vec![Arc::new(p)])
    }

    async fn read(c: &Chain, v: &[u8]) -> Result<(Vec<u8>, bool), TransformError> {
        c.read("secrets", v, AAD, &Metrics::new()).await
    }

    // The values below were made with Python's `cryptography` (AES) and PyNaCl (secretbox),
    // laid out as kube-apiserver stores them: prefix, key name, then the cipher's own layout.
    const CBC: &str = "6b38733a656e633a6165736362633a76313a6b6579313a6465666768696a6b6c6d6e6f70717273d65649f4371f6dca264fec5633b346373c6ec70cde172f408f1f50dec2ec01f21da30c8a15e46ab690f4aa73e9f6ac8687879b3723863c9077cedbb84e8b938d15d9c10349b777cee184754209f167f52cfd023c7cfdedbaa4aa5418ebf81be8db96baa71d83150d2a92426e5ab78d1e";
    const GCM16: &str = "6b38733a656e633a61657367636d3a76313a6b6579313ac8c9cacbcccdcecfd0d1d2d34d0af5ce67654e5badfec72ce35b41d04132d12bba467377f68d659b739c83a08a18ba3ff9efff548cd75c37215620b1772cd5c56d86e14d49c42e98039b15c451664306e8df33822db51a245a1669593c19b9105ab1d728ef4ec5d3fd54213fba49f8326cdb9b4bd9789f5e2f2675b7098631e70a6d";
    const GCM24: &str = "6b38733a656e633a61657367636d3a76313a6b6579313ac8c9cacbcccdcecfd0d1d2d3c2a47d58ff4035c66f45799967e9a0c006da4eda282879ddb1150945a33927834abf8bfd29e8d524778b065ac35966a7084f8846e6fd490adb76aec11883eec55e59bdc14a74274e7afd22ebbde44bd4b2ef7c705a634a4e89fa91017d10a0da17fce7b9f0a6bf18e71c373959a036854d080b43170d";
    const GCM32: &str = "6b38733a656e633a61657367636d3a76313a6b6579313ac8c9cacbcccdcecfd0d1d2d36a5a00abef9a9e52075570d03c3cc962d1a5c08a6f02c640cf9319b2bff2d98cb8ae0684ff7a5ecb569e30c6922d7ac2b1d076dda637d5632a3a6ab7cf332a59b58fc527406f18e3e884350992f3c5f57949b74c59d4100126d48a91d97a017e51545089369a9dcf073e091d0fea7f67d52a0cee5916";
    const SECRETBOX: &str = "6b38733a656e633a736563726574626f783a76313a6b6579313a32333435363738393a3b3c3d3e3f404142434445464748497937975a7de650a53129db82c88306005526308e909d9714113e6ec482a2e0001524611ae48b145fb9a3fea78e6d9d465a4a2c567bd25f16a426a69b257859d201a3f16580bac8bd304cf1bb826368bec9e69c550a42599b0ed47982ef080c80884d09eb9e32cfa38378b02aceee75155a6166605cfd";

    fn k(n: u8) -> Vec<u8> {
        (0..n).collect()
    }

    #[tokio::test]
    async fn reads_values_built_the_way_kubernetes_builds_them() {
        for (kind, hexv, key_len) in [
            ("aescbc", CBC, 32),
            ("aesgcm", GCM16, 16),
            ("aesgcm", GCM24, 24),
            ("aesgcm", GCM32, 32),
            ("secretbox", SECRETBOX, 32),
        ] {
            let c = chain(kind, &[key("key1", &k(key_len))]);
            let v = unhex(hexv);
            assert_eq!(
                read(&c, &v).await.unwrap(),
                (PLAIN.to_vec(), false),
                "{kind}/{key_len}"
            );
        }
        // AES-GCM authenticates the etcd key: the same value under another key fails.
        let c = chain("aesgcm", &[key("key1", &k(16))]);
        let e = c
            .read(
                "secrets",
                &unhex(GCM16),
                b"/registry/secrets/default/s2",
                &Metrics::new(),
            )
            .await;
        assert!(e.is_err());
    }

    #[tokio::test]
    async fn writes_carry_the_prefix_and_key_name_and_read_back() {
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let c = chain(kind, &[key("new", &k(32)), key("key1", &k(32))]);
            let v = c
                .write("secrets", PLAIN.to_vec(), AAD, &Metrics::new())
                .unwrap();
            let want = format!("k8s:enc:{kind}:v1:new:");
            assert!(v.starts_with(want.as_bytes()), "{kind}");
            assert!(!v.windows(PLAIN.len()).any(|w| w == PLAIN));
            assert_eq!(read(&c, &v).await.unwrap(), (PLAIN.to_vec(), false));
        }
        // A value under the second key reads, stale: a rewrite moves it to the first.
        let c = chain("aescbc", &[key("new", &k(32)), key("key1", &k(32))]);
        assert_eq!(read(&c, &unhex(CBC)).await.unwrap(), (PLAIN.to_vec(), true));
        // A key that is not configured is named as missing.
        let c = chain("aescbc", &[key("other", &k(32))]);
        let e = read(&c, &unhex(CBC)).await.unwrap_err().to_string();
        assert_eq!(
            e,
            "no matching key was found for the provided AES transformer"
        );
    }

    #[tokio::test]
    async fn identity_and_the_order_of_providers_decide_staleness() {
        let cbc = || {
            let c = ProviderConfiguration {
                aescbc: Some(vec![key("key1", &k(32))]),
                ..Default::default()
            };
            Arc::new(Provider::build(&c, &mut |_| unreachable!()).unwrap())
        };
        let m = Metrics::new();
        // identity first: plaintext is current, encrypted values read stale.
        let c = Chain::new(vec![Arc::new(Provider::Identity), cbc()]);
        assert_eq!(c.write("secrets", PLAIN.to_vec(), AAD, &m).unwrap(), PLAIN);
        assert!(!read(&c, PLAIN).await.unwrap().1);
        assert_eq!(read(&c, &unhex(CBC)).await.unwrap(), (PLAIN.to_vec(), true));
        // identity last: plaintext reads stale, so that a rewrite encrypts it.
        let c = Chain::new(vec![cbc(), Arc::new(Provider::Identity)]);
        assert_eq!(read(&c, PLAIN).await.unwrap(), (PLAIN.to_vec(), true));
        assert!(!read(&c, &unhex(CBC)).await.unwrap().1);
        // Without identity, plaintext is no value of this resource.
        let c = Chain::new(vec![cbc()]);
        assert_eq!(
            read(&c, PLAIN).await.unwrap_err().to_string(),
            "no matching prefix found"
        );
        // Identity alone refuses encrypted data.
        let c = Chain::new(vec![Arc::new(Provider::Identity)]);
        assert_eq!(
            read(&c, &unhex(CBC)).await.unwrap_err().to_string(),
            "identity transformer tried to read encrypted data"
        );
    }

    #[tokio::test]
    async fn tampered_values_are_refused() {
        for kind in ["aescbc", "aesgcm", "secretbox"] {
            let c = chain(kind, &[key("key1", &k(32))]);
            let mut v = c
                .write("secrets", PLAIN.to_vec(), AAD, &Metrics::new())
                .unwrap();
            let n = v.len();
            if kind == "aescbc" {
                // CBC authenticates nothing; only its shape is checked.
                v.push(0);
            } else {
                v[n - 1] ^= 0x55;
            }
            assert!(read(&c, &v).await.is_err(), "{kind}");
            v.truncate(30);
            assert!(read(&c, &v).await.is_err(), "{kind}");
        }
    }
}
