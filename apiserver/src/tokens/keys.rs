//! The service-account keys: the private key tokens are signed with
//! (`--service-account-signing-key-file`), the public keys tokens are verified with
//! (`--service-account-key-file`, repeatable), and the key generated into the data dir when
//! neither is given, kept so that tokens stay valid across restarts.
//!
//! Keys are ECDSA P-256 (ES256), P-384 (ES384) or RSA (RS256), in PEM: PKCS#8 `PRIVATE KEY`,
//! SEC1 `EC PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`, `PUBLIC KEY`, `RSA PUBLIC KEY` or a
//! `CERTIFICATE`, as kube-apiserver reads them. A key's id (`kid`) is what Kubernetes makes
//! it: the unpadded base64url SHA-256 of the public key's DER SubjectPublicKeyInfo.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// The file the generated key is kept in, under the data dir.
pub const GENERATED_KEY_FILE: &str = "service-account.key";

/// Why a key could not be read or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no key Skiff can use.
    #[error("{path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// A key that verifies tokens.
#[derive(Clone)]
pub struct PublicKey {
    /// The signature algorithm it verifies.
    pub alg: Algorithm,
    /// Its key id.
    pub kid: String,
    /// The key, as the JWT library takes it.
    pub decoding: DecodingKey,
    /// The key as a JSON Web Key (what `/openid/v1/jwks` lists).
    pub jwk: Value,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish()
    }
}

/// The key that signs tokens.
#[derive(Clone)]
pub struct SigningKey {
    /// Its signature algorithm.
    pub alg: Algorithm,
    /// The key, as the JWT library takes it.
    pub encoding: EncodingKey,
    /// Its public half.
    pub public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish()
    }
}

// DER building blocks (object identifiers with their tag and length).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];

/// One DER value: tag, length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = contents.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// Reads one DER value off the front of `input`: (tag, contents, rest).
fn read_der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, b| (a << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn spki(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    let mut body = der(0x30, alg_id);
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

fn ec_alg_id(curve: &[u8]) -> Vec<u8> {
    [OID_EC_PUBLIC_KEY, curve].concat()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Kubernetes' key id: the unpadded base64url SHA-256 of the DER SubjectPublicKeyInfo.
pub fn key_id(spki_der: &[u8]) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, spki_der).as_ref())
}

/// A public EC key from its uncompressed point.
fn ec_public(curve: &[u8], point: &[u8]) -> Option<PublicKey> {
    let (alg, crv, size) = if curve == OID_P256 {
        (Algorithm::ES256, "P-256", 32)
    } else if curve == OID_P384 {
        (Algorithm::ES384, "P-384", 48)
    } else {
        return None;
    };
    if point.len() != 1 + 2 * size || point[0] != 0x04 {
        return None;
    }
    let kid = key_id(&spki(&ec_alg_id(curve), point));
    let jwk = json!({
        "use": "sig",
        "kty": "EC",
        "kid": kid,
        "crv": crv,
        "alg": format!("{alg:?}"),
        "x": b64(&point[1..1 + size]),
        "y": b64(&point[1 + size..]),
    });
    Some(PublicKey {
        alg,
        kid,
        decoding: DecodingKey::from_ec_der(point),
        jwk,
    })
}

/// A public RSA key from its PKCS#1 `RSAPublicKey` DER.
fn rsa_public(pkcs1: &[u8]) -> Option<PublicKey> {
    let (0x30, seq, _) = read_der(pkcs1)? else {
        return None;
    };
    let (0x02, n, rest) = read_der(seq)? else {
        return None;
    };
    let (0x02, e, _) = read_der(rest)? else {
        return None;
    };
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|x| *x == 0).collect() };
    let (n, e) = (strip(n), strip(e));
    if n.len() < 256 {
        // Fewer than 2048 bits: refused, as Go's crypto refuses them for signing.
        return None;
    }
    let kid = key_id(&spki(OID_RSA, pkcs1));
    let jwk = json!({
        "use": "sig",
        "kty": "RSA",
        "kid": kid,
        "alg": "RS256",
        "n": b64(&n),
        "e": b64(&e),
    });
    Some(PublicKey {
        alg: Algorithm::RS256,
        kid,
        decoding: DecodingKey::from_rsa_raw_components(&n, &e),
        jwk,
    })
}

