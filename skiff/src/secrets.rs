//! Secrets encrypted at rest on a `skiff server`, as k3s's `--secrets-encryption` does it: the
//! server runs the KMS v2 plugin `skiff-kms` beside the API server, with its key-encryption
//! keys in the data dir, and gives the API server an `EncryptionConfiguration` that encrypts
//! Secrets through it (and still reads Secrets written before encryption was on).
//!
//! `skiff secrets-encrypt status|rotate|reencrypt` are the rotation steps Kubernetes documents
//! (a new key made primary, every Secret written again, the old key removed), done for the
//! cluster this machine serves.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::supervisor::Supervisor;

/// The provider's name in the configuration (and in the `k8s:enc:kms:v2:NAME:` prefix).
pub const PROVIDER: &str = "skiff-kms";

/// Where a server keeps its encryption state, under its data dir.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The plugin's directory (mode 0700).
    pub dir: PathBuf,
    /// The plugin's socket.
    pub socket: PathBuf,
    /// The key-encryption keys.
    pub keys: PathBuf,
    /// The API server's `EncryptionConfiguration`.
    pub config: PathBuf,
}

impl Paths {
    /// The paths under a server's `--data-dir`.
    pub fn new(data_dir: &Path) -> Paths {
        let dir = data_dir.join("kms");
        Paths {
            socket: dir.join("kms.sock"),
            keys: dir.join("keys.json"),
            config: data_dir.join("server").join("encryption-config.yaml"),
            dir,
        }
    }
}

/// The `EncryptionConfiguration` a server gives its API server: Secrets through the KMS
/// plugin, and `identity` second so that Secrets stored before encryption was turned on still
/// read (and are encrypted when next written).
pub fn configuration(socket: &Path) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\n\
         kind: EncryptionConfiguration\n\
         resources:\n  \
           - resources: [secrets]\n    \
             providers:\n      \
               - kms:\n          \
                   apiVersion: v2\n          \
                   name: {PROVIDER}\n          \
                   endpoint: unix://{}\n          \
                   timeout: 3s\n      \
               - identity: {{}}\n",
        socket.display()
    )
}

/// Starts the KMS plugin and writes the API server's configuration; answers the API server's
/// flags.
pub fn start(
    sup: &mut Supervisor,
    bin: &Path,
    data_dir: &Path,
    logs: &Path,
) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let p = Paths::new(data_dir);
    std::fs::create_dir_all(&p.dir).with_context(|| format!("creating {}", p.dir.display()))?;
    std::fs::set_permissions(&p.dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some(parent) = p.config.parent() {
        std::fs::create_dir_all(parent)?;
    }
    sup.start(
        "skiff-kms",
        Command::new(bin.join("skiff-kms"))
            .arg(format!("--listen=unix://{}", p.socket.display()))
            .arg(format!("--keys-file={}", p.keys.display())),
        logs,
    )?;
    let socket = p.socket.clone();
    sup.wait_for("skiff-kms to listen", Duration::from_secs(30), move || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    })?;
    crate::server::write_private(&p.config, configuration(&p.socket).as_bytes())?;
    Ok(vec![
        format!("--encryption-provider-config={}", p.config.display()),
        "--encryption-provider-config-automatic-reload".to_string(),
    ])
}

/// Runs `skiff-kms` with `args`; answers its standard output.
fn kms(bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(bin.join("skiff-kms"))
        .args(args)
        .output()
        .context("running skiff-kms")?;
    if !out.status.success() {
        bail!(
            "skiff-kms {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The keys file's key ids, and the primary one.
fn keys(p: &Paths) -> Result<(Vec<String>, String)> {
    let raw = std::fs::read(&p.keys).with_context(|| format!("reading {}", p.keys.display()))?;
    let v: Value = serde_json::from_slice(&raw)
        .with_context(|| format!("{} is not a keys file", p.keys.display()))?;
    let ids = v["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k["id"].as_str().map(String::from))
        .collect();
    let primary = v["primary"].as_str().unwrap_or_default().to_string();
    Ok((ids, primary))
}

/// How the API server's KMS key id is named in its metrics.
fn key_id_hash(id: &str) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(id.as_bytes()))
}

/// Whether encryption is on for the server of `data_dir`.
fn enabled(p: &Paths) -> Result<()> {
    if !p.config.exists() || !p.keys.exists() {
        bail!(
            "secrets encryption is not enabled on this server (no {}); start `skiff server` with \
             --secrets-encryption (the default)",
            p.config.display()
        );
    }
    Ok(())
}

/// An HTTPS client and the server URL from the admin kubeconfig.
fn admin(kubeconfig: &Path) -> Result<(reqwest::Client, String)> {
    let cfg = skiff_client::Config::from_kubeconfig(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(ca) = &cfg.ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca)?);
    }
    if let Some((cert, key)) = &cfg.identity {
        let mut pem = cert.clone();
        pem.extend_from_slice(key);
        b = b.identity(reqwest::Identity::from_pem(&pem)?);
    }
    if let Some(t) = &cfg.token {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse()?,
        );
        b = b.default_headers(h);
    }
    Ok((b.build()?, cfg.server.trim_end_matches('/').to_string()))
}

/// What the API server says of its KMS providers (`/readyz/kms-providers`).
async fn server_health(c: &reqwest::Client, server: &str) -> String {
    match c
        .get(format!("{server}/readyz/kms-providers?verbose"))
        .send()
        .await
    {
        Ok(r) => {
            let code = r.status();
            let body = r.text().await.unwrap_or_default();
            let line = body
                .lines()
                .find(|l| l.contains("kms-provider"))
                .unwrap_or(body.trim())
                .to_string();
            if code.is_success() {
                format!("ok ({line})")
            } else {
                format!("failing ({code}): {}", body.trim())
            }
        }
        Err(e) => format!("unreachable: {e}"),
    }
}

