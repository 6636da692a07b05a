//! Test support: starts and stops real processes — an etcd (Debian's `etcd-server`), a
//! `skiff-apiserver` built from this workspace — each on free loopback ports with its own
//! temporary directory, and drives them with the real `kubectl` and an HTTPS client.
//!
//! Every process is stopped when its handle drops, including when a test panics. Nothing is
//! skipped: a missing `etcd` or `kubectl`, or an unbuilt `skiff-apiserver`, fails the test
//! with a message saying what to install or build.

pub mod allinone;
pub mod bench;
pub mod compose;
pub mod hollow;
pub mod kms;
pub mod netnode;
pub mod netns;
pub mod node;
pub mod pki;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// A free TCP port on 127.0.0.1 for a server a test starts.
///
/// Ports come from below the kernel's ephemeral range (`ip_local_port_range`, from 32768
/// by default): a port the kernel hands out for `bind(:0)` or for an outgoing connection
/// can be taken again by another connection before the server binds it, which made etcd
/// fail with "address already in use". Below that range only explicit binds take ports, so
/// a process-wide counter (offset by the process ID, so test binaries run one after
/// another do not reuse each other's recent ports) plus a bind check suffices.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 15_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().clamp(LOW + 1_000, 32_768);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {high}")
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Runs `cmd`: its trimmed standard output when it succeeds, else its standard error (or why
/// it could not start).
pub fn stdout_or_stderr(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Where the workspace's binaries are (`SKIFF_BIN_DIR`, else `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("SKIFF_BIN_DIR") {
        return PathBuf::from(d);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

/// The path of a workspace binary, or a clear error if it is not built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let p = bin_dir().join(name);
    if !p.exists() {
        bail!(
            "{} is not built: run `cargo build --bins` first (scripts/test does)",
            p.display()
        );
    }
    Ok(p)
}

/// Stops a child process by its pid: SIGTERM, then SIGKILL once `grace` has passed.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A workspace daemon (`skiff-scheduler`, `skiff-controller-manager`, ...) run against a
/// cluster with its log in a temporary file; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    log: tempfile::NamedTempFile,
    /// The binary's name.
    pub name: String,
}

impl Daemon {
    /// Starts `name` with `--kubeconfig` for `api` and `args`.
    pub fn start(name: &str, api: &ApiServer, args: &[&str]) -> Result<Daemon> {
        Self::start_as(name, &api.kubeconfig, args)
    }

    /// Starts `name` with `--kubeconfig=kubeconfig` (an identity of its own) and `args`.
    pub fn start_as(name: &str, kubeconfig: &Path, args: &[&str]) -> Result<Daemon> {
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(binary(name)?)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .stdout(log.reopen()?)
            .stderr(log.reopen()?)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Daemon {
            child: Some(child),
            log,
            name: name.into(),
        })
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Its process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops it: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }

    /// Kills it at once (a crash, as far as the cluster can tell).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private etcd on loopback.
