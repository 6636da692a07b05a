//! The ciphers behind the providers, each laid out in storage exactly as kube-apiserver lays
//! it out: AES-GCM (`nonce(12) ‖ ciphertext ‖ tag(16)`, the etcd key as additional data),
//! AES-CBC (`iv(16) ‖ ciphertext`, PKCS#7 padding, no additional data), NaCl's secretbox
//! (`nonce(24) ‖ tag(16) ‖ ciphertext`), and KMS v2's key derivation (HKDF-SHA256 expand of a
//! 32-byte seed with 32 random bytes of `info` stored before the AES-GCM value).

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::AesGcm;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ring::rand::SecureRandom;

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The stored value is shorter than its cipher's header.
    #[error("the stored data was shorter than the required size")]
    TooShort,
    /// Authentication failed: wrong key, wrong key path, or altered data.
    #[error("cipher: message authentication failed")]
    Authentication,
    /// CBC data that is not whole blocks.
    #[error("the stored data is not a multiple of the block size")]
    BlockSize,
    /// Bad CBC padding.
    #[error("invalid PKCS7 data (empty or not padded)")]
    Padding,
    /// A key of a length the cipher does not take.
    #[error("invalid key size {0}")]
    KeySize(usize),
    /// The system's random source failed.
    #[error("unable to read sufficient random bytes")]
    Random,
}

type Aes192Gcm = AesGcm<aes::Aes192, U12>;

/// AES-GCM with a 128, 192 or 256-bit key and 96-bit nonces.
#[derive(Clone)]
pub enum Gcm {
    /// AES-128.
    A128(Box<aes_gcm::Aes128Gcm>),
    /// AES-192.
    A192(Box<Aes192Gcm>),
    /// AES-256.
    A256(Box<aes_gcm::Aes256Gcm>),
}

/// GCM's nonce size, as every value written by Kubernetes uses.
pub const GCM_NONCE: usize = 12;
/// GCM's tag size.
pub const GCM_TAG: usize = 16;

/// Fills `buf` from the system's random source.
pub fn random(buf: &mut [u8]) -> Result<(), CipherError> {
    ring::rand::SystemRandom::new()
        .fill(buf)
        .map_err(|_| CipherError::Random)
}

impl Gcm {
    /// A cipher for a 16, 24 or 32-byte key.
    pub fn new(key: &[u8]) -> Result<Gcm, CipherError> {
        Ok(match key.len() {
            16 => Gcm::A128(Box::new(
                aes_gcm::Aes128Gcm::new_from_slice(key).map_err(|_| CipherError::KeySize(16))?,
            )),
            24 => Gcm::A192(Box::new(
                Aes192Gcm::new_from_slice(key).map_err(|_| CipherError::KeySize(24))?,
            )),
            32 => Gcm::A256(Box::new(
                aes_gcm::Aes256Gcm::new_from_slice(key).map_err(|_| CipherError::KeySize(32))?,
            )),
            n => return Err(CipherError::KeySize(n)),
        })
    }

    /// `nonce ‖ ciphertext ‖ tag` of `plaintext` with a fresh random nonce, appended to `out`.
    pub fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), CipherError> {
        let mut nonce = [0u8; GCM_NONCE];
        random(&mut nonce)?;
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let n = aes_gcm::Nonce::from_slice(&nonce);
        let body = &mut out[start..];
        let tag = match self {
            Gcm::A128(c) => c.encrypt_in_place_detached(n, aad, body),
            Gcm::A192(c) => c.encrypt_in_place_detached(n, aad, body),
            Gcm::A256(c) => c.encrypt_in_place_detached(n, aad, body),
        }
        .map_err(|_| CipherError::Authentication)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// The plaintext of `nonce ‖ ciphertext ‖ tag`.
    pub fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        if data.len() < GCM_NONCE {
            return Err(CipherError::TooShort);
        }
        let (nonce, ct) = data.split_at(GCM_NONCE);
        let n = aes_gcm::Nonce::from_slice(nonce);
        let payload = Payload { msg: ct, aad };
        match self {
            Gcm::A128(c) => c.decrypt(n, payload),
            Gcm::A192(c) => c.decrypt(n, payload),
            Gcm::A256(c) => c.decrypt(n, payload),
        }
        .map_err(|_| CipherError::Authentication)
    }
}

