//! A `skiff-kms` plugin process for tests: its own keys file and socket in a temporary
//! directory, stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{binary, stop_child};

/// A running (or stopped) `skiff-kms`.
pub struct KmsPlugin {
    child: Option<Child>,
    /// The socket it serves on.
    pub socket: PathBuf,
    /// Its keys file.
    pub keys_file: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl KmsPlugin {
    /// Starts a plugin with a new keys file and waits until its socket answers.
    pub fn start() -> Result<KmsPlugin> {
        let dir = tempfile::tempdir()?;
        let mut k = KmsPlugin {
            child: None,
            socket: dir.path().join("kms.sock"),
            keys_file: dir.path().join("keys.json"),
            log: dir.path().join("kms.log"),
            _dir: dir,
        };
        k.spawn()?;
        Ok(k)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary("skiff-kms")?)
            .arg(format!("--listen={}", self.endpoint()))
            .arg(format!("--keys-file={}", self.keys_file.display()))
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting skiff-kms")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!("skiff-kms exited with {status}; log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("skiff-kms did not listen within 10s; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `unix:///…/kms.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Stops it with SIGTERM (it removes its socket).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Starts it again with the same keys and socket.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// What it has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The primary key's id, from the keys file.
    pub fn primary(&self) -> Result<String> {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.keys_file)?)?;
        Ok(v["primary"].as_str().unwrap_or_default().to_string())
    }

    /// Runs `skiff-kms ARGS --keys-file FILE`; its standard output.
    pub fn command(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(binary("skiff-kms")?)
            .args(args)
            .arg(format!("--keys-file={}", self.keys_file.display()))
            .output()?;
        if !out.status.success() {
            bail!(
                "skiff-kms {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for KmsPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}
