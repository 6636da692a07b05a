//! The keys file: the plugin's key-encryption keys (KEKs) and which one is primary.
//!
//! ```json
//! {"primary": "ID", "keys": [{"id": "ID", "secret": "BASE64 OF 32 BYTES", "created": "RFC3339"}]}
//! ```
//!
//! The file is the plugin's alone (mode 0600); every write replaces it whole (a temporary
//! file renamed over it), so a reader never sees half a file.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

/// Why a keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing it failed.
    #[error("keys file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a valid keys file.
    #[error("keys file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A request the keys cannot satisfy (removing the primary, an unknown id).
    #[error("{0}")]
    Refused(String),
    /// The system's random source failed.
    #[error("the system's random source failed")]
    Random,
}

/// One key-encryption key.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Key {
    /// Its id: what `Encrypt` answers as `key_id` and `Decrypt` is asked for.
    pub id: String,
    /// 32 bytes, base64.
    pub secret: String,
    /// When it was made (RFC 3339).
    pub created: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Key {{ id: {:?}, created: {:?}, secret: [REDACTED] }}",
            self.id, self.created
        )
    }
}

/// The keys file's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// The id of the key `Encrypt` uses.
    pub primary: String,
    /// Every key, the primary among them; the others still decrypt.
    pub keys: Vec<Key>,
}

fn random(buf: &mut [u8]) -> Result<(), KeysError> {
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| KeysError::Random)
}