/// AES-CBC with PKCS#7 padding and a random IV.
#[derive(Clone)]
pub struct Cbc {
    key: Vec<u8>,
}

const BLOCK: usize = 16;

impl Cbc {
    /// A cipher for a 16, 24 or 32-byte key.
    pub fn new(key: &[u8]) -> Result<Cbc, CipherError> {
        match key.len() {
            16 | 24 | 32 => Ok(Cbc { key: key.to_vec() }),
            n => Err(CipherError::KeySize(n)),
        }
    }

    /// `iv ‖ ciphertext` of `plaintext`, appended to `out`.
    pub fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8]) -> Result<(), CipherError> {
        let mut iv = [0u8; BLOCK];
        random(&mut iv)?;
        let pad = BLOCK - plaintext.len() % BLOCK;
        let mut buf = Vec::with_capacity(plaintext.len() + pad);
        buf.extend_from_slice(plaintext);
        buf.resize(plaintext.len() + pad, pad as u8);
        let n = buf.len();
        let r = match self.key.len() {
            16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(&self.key, &iv)
                .map(|c| c.encrypt_padded_mut::<NoPadding>(&mut buf, n).map(|_| ())),
            24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(&self.key, &iv)
                .map(|c| c.encrypt_padded_mut::<NoPadding>(&mut buf, n).map(|_| ())),
            _ => cbc::Encryptor::<aes::Aes256>::new_from_slices(&self.key, &iv)
                .map(|c| c.encrypt_padded_mut::<NoPadding>(&mut buf, n).map(|_| ())),
        };
        match r {
            Ok(Ok(())) => {}
            _ => return Err(CipherError::KeySize(self.key.len())),
        }
        out.extend_from_slice(&iv);
        out.extend_from_slice(&buf);
        Ok(())
    }

    /// The plaintext of `iv ‖ ciphertext`, its padding checked as Kubernetes checks it.
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, CipherError> {
        if data.len() < BLOCK {
            return Err(CipherError::TooShort);
        }
        let (iv, ct) = data.split_at(BLOCK);
        if ct.len() % BLOCK != 0 {
            return Err(CipherError::BlockSize);
        }
        let mut buf = ct.to_vec();
        let r = match self.key.len() {
            16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&self.key, iv)
                .map(|c| c.decrypt_padded_mut::<NoPadding>(&mut buf).map(|_| ())),
            24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(&self.key, iv)
                .map(|c| c.decrypt_padded_mut::<NoPadding>(&mut buf).map(|_| ())),
            _ => cbc::Decryptor::<aes::Aes256>::new_from_slices(&self.key, iv)
                .map(|c| c.decrypt_padded_mut::<NoPadding>(&mut buf).map(|_| ())),
        };
        match r {
            Ok(Ok(())) => {}
            _ => return Err(CipherError::Padding),
        }
        let Some(&c) = buf.last() else {
            return Err(CipherError::Padding);
        };
        let pad = c as usize;
        if pad == 0 || pad > buf.len() {
            return Err(CipherError::Padding);
        }
        let size = buf.len() - pad;
        if buf[size..].iter().any(|b| *b != c) {
            return Err(CipherError::Padding);
        }
        buf.truncate(size);
        Ok(buf)
    }
}

/// NaCl's secretbox (XSalsa20-Poly1305) with a 32-byte key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: Box<crypto_secretbox::XSalsa20Poly1305>,
}

const SECRETBOX_NONCE: usize = 24;
const SECRETBOX_TAG: usize = 16;