/// A public key from a DER SubjectPublicKeyInfo.
fn public_from_spki(der_bytes: &[u8]) -> Option<PublicKey> {
    let (0x30, seq, _) = read_der(der_bytes)? else {
        return None;
    };
    let (0x30, alg_id, rest) = read_der(seq)? else {
        return None;
    };
    let (0x03, bits, _) = read_der(rest)? else {
        return None;
    };
    let key = bits.strip_prefix(&[0u8])?;
    if alg_id == OID_RSA {
        return rsa_public(key);
    }
    let curve = alg_id.strip_prefix(OID_EC_PUBLIC_KEY)?;
    ec_public(curve, key)
}

/// A signing key from PKCS#8 DER.
fn signing_from_pkcs8(pkcs8: &[u8]) -> Option<SigningKey> {
    let rng = SystemRandom::new();
    for (alg, ring_alg, curve) in [
        (
            Algorithm::ES256,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            OID_P256,
        ),
        (
            Algorithm::ES384,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            OID_P384,
        ),
    ] {
        if let Ok(kp) = EcdsaKeyPair::from_pkcs8(ring_alg, pkcs8, &rng) {
            let public = ec_public(curve, kp.public_key().as_ref())?;
            return Some(SigningKey {
                alg,
                encoding: EncodingKey::from_ec_der(pkcs8),
                public,
            });
        }
    }
    // RSA: the JWT library signs from the PKCS#1 key inside the PKCS#8 wrapper.
    RsaKeyPair::from_pkcs8(pkcs8).ok()?;
    let (0x30, seq, _) = read_der(pkcs8)? else {
        return None;
    };
    let (_, _version, rest) = read_der(seq)?;
    let (_, _alg, rest) = read_der(rest)?;
    let (0x04, pkcs1, _) = read_der(rest)? else {
        return None;
    };
    signing_from_pkcs1(pkcs1)
}

/// A signing key from a PKCS#1 `RSAPrivateKey`.
fn signing_from_pkcs1(pkcs1: &[u8]) -> Option<SigningKey> {
    let kp = RsaKeyPair::from_der(pkcs1).ok()?;
    let public = rsa_public(kp.public_key().as_ref())?;
    Some(SigningKey {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(pkcs1),
        public,
    })
}

/// A signing key from a SEC1 `ECPrivateKey` (wrapped into PKCS#8, for each curve in turn).
fn signing_from_sec1(sec1: &[u8]) -> Option<SigningKey> {
    [OID_P256, OID_P384].iter().find_map(|curve| {
        let mut body = der(0x02, &[0]);
        body.extend(der(0x30, &ec_alg_id(curve)));
        body.extend(der(0x04, sec1));
        signing_from_pkcs8(&der(0x30, &body))
    })
}

/// The PEM blocks of a file: (label, DER contents).
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            label = Some(l.to_string());
            body.clear();
        } else if line.starts_with("-----END ") {
            if let Some(l) = label.take() {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
                    out.push((l, der));
                }
            }
        } else if label.is_some() && !line.contains(':') {
            body.push_str(line);
        }
    }
    out
}