/// A new key, named by its creation time and a random suffix.
pub fn new_key() -> Result<Key, KeysError> {
    let mut secret = [0u8; 32];
    random(&mut secret)?;
    let mut suffix = [0u8; 3];
    random(&mut suffix)?;
    let now = chrono::Utc::now();
    Ok(Key {
        id: format!(
            "kek-{}-{:02x}{:02x}{:02x}",
            now.format("%Y%m%dT%H%M%SZ"),
            suffix[0],
            suffix[1],
            suffix[2]
        ),
        secret: base64::engine::general_purpose::STANDARD.encode(secret),
        created: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

impl Keys {
    /// One fresh key, primary.
    pub fn fresh() -> Result<Keys, KeysError> {
        let k = new_key()?;
        Ok(Keys {
            primary: k.id.clone(),
            keys: vec![k],
        })
    }

    /// Parses and checks a file's bytes (`path` names it in errors).
    pub fn parse(path: &Path, data: &[u8]) -> Result<Keys, KeysError> {
        let invalid = |reason: String| KeysError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let keys: Keys = serde_json::from_slice(data).map_err(|e| invalid(e.to_string()))?;
        keys.check().map_err(invalid)?;
        Ok(keys)
    }

    /// Whether the keys are usable: ids unique and non-empty, secrets 32 bytes, the primary
    /// among them.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.keys {
            if k.id.is_empty() || k.id.len() > 1024 {
                return Err("a key id must be 1 to 1024 bytes".into());
            }
            if !seen.insert(k.id.as_str()) {
                return Err(format!("key id {:?} appears twice", k.id));
            }
            let secret = base64::engine::general_purpose::STANDARD
                .decode(&k.secret)
                .map_err(|_| format!("key {:?}: the secret is not base64", k.id))?;
            if secret.len() != 32 {
                return Err(format!(
                    "key {:?}: the secret is {} bytes, not 32",
                    k.id,
                    secret.len()
                ));
            }
        }
        if !seen.contains(self.primary.as_str()) {
            return Err(format!(
                "the primary key {:?} is not among the keys",
                self.primary
            ));
        }
        Ok(())
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Adds a new key and makes it primary; returns its id.
    pub fn rotate(&mut self) -> Result<String, KeysError> {
        let mut k = new_key()?;
        while self.get(&k.id).is_some() {
            k = new_key()?;
        }
        let id = k.id.clone();
        self.keys.push(k);
        self.primary = id.clone();
        Ok(id)
    }

    /// Removes a key that is not the primary.
    pub fn remove(&mut self, id: &str) -> Result<(), KeysError> {
        if id == self.primary {
            return Err(KeysError::Refused(format!(
                "key {id:?} is the primary key: rotate to a new key first"
            )));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id != id);
        if self.keys.len() == before {
            return Err(KeysError::Refused(format!(
                "no key {id:?} in the keys file"
            )));
        }
        Ok(())
    }
}

/// Reads the keys file.
pub fn load(path: &Path) -> Result<Keys, KeysError> {
    let data = std::fs::read(path).map_err(|source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Keys::parse(path, &data)
}

/// Reads the keys file, creating it with one fresh key if it does not exist.
pub fn load_or_create(path: &Path) -> Result<Keys, KeysError> {
    if path.exists() {
        return load(path);
    }
    let keys = Keys::fresh()?;
    save(path, &keys)?;
    tracing::info!(file = %path.display(), primary = %keys.primary, "created a keys file with a new key");
    Ok(keys)
}

/// Writes the keys file atomically, mode 0600.
pub fn save(path: &Path, keys: &Keys) -> Result<(), KeysError> {
    let io = |source| KeysError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut data = serde_json::to_vec_pretty(keys).map_err(|e| io(std::io::Error::other(e)))?;
    data.push(b'\n');
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Encrypts and decrypts with the keys: AES-256-GCM, `nonce(12) ‖ ciphertext ‖ tag`, the key
/// id as additional data (a ciphertext names the key that made it).
pub struct Sealer;

impl Sealer {
    fn cipher(k: &Key) -> Result<aes_gcm::Aes256Gcm, String> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(&k.secret)
            .map_err(|_| format!("key {:?} is not base64", k.id))?;
        aes_gcm::Aes256Gcm::new_from_slice(&secret)
            .map_err(|_| format!("key {:?} is not 32 bytes", k.id))
    }

    /// `plaintext` sealed with `k`.
    pub fn seal(k: &Key, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let c = Self::cipher(k)?;
        let mut nonce = [0u8; 12];
        random(&mut nonce).map_err(|e| e.to_string())?;
        let ct = c
            .encrypt(
                aes_gcm::Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: k.id.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// The plaintext of `data` sealed with `k`.
    pub fn open(k: &Key, data: &[u8]) -> Result<Vec<u8>, String> {
        if data.len() < 12 + 16 {
            return Err("the ciphertext is too short".into());
        }
        let c = Self::cipher(k)?;
        c.decrypt(
            aes_gcm::Nonce::from_slice(&data[..12]),
            Payload {
                msg: &data[12..],
                aad: k.id.as_bytes(),
            },
        )
        .map_err(|_| "message authentication failed".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_rotated_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.json");
        let mut keys = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            load_or_create(&path).unwrap(),
            keys,
            "an existing file is kept"
        );
        let first = keys.primary.clone();
        let second = keys.rotate().unwrap();
        assert_ne!(first, second);
        assert_eq!(keys.primary, second);
        assert_eq!(keys.keys.len(), 2);
        assert!(matches!(keys.remove(&second), Err(KeysError::Refused(_))));
        assert!(matches!(keys.remove("nope"), Err(KeysError::Refused(_))));
        keys.remove(&first).unwrap();
        save(&path, &keys).unwrap();
        assert_eq!(load(&path).unwrap(), keys);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let p = Path::new("k.json");
        let e = |s: &str| Keys::parse(p, s.as_bytes()).unwrap_err().to_string();
        assert!(e("{").starts_with("keys file k.json:"));
        assert!(e(r#"{"primary":"a","keys":[]}"#)
            .contains("the primary key \"a\" is not among the keys"));
        assert!(
            e(r#"{"primary":"a","keys":[{"id":"a","secret":"AAAA","created":"x"}]}"#)
                .contains("is 3 bytes, not 32")
        );
        let k = base64::engine::general_purpose::STANDARD.encode([0u8; 32]);
        assert!(e(&format!(r#"{{"primary":"a","keys":[{{"id":"a","secret":"{k}","created":"x"}},{{"id":"a","secret":"{k}","created":"x"}}]}}"#)).contains("appears twice"));
        assert!(e(r#"{"primary":"a","keys":[],"extra":1}"#).contains("unknown field"));
    }

    #[test]
    fn sealed_data_opens_only_with_its_key() {
        let a = new_key().unwrap();
        let mut b = new_key().unwrap();
        let v = Sealer::seal(&a, b"dek").unwrap();
        assert_eq!(Sealer::open(&a, &v).unwrap(), b"dek");
        assert!(Sealer::open(&b, &v).is_err());
        // Same secret under another id: the id is authenticated too.
        b.secret = a.secret.clone();
        assert!(Sealer::open(&b, &v).is_err());
        assert!(Sealer::open(&a, &v[..10]).is_err());
    }
}