pub struct Etcd {
    child: Option<Child>,
    /// The client URL (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts an etcd with an empty data directory and waits until it is healthy.
    pub fn start() -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let mut e = Etcd {
            child: None,
            endpoint: String::new(),
            client_port: free_port(),
            peer_port: free_port(),
            dir,
        };
        e.endpoint = format!("http://127.0.0.1:{}", e.client_port);
        e.spawn()?;
        Ok(e)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.dir.path().join("etcd.log"))?;
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args([
                "--name=test",
                &format!("--data-dir={}", self.dir.path().join("data").display()),
                &format!("--listen-client-urls={}", self.endpoint),
                &format!("--advertise-client-urls={}", self.endpoint),
                &format!("--listen-peer-urls={peer}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--initial-cluster=test={peer}"),
                "--log-level=error",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting etcd (install Debian's etcd-server; scripts/test does)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get_plain(self.client_port, "/health").is_ok_and(|b| b.contains("true")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy; log: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The etcd log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(5));
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1.0 GET to a loopback port (for etcd's /health).
fn http_get_plain(port: u16, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A `skiff-apiserver` process.
pub struct ApiServer {
    child: Option<Child>,
    /// The HTTPS port.
    pub port: u16,
    /// The data directory (certificates, kubeconfig).
    pub data_dir: PathBuf,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    etcd: String,
    extra: Vec<String>,
    log: PathBuf,
    _tmp: Option<Arc<tempfile::TempDir>>,
}

impl ApiServer {
    /// Starts an API server on `etcd` with a fresh data directory and waits until ready.
    pub async fn start(etcd: &Etcd) -> Result<ApiServer> {
        Self::start_with(etcd, &[]).await
    }

    /// Starts with extra flags.
    pub async fn start_with(etcd: &Etcd, extra: &[&str]) -> Result<ApiServer> {
        let tmp = Arc::new(tempfile::tempdir()?);
        let mut s = ApiServer {
            child: None,
            port: free_port(),
            data_dir: tmp.path().join("data"),
            kubeconfig: tmp.path().join("data/admin.kubeconfig"),
            etcd: etcd.endpoint.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: tmp.path().join("apiserver.log"),
            _tmp: Some(tmp),
        };
        s.spawn()?;
        s.wait_ready(Duration::from_secs(30)).await?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // As in Kubernetes' own integration tests, the ServiceAccount admission is off unless a
        // test names it: most tests run no controller manager to make the `default`
        // ServiceAccount every pod needs.
        let service_accounts = if self.extra.iter().any(|a| a.contains("ServiceAccount")) {
            None
        } else {
            Some("--disable-admission-plugins=ServiceAccount")
        };
        let child = Command::new(binary("skiff-apiserver")?)
            .arg(format!("--etcd-servers={}", self.etcd))
            .arg(format!("--secure-port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg("--shutdown-delay=5s")
            .args(service_accounts)
            .args(&self.extra)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    bail!("skiff-apiserver exited with {status}; log:\n{}", self.log());
                }
            }
            if self.kubeconfig.exists() {
                if let Ok(client) = self.client() {
                    if let Ok(r) = client.get(self.url("/readyz")).send().await {
                        if r.status() == 200 {
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "skiff-apiserver not ready in {within:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `https://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut c = self.child.take().ok_or_else(|| anyhow!("not running"))?;
        kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("skiff-apiserver did not exit within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again (same port, data and etcd).
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.terminate()?;
        }
        self.spawn()?;
        self.wait_ready(Duration::from_secs(30)).await
    }

    /// An HTTPS client with the admin client certificate.
    pub fn client(&self) -> Result<reqwest::Client> {
        client_from_kubeconfig(&self.kubeconfig, true)
    }

    /// The server's Prometheus `/metrics` text, read as the admin.
    pub async fn metrics(&self) -> Result<String> {
        let resp = self.client()?.get(self.url("/metrics")).send().await?;
        Ok(resp.error_for_status()?.text().await?)
    }

    /// An HTTPS client that trusts the cluster CA but presents no credentials.
    pub fn anonymous_client(&self) -> Result<reqwest::Client> {
        client_from_kubeconfig(&self.kubeconfig, false)
    }

    /// kubectl against this server.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c, Duration::from_secs(10));
        }
    }
}

fn b64(s: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    Ok(base64::engine::general_purpose::STANDARD.decode(s.trim())?)
}

/// An HTTPS client built from a kubeconfig: the cluster CA, and (if `with_cert`) the user's
/// client certificate.
pub fn client_from_kubeconfig(path: &Path, with_cert: bool) -> Result<reqwest::Client> {
    let mut cfg = tls_from_kubeconfig(path, with_cert)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .build()?)
}

/// The TLS client configuration of a kubeconfig: the cluster CA, and (if `with_cert`) the
/// user's client certificate; no ALPN protocols (HTTP/1.1, as upgrades need).
pub fn tls_from_kubeconfig(path: &Path, with_cert: bool) -> Result<rustls::ClientConfig> {
    let kc = skiff_rules::Kubeconfig::from_yaml(&std::fs::read_to_string(path)?)?;
    let current = kc.current()?;
    let ca = b64(current
        .cluster
        .certificate_authority_data
        .as_deref()
        .unwrap_or(""))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(c?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let cfg = if with_cert {
        let cert = b64(current
            .user
            .client_certificate_data
            .as_deref()
            .unwrap_or(""))?;
        let key = b64(current.user.client_key_data.as_deref().unwrap_or(""))?;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()?;
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)?;
        builder.with_client_auth_cert(certs, key)?
    } else {
        builder.with_no_client_auth()
    };
    Ok(cfg)
}

/// The real kubectl, pointed at one kubeconfig, with its own discovery cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: tempfile::TempDir,
}

/// What a kubectl run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Kubectl {
    /// kubectl for a kubeconfig.
    pub fn new(kubeconfig: &Path) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.to_path_buf(),
            cache: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
        let mut c = Command::new(bin);
        c.env("KUBECONFIG", &self.kubeconfig)
            .arg(format!("--cache-dir={}", self.cache.path().display()))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Runs kubectl with `stdin` as input.
    pub fn run_with_input(&self, args: &[&str], stdin: &str) -> Run {
        self.run_input_env(args, stdin, &[])
    }

    /// Runs kubectl with `stdin` as input and environment overrides.
    pub fn run_input_env(&self, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .expect("kubectl runs (it is installed on the machine)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        to_run(child.wait_with_output().expect("kubectl finishes"))
    }

    /// Runs kubectl with environment overrides.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        to_run(
            c.output()
                .expect("kubectl runs (it is installed on the machine)"),
        )
    }

    /// Runs kubectl.
    pub fn run(&self, args: &[&str]) -> Run {
        to_run(
            self.command(args)
                .output()
                .expect("kubectl runs (it is installed on the machine)"),
        )
    }

    /// Runs kubectl and returns stdout; panics with stderr if it failed.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(args, self.run(args))
    }

    /// Runs kubectl with input and returns stdout; panics with stderr if it failed.
    pub fn ok_input(&self, args: &[&str], stdin: &str) -> String {
        succeeded(args, self.run_with_input(args, stdin))
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(
            !r.status.success(),
            "kubectl {} should have failed but printed:\n{}",
            args.join(" "),
            r.stdout
        );
        r.stderr
    }

    /// Runs kubectl with `-o json` and parses the output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }

    /// `kubectl get WHAT -o json`, parsed; `None` when kubectl fails (not found, say).
    pub fn get_opt(&self, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let r = self.run(&args);
        r.status
            .success()
            .then(|| serde_json::from_str(&r.stdout).ok())?
    }

    /// Polls `kubectl get WHAT -o json` until `f` holds for what it prints, within `within`:
    /// that JSON, or the last JSON seen when time ran out.
    pub async fn get_until(
        &self,
        within: Duration,
        what: &[&str],
        f: impl Fn(&Value) -> bool,
    ) -> Result<Value, Value> {
        let mut last = Value::Null;
        let got = eventually(within, || {
            last = self.get_opt(what)?;
            f(&last).then(|| last.clone())
        })
        .await;
        got.ok_or(last)
    }

    /// Starts kubectl with stdin, stdout and stderr piped, for interactive sessions.
    pub fn spawn_interactive(&self, args: &[&str]) -> Child {
        self.spawn_interactive_env(args, &[])
    }

    /// [`Kubectl::spawn_interactive`] with environment overrides.
    pub fn spawn_interactive_env(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().expect("kubectl runs")
    }

    /// Spawns a long-running kubectl (e.g. `get -w`) with piped output.
    pub fn spawn(&self, args: &[&str]) -> Child {
        let mut c = self.command(args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.spawn().expect("kubectl runs")
    }
}

fn succeeded(args: &[&str], r: Run) -> String {
    assert!(
        r.status.success(),
        "kubectl {} failed:\n{}\n{}",
        args.join(" "),
        r.stderr,
        r.stdout
    );
    r.stdout
}

fn to_run(o: Output) -> Run {
    Run {
        status: o.status,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Polls `f` until it returns Some, for up to `within`.
pub async fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Retries `f` every 250 ms until it gives a value; after `within`, panics with `what`, the
/// last error and `context()` (logs, say).
pub fn eventually_ok<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> std::result::Result<T, String>,
    context: impl Fn() -> String,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("{what} within {within:?}; last: {e}\n{}", context())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Sends a request with an optional JSON body and returns the status code and the body (as
/// JSON, or as a JSON string when it is not JSON).
pub async fn send(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, url);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.expect("request sent");
    let code = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A virtualenv with the official Kubernetes Python client from PyPI, made once per build
/// directory: the path of its `python`.
pub fn kubernetes_venv() -> PathBuf {
    let dir = bin_dir().join("python-kubernetes");
    let python = dir.join("bin/python");
    let ready = |p: &Path| {
        Command::new(p)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if python.exists() && ready(&python) {
        return python;
    }
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&dir)
        .status()
        .expect("python3 runs (Debian's python3 and python3-venv; scripts/test installs them)");
    assert!(ok.success(), "python3 -m venv failed");
    let ok = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "kubernetes",
        ])
        .status()
        .expect("the virtualenv's python runs");
    assert!(ok.success(), "pip install kubernetes failed");
    python
}

/// A running cluster for a test: etcd and one API server.
pub struct Cluster {
    /// The API server (dropped first).
    pub api: ApiServer,
    /// etcd.
    pub etcd: Etcd,
}

impl Cluster {
    /// Starts etcd and an API server.
    pub async fn start() -> Result<Cluster> {
        Self::start_with(&[]).await
    }

    /// Starts etcd and an API server with extra flags.
    pub async fn start_with(extra: &[&str]) -> Result<Cluster> {
        let etcd = Etcd::start()?;
        let api = ApiServer::start_with(&etcd, extra).await?;
        Ok(Cluster { api, etcd })
    }

    /// kubectl for the admin.
    pub fn kubectl(&self) -> Kubectl {
        self.api.kubectl()
    }
}

/// The events of a watch response, one JSON value per line, as they arrive.
pub fn watch_events(resp: reqwest::Response) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut s = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(Ok(chunk)) = s.next().await {
            buf.extend_from_slice(&chunk);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Collects up to `n` watch events, waiting at most `within` in all.
pub async fn collect_events(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    n: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) => out.push(v),
            _ => break,
        }
    }
    out
}

/// A TCP forwarder in front of a server, to break connections on purpose: [`Proxy::cut`]
/// drops every open connection; [`Proxy::refuse`] closes new ones at once until
/// [`Proxy::admit`].
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    generation: tokio::sync::watch::Sender<u64>,
    open: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards a free loopback port to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (generation, gen_rx) = tokio::sync::watch::channel(0u64);
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*open_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen_rx.clone();
                cut.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            generation,
            open,
            task,
        })
    }

    /// Drops every open connection.
    pub fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// Drops open connections and refuses new ones.
    pub fn refuse(&self) {
        self.open.send_replace(false);
        self.cut();
    }

    /// Accepts connections again.
    pub fn admit(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A ConfigMap named `name` whose data is `{"k": value}`.
pub fn configmap(name: &str, value: &str) -> k8s_openapi::api::core::v1::ConfigMap {
    k8s_openapi::api::core::v1::ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("k".to_string(), value.to_string())].into()),
        ..Default::default()
    }
}

/// The header and the row of `name` in kubectl's table output, split at whitespace.
pub fn table_row(out: &str, name: &str) -> (Vec<String>, Vec<String>) {
    let mut lines = out.lines();
    let header = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in:\n{out}"))
        .split_whitespace()
        .map(String::from)
        .collect();
    (header, row)
}

/// A small filesystem of its own for a test about free space: a tmpfs of `size` (`64m`)
/// mounted on a fresh temporary directory, unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it).
    pub fn mount(size: &str) -> Result<Tmpfs> {
        let dir = tempfile::Builder::new().prefix("tmpfs").tempdir()?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mounting a tmpfs on {}: {}",
                dir.path().display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes free for an unprivileged writer (what `statvfs` says: available blocks times
    /// the fragment size).
    pub fn available(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .expect("running stat");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|n| n.parse::<u64>().unwrap_or(0));
        it.next().unwrap_or(0) * it.next().unwrap_or(0)
    }

    /// Writes a file of `bytes` bytes at `name` (taking that much of the space).
    pub fn fill(&self, name: &str, bytes: usize) {
        std::fs::write(self.path().join(name), vec![1u8; bytes]).expect("writing into the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