/// Whether the API server has seen `key_id` as the plugin's current key.
async fn server_uses(c: &reqwest::Client, server: &str, key_id: &str) -> Result<bool> {
    let metrics = c
        .get(format!("{server}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let hash = key_id_hash(key_id);
    Ok(metrics.lines().any(|l| {
        l.starts_with("apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds")
            && l.contains(&format!("key_id_hash=\"{hash}\""))
    }))
}

/// `skiff secrets-encrypt status`.
pub async fn status(bin: &Path, data_dir: &Path, kubeconfig: &Path) -> Result<()> {
    let p = Paths::new(data_dir);
    if enabled(&p).is_err() {
        println!("Encryption Status: Disabled");
        return Ok(());
    }
    let (_, primary) = keys(&p)?;
    println!("Encryption Status: Enabled");
    println!("Provider: kms v2 ({PROVIDER}, {})", p.socket.display());
    println!("Primary key: {primary}");
    let keys_arg = format!("--keys-file={}", p.keys.display());
    for line in kms(bin, &["status", &keys_arg])?.lines() {
        println!("  {line}");
    }
    let (c, server) = admin(kubeconfig)?;
    println!(
        "API server KMS health: {}",
        server_health(&c, &server).await
    );
    let current = server_uses(&c, &server, &primary).await.unwrap_or(false);
    println!(
        "API server encrypts with the primary key: {}",
        if current { "yes" } else { "not yet" }
    );
    Ok(())
}

/// `skiff secrets-encrypt rotate`: a new key made primary, and the API server seen using it.
pub async fn rotate(bin: &Path, data_dir: &Path, kubeconfig: &Path) -> Result<()> {
    let p = Paths::new(data_dir);
    enabled(&p)?;
    let keys_arg = format!("--keys-file={}", p.keys.display());
    let id = kms(bin, &["rotate", &keys_arg])?.trim().to_string();
    println!("new primary key: {id}");
    let (c, server) = admin(kubeconfig)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server_uses(&c, &server, &id).await? {
        if Instant::now() > deadline {
            bail!("the API server has not picked up key {id} within 60s; see its log");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("the API server encrypts new writes with key {id}");
    println!("next: `skiff secrets-encrypt reencrypt` writes every Secret again under it");
    Ok(())
}

/// `skiff secrets-encrypt reencrypt`: every Secret written again (under the API server's
/// current key), then, with `prune`, the keys no longer primary removed from the plugin.
pub async fn reencrypt(bin: &Path, data_dir: &Path, kubeconfig: &Path, prune: bool) -> Result<()> {
    let p = Paths::new(data_dir);
    enabled(&p)?;
    let (ids, primary) = keys(&p)?;
    let (c, server) = admin(kubeconfig)?;
    if !server_uses(&c, &server, &primary).await? {
        bail!(
            "the API server does not encrypt with the primary key {primary} yet; wait a few \
             seconds (or see its log) and run this again"
        );
    }
    let list: Value = c
        .get(format!("{server}/api/v1/secrets"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let total = items.len();
    let mut done = 0;
    for item in items {
        let ns = item["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = item["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let url = format!("{server}/api/v1/namespaces/{ns}/secrets/{name}");
        let mut obj = item;
        // An unchanged object is written again when its stored value is stale; a conflict
        // means someone wrote it meanwhile (under the current key): read it and go on.
        for attempt in 0.. {
            obj["apiVersion"] = "v1".into();
            obj["kind"] = "Secret".into();
            let r = c.put(&url).json(&obj).send().await?;
            match r.status().as_u16() {
                200 | 201 | 404 => break,
                409 if attempt < 5 => {
                    obj = c.get(&url).send().await?.error_for_status()?.json().await?;
                }
                code => {
                    let body = r.text().await.unwrap_or_default();
                    bail!("re-encrypting secret {ns}/{name}: {code}: {body}");
                }
            }
        }
        done += 1;
        if done % 50 == 0 || done == total {
            println!("re-encrypted {done}/{total} secrets");
        }
    }
    if total == 0 {
        println!("no secrets to re-encrypt");
    }
    println!("every Secret is now encrypted with key {primary}");
    let old: Vec<&String> = ids.iter().filter(|i| **i != primary).collect();
    if prune {
        let keys_arg = format!("--keys-file={}", p.keys.display());
        for id in &old {
            kms(bin, &["remove-key", &keys_arg, id])?;
            println!("removed key {id}");
        }
    } else if !old.is_empty() {
        println!(
            "keys no longer used: {} (remove them with `skiff secrets-encrypt reencrypt --prune`)",
            old.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_encrypts_secrets_through_the_plugin_and_reads_plaintext() {
        let y: Value =
            serde_norway::from_str(&configuration(Path::new("/run/skiff/kms.sock"))).unwrap();
        assert_eq!(y["kind"], "EncryptionConfiguration");
        let r = &y["resources"][0];
        assert_eq!(r["resources"], serde_json::json!(["secrets"]));
        assert_eq!(r["providers"][0]["kms"]["apiVersion"], "v2");
        assert_eq!(r["providers"][0]["kms"]["name"], PROVIDER);
        assert_eq!(
            r["providers"][0]["kms"]["endpoint"],
            "unix:///run/skiff/kms.sock"
        );
        assert!(r["providers"][1]["identity"].is_object());
    }

    #[test]
    fn key_ids_hash_as_the_api_server_names_them() {
        assert_eq!(
            key_id_hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