impl SecretBox {
    /// A box for a 32-byte key.
    pub fn new(key: &[u8]) -> Result<SecretBox, CipherError> {
        use crypto_secretbox::aead::KeyInit as _;
        let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(key)
            .map_err(|_| CipherError::KeySize(key.len()))?;
        Ok(SecretBox {
            cipher: Box::new(cipher),
        })
    }

    /// `nonce ‖ tag ‖ ciphertext` (NaCl's `secretbox.Seal` after the nonce), appended to `out`.
    pub fn seal_into(&self, out: &mut Vec<u8>, plaintext: &[u8]) -> Result<(), CipherError> {
        use crypto_secretbox::aead::AeadInPlace as _;
        let mut nonce = [0u8; SECRETBOX_NONCE];
        random(&mut nonce)?;
        let mut body = plaintext.to_vec();
        let tag = self
            .cipher
            .encrypt_in_place_detached(crypto_secretbox::Nonce::from_slice(&nonce), b"", &mut body)
            .map_err(|_| CipherError::Authentication)?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&tag);
        out.extend_from_slice(&body);
        Ok(())
    }

    /// The plaintext of `nonce ‖ tag ‖ ciphertext`.
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, CipherError> {
        use crypto_secretbox::aead::AeadInPlace as _;
        if data.len() < SECRETBOX_NONCE + SECRETBOX_TAG {
            return Err(CipherError::TooShort);
        }
        let (nonce, rest) = data.split_at(SECRETBOX_NONCE);
        let (tag, ct) = rest.split_at(SECRETBOX_TAG);
        let mut body = ct.to_vec();
        self.cipher
            .decrypt_in_place_detached(
                crypto_secretbox::Nonce::from_slice(nonce),
                b"",
                &mut body,
                crypto_secretbox::Tag::from_slice(tag),
            )
            .map_err(|_| CipherError::Authentication)?;
        Ok(body)
    }
}

/// The size of a KMS v2 seed, of the derived key, and of the random `info` stored before
/// each value (Kubernetes' `commonSize`).
pub const SEED_SIZE: usize = 32;

/// A KMS v2 data key: either a seed every value derives its own AES-256-GCM key from
/// (`HKDF_SHA256_XNONCE_AES_GCM_SEED`, what Kubernetes writes since 1.29), or an AES-GCM key
/// used directly (`AES_GCM_KEY`, read for values written before).
#[derive(Clone)]
pub enum DataKey {
    /// A 32-byte HKDF seed.
    Seed(Box<[u8; SEED_SIZE]>),
    /// An AES-GCM key.
    Key(Gcm),
}

impl DataKey {
    /// A seed data key from its plaintext.
    pub fn seed(bytes: &[u8]) -> Result<DataKey, CipherError> {
        let seed: [u8; SEED_SIZE] = bytes
            .try_into()
            .map_err(|_| CipherError::KeySize(bytes.len()))?;
        Ok(DataKey::Seed(Box::new(seed)))
    }

    /// A fresh random seed and its plaintext (what the plugin is asked to encrypt).
    pub fn generate_seed() -> Result<(DataKey, Vec<u8>), CipherError> {
        let mut seed = [0u8; SEED_SIZE];
        random(&mut seed)?;
        Ok((DataKey::Seed(Box::new(seed)), seed.to_vec()))
    }