fn signing_from_block(label: &str, der_bytes: &[u8]) -> Option<SigningKey> {
    match label {
        "PRIVATE KEY" => signing_from_pkcs8(der_bytes),
        "EC PRIVATE KEY" => signing_from_sec1(der_bytes),
        "RSA PRIVATE KEY" => signing_from_pkcs1(der_bytes),
        _ => None,
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the signing key from a PEM file (its first private key).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = read(path)?;
    pem_blocks(&text)
        .iter()
        .find_map(|(label, der_bytes)| signing_from_block(label, der_bytes))
        .ok_or_else(|| KeyError::Parse {
            path: path.to_path_buf(),
            why: "no ECDSA (P-256, P-384) or RSA (2048 bits or more) private key in PEM".into(),
        })
}

/// Reads every public key of a PEM file: public keys, certificates' keys, and private keys'
/// public halves.
pub fn load_public_keys(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let text = read(path)?;
    let keys: Vec<PublicKey> = pem_blocks(&text)
        .iter()
        .filter_map(|(label, der_bytes)| match label.as_str() {
            "PUBLIC KEY" => public_from_spki(der_bytes),
            "RSA PUBLIC KEY" => rsa_public(der_bytes),
            "CERTIFICATE" => {
                let (_, cert) = x509_parser::parse_x509_certificate(der_bytes).ok()?;
                public_from_spki(cert.tbs_certificate.subject_pki.raw)
            }
            l => signing_from_block(l, der_bytes).map(|k| k.public),
        })
        .collect();
    if keys.is_empty() {
        return Err(KeyError::Parse {
            path: path.to_path_buf(),
            why: "no ECDSA (P-256, P-384) or RSA public key in PEM".into(),
        });
    }
    Ok(keys)
}

/// The key kept in the data dir, made (P-256) at first start.
pub fn load_or_generate(data_dir: &Path) -> Result<SigningKey, KeyError> {
    let path = data_dir.join(GENERATED_KEY_FILE);
    if path.exists() {
        return load_signing_key(&path);
    }
    let io = |source| KeyError::Io {
        path: path.clone(),
        source,
    };
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Parse {
            path: path.clone(),
            why: "generating a P-256 key failed".into(),
        })?;
    let b = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    std::fs::create_dir_all(data_dir).map_err(io)?;
    // Written aside and renamed, readable by the owner alone: a half-written or shared key
    // would be worse than none.
    let tmp = data_dir.join(format!("{GENERATED_KEY_FILE}.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(pem.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    load_signing_key(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_2048: &str = include_str!("testdata/rsa.pem");
    const EC_SEC1: &str = include_str!("testdata/ec-sec1.pem");

    #[test]
    fn generated_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(dir.path()).unwrap();
        let b = load_or_generate(dir.path()).unwrap();
        assert_eq!(a.alg, Algorithm::ES256);
        assert_eq!(a.public.kid, b.public.kid);
        assert_eq!(a.public.jwk["crv"], "P-256");
        assert_eq!(a.public.kid.len(), 43);
        // The public half alone reads back with the same id.
        let mut pubs = load_public_keys(&dir.path().join(GENERATED_KEY_FILE)).unwrap();
        assert_eq!(pubs.remove(0).kid, a.public.kid);
    }

    #[test]
    fn reads_rsa_and_sec1_keys_and_their_public_halves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rsa.pem");
        std::fs::write(&p, RSA_2048).unwrap();
        let k = load_signing_key(&p).unwrap();
        assert_eq!(k.alg, Algorithm::RS256);
        assert_eq!(k.public.jwk["kty"], "RSA");
        assert_eq!(k.public.jwk["e"], "AQAB");
        let pubs = load_public_keys(&p).unwrap();
        assert_eq!(pubs.len(), 2, "the private key and the public key block");
        assert!(pubs.iter().all(|p| p.kid == k.public.kid));
        let p = dir.path().join("ec.pem");
        std::fs::write(&p, EC_SEC1).unwrap();
        let k = load_signing_key(&p).unwrap();
        assert_eq!(k.alg, Algorithm::ES256);
        let pubs = load_public_keys(&p).unwrap();
        assert!(pubs.iter().all(|p| p.kid == k.public.kid));
        // The id is Kubernetes': openssl's SPKI DER, SHA-256, base64url.
        assert_eq!(k.public.kid, include_str!("testdata/ec-sec1.kid").trim());
    }

    #[test]
    fn garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(
            &p,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(load_signing_key(&p).is_err());
        assert!(load_public_keys(&p).is_err());
        assert!(read_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(read_der(&[0x30, 0x05, 1]).is_none());
        assert!(public_from_spki(&[0x30, 0x03, 0x30, 0x01, 0x00]).is_none());
    }
}