    fn derive(seed: &[u8; SEED_SIZE], info: &[u8]) -> Result<Gcm, CipherError> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(seed)
            .map_err(|_| CipherError::KeySize(SEED_SIZE))?;
        let mut key = [0u8; SEED_SIZE];
        hk.expand(info, &mut key)
            .map_err(|_| CipherError::KeySize(SEED_SIZE))?;
        Gcm::new(&key)
    }

    /// The stored form of `plaintext` (for a seed: `info ‖ nonce ‖ ciphertext ‖ tag`).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        let mut out = Vec::with_capacity(SEED_SIZE + GCM_NONCE + plaintext.len() + GCM_TAG);
        match self {
            DataKey::Seed(seed) => {
                let mut info = [0u8; SEED_SIZE];
                random(&mut info)?;
                out.extend_from_slice(&info);
                Self::derive(seed, &info)?.seal_into(&mut out, plaintext, aad)?;
            }
            DataKey::Key(gcm) => gcm.seal_into(&mut out, plaintext, aad)?,
        }
        Ok(out)
    }

    /// The plaintext of a stored value.
    pub fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, CipherError> {
        match self {
            DataKey::Seed(seed) => {
                if data.len() < SEED_SIZE {
                    return Err(CipherError::TooShort);
                }
                let (info, rest) = data.split_at(SEED_SIZE);
                Self::derive(seed, info)?.open(rest, aad)
            }
            DataKey::Key(gcm) => gcm.open(data, aad),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Hex to bytes.
    pub fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn seals_open_and_refuse_the_wrong_key_path() {
        let aad = b"/registry/secrets/default/a";
        for n in [16, 24, 32] {
            let gcm = Gcm::new(&vec![7u8; n]).unwrap();
            let mut out = Vec::new();
            gcm.seal_into(&mut out, b"hello", aad).unwrap();
            assert_eq!(out.len(), GCM_NONCE + 5 + GCM_TAG);
            assert_eq!(gcm.open(&out, aad).unwrap(), b"hello");
            assert_eq!(
                gcm.open(&out, b"/registry/secrets/default/b"),
                Err(CipherError::Authentication)
            );
            let cbc = Cbc::new(&vec![7u8; n]).unwrap();
            let mut out = Vec::new();
            cbc.seal_into(&mut out, b"0123456789abcdef").unwrap();
            assert_eq!(out.len(), 16 + 32, "a whole block of padding");
            assert_eq!(cbc.open(&out).unwrap(), b"0123456789abcdef");
        }
        assert!(Gcm::new(&[0u8; 17]).is_err());
        let sb = SecretBox::new(&[9u8; 32]).unwrap();
        let mut out = Vec::new();
        sb.seal_into(&mut out, b"x").unwrap();
        assert_eq!(sb.open(&out).unwrap(), b"x");
        out[30] ^= 1;
        assert_eq!(sb.open(&out), Err(CipherError::Authentication));
        let (seed, _) = DataKey::generate_seed().unwrap();
        let v = seed.seal(b"data", aad).unwrap();
        assert_eq!(v.len(), SEED_SIZE + GCM_NONCE + 4 + GCM_TAG);
        assert_eq!(seed.open(&v, aad).unwrap(), b"data");
        assert!(seed.open(&v, b"other").is_err());
    }

    #[test]
    fn short_or_malformed_input_is_an_error_not_a_panic() {
        let gcm = Gcm::new(&[1u8; 16]).unwrap();
        let cbc = Cbc::new(&[1u8; 16]).unwrap();
        let sb = SecretBox::new(&[1u8; 32]).unwrap();
        let seed = DataKey::seed(&[1u8; 32]).unwrap();
        for len in [0, 1, 11, 12, 15, 16, 17, 31, 32, 40, 44, 60] {
            let data = vec![0u8; len];
            assert!(gcm.open(&data, b"").is_err());
            assert!(cbc.open(&data).is_err() || len % 16 == 0);
            assert!(sb.open(&data).is_err());
            assert!(seed.open(&data, b"").is_err());
        }
    }

    #[test]
    fn hkdf_expands_the_seed_as_kubernetes_does() {
        // Made with Python's `cryptography`: HKDFExpand(SHA256, 32, info).derive(seed).
        let seed: Vec<u8> = (1..=32).collect();
        let info: Vec<u8> = (150..182).collect();
        let hk = hkdf::Hkdf::<sha2::Sha256>::from_prk(&seed).unwrap();
        let mut key = [0u8; 32];
        hk.expand(&info, &mut key).unwrap();
        assert_eq!(
            key.to_vec(),
            unhex("fea2507ee6ad74940863f47530fee36db277c836c620a8c0e93bf5062664c618")
        );
    }
}
