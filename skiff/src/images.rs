//! Images built here, with nothing pulled from anywhere: the pod sandbox (pause) image compiled
//! into this binary, example workload images from Debian's static busybox, and images of
//! Skiff's own binaries (with the shared libraries they load); each one layer, pushed to a
//! plain-HTTP registry (the cluster's local one) as an OCI image.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The pause program, compiled statically from `deploy/images/pause/pause.c` by the build.
const PAUSE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// One file of an image layer.
pub enum Entry {
    /// A directory.
    Dir(String),
    /// A regular file with its contents and mode.
    File(String, Vec<u8>, u32),
    /// A symbolic link: path, target.
    Symlink(String, String),
}

/// An image: one layer and its run configuration.
pub struct ImageSpec {
    /// The layer's files.
    pub files: Vec<Entry>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`.
    pub env: Vec<String>,
    /// `ExposedPorts`, as `80/tcp`.
    pub ports: Vec<String>,
}

/// An image's parts as a registry stores them.
struct Built {
    layer: Vec<u8>,
    config: Vec<u8>,
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

impl ImageSpec {
    fn layer(&self) -> Result<Vec<u8>> {
        let mut layer = tar::Builder::new(Vec::new());
        for e in &self.files {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            match e {
                Entry::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(if p == "tmp" { 0o1777 } else { 0o755 });
                    h.set_size(0);
                    layer.append_data(&mut h, format!("{p}/"), std::io::empty())?;
                }
                Entry::File(p, data, mode) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    layer.append_data(&mut h, p, data.as_slice())?;
                }
                Entry::Symlink(p, target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    layer.append_link(&mut h, p, target)?;
                }
            }
        }
        Ok(layer.into_inner()?)
    }

    fn build(&self) -> Result<Built> {
        let layer = self.layer()?;
        let ports: serde_json::Map<String, serde_json::Value> = self
            .ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": self.entrypoint,
                "Cmd": self.cmd,
                "Env": self.env,
                "ExposedPorts": ports,
            },
            "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        }))?;
        Ok(Built { layer, config })
    }

    /// Pushes the image to the plain-HTTP registry at `registry` (`HOST:PORT`) as
    /// `repository:tag`; returns the reference pods name it by, `HOST:PORT/repository:tag`.
    pub async fn push(&self, registry: &str, repository: &str, tag: &str) -> Result<String> {
        let Built { layer, config } = self.build()?;
        crate::install_crypto_provider();
        let client = reqwest::Client::new();
        let base = format!("http://{registry}/v2/{repository}");
        for blob in [&layer, &config] {
            upload_blob(&client, &base, blob)
                .await
                .with_context(|| format!("pushing {repository}:{tag} to {registry}"))?;
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest(&layer),
                "size": layer.len(),
            }],
        }))?;
        let resp = client
            .put(format!("{base}/manifests/{tag}"))
            .header(reqwest::header::CONTENT_TYPE, MANIFEST)
            .body(manifest)
            .send()
            .await
            .with_context(|| format!("pushing {repository}:{tag} to {registry}"))?;
        expect_status(resp, reqwest::StatusCode::CREATED, "storing the manifest").await?;
        Ok(format!("{registry}/{repository}:{tag}"))
    }
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn expect_status(
    resp: reqwest::Response,
    want: reqwest::StatusCode,
    what: &str,
) -> Result<reqwest::Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    bail!("{what}: the registry answered {status}: {}", body.trim())
}

/// Uploads one blob unless the registry has it already (a monolithic upload: POST, then PUT
/// with the digest).
async fn upload_blob(client: &reqwest::Client, base: &str, blob: &[u8]) -> Result<()> {
    let d = digest(blob);
    let head = client.head(format!("{base}/blobs/{d}")).send().await?;
    if head.status().is_success() {
        return Ok(());
    }
    let started = client.post(format!("{base}/blobs/uploads/")).send().await?;
    let started =
        expect_status(started, reqwest::StatusCode::ACCEPTED, "starting an upload").await?;
    let location = started
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the registry gave no upload location")?;
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        reqwest::Url::parse(location)?
    } else {
        reqwest::Url::parse(base)?.join(location)?
    };
    url.query_pairs_mut().append_pair("digest", &d);
    let done = client
        .put(url)
        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await?;
    expect_status(done, reqwest::StatusCode::CREATED, "uploading a layer").await?;
    Ok(())
}

fn base_dirs() -> Vec<Entry> {
    ["bin", "dev", "etc", "proc", "sys", "tmp", "var", "run"]
        .into_iter()
        .map(|d| Entry::Dir(d.into()))
        .collect()
}

/// The pod sandbox image: the pause program alone.
pub fn pause_image() -> ImageSpec {
    let mut files = base_dirs();
    files.push(Entry::File("pause".into(), PAUSE.to_vec(), 0o755));
    ImageSpec {
        files,
        entrypoint: vec!["/pause".into()],
        cmd: vec![],
        env: vec![],
        ports: vec![],
    }
}

/// Where Debian's `busybox-static` puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// A small image with Debian's static busybox and a link for each of its applets (`sh`,
/// `httpd`, `nc`, `sleep`, ...); its default command is `sh`.
pub fn busybox_image() -> Result<ImageSpec> {
    let busybox =
        std::fs::read(BUSYBOX).context("reading /bin/busybox (install Debian's busybox-static)")?;
    let list = Command::new(BUSYBOX).arg("--list").output()?;
    let mut files = base_dirs();
    files.push(Entry::File("bin/busybox".into(), busybox, 0o755));
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet != "busybox" {
            files.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
    }
    files.push(Entry::File(
        "etc/passwd".into(),
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n".to_vec(),
        0o644,
    ));
    files.push(Entry::File(
        "etc/group".into(),
        b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        0o644,
    ));
    Ok(ImageSpec {
        files,
        entrypoint: vec![],
        cmd: vec!["sh".into()],
        env: vec!["PATH=/bin".into()],
        ports: vec![],
    })
}

/// An example web server: busybox `httpd` on port 80 serving `/www`, whose page names the
/// pod that answered (`/`, through busybox's `cgi-bin/index.cgi` for directories without an
/// `index.html`; `/cgi-bin/hostname` gives the name alone).
pub fn httpd_image() -> Result<ImageSpec> {
    let mut image = busybox_image()?;
    image.files.extend(
        ["www", "www/cgi-bin"]
            .into_iter()
            .map(|d| Entry::Dir(d.into())),
    );
    let cgi = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nhostname\n";
    image.files.push(Entry::File(
        "www/cgi-bin/hostname".into(),
        cgi.as_bytes().to_vec(),
        0o755,
    ));
    image.files.push(Entry::File(
        "www/cgi-bin/index.cgi".into(),
        b"#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"Hello from Skiff: pod $(hostname)\"\n".to_vec(),
        0o755,
    ));
    image.cmd = ["httpd", "-f", "-vv", "-p", "80", "-h", "/www"]
        .map(String::from)
        .to_vec();
    image.ports = vec!["80/tcp".into()];
    Ok(image)
}

/// An image of the program at `bin` (at `/NAME`, its entrypoint) and the shared libraries it
/// loads (as `ldd` finds them on this machine).
pub fn binary_image(bin: &Path) -> Result<ImageSpec> {
    let name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} names no file", bin.display()))?;
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running ldd")?;
    let mut files = base_dirs();
    files.extend(["lib", "lib/x86_64-linux-gnu", "lib64"].map(|d| Entry::Dir(d.into())));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-... (0x...)`.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let data = std::fs::read(path).with_context(|| format!("reading {path}"))?;
        files.push(Entry::File(
            path.trim_start_matches('/').into(),
            data,
            0o755,
        ));
    }
    let data = std::fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    files.push(Entry::File(name.into(), data, 0o755));
    Ok(ImageSpec {
        files,
        entrypoint: vec![format!("/{name}")],
        cmd: vec![],
        env: vec![],
        ports: vec![],
    })
}

/// The images Skiff's clusters need, as pushed by [`push_all`].
pub struct Pushed {
    /// The pod sandbox image.
    pub pause: String,
    /// The example web server.
    pub httpd: String,
    /// Busybox.
    pub busybox: String,
    /// The cluster DNS.
    pub dns: String,
}

/// Pushes the pause, busybox, httpd and skiff-dns images (the last from `bin/skiff-dns`) to
/// `registry`: `skiff/pause:1`, `skiff/busybox:latest`, `skiff/httpd:latest`,
/// `skiff/dns:VERSION`.
pub async fn push_all(registry: &str, bin: &Path) -> Result<Pushed> {
    let pause = pause_image().push(registry, "skiff/pause", "1").await?;
    let busybox = busybox_image()?
        .push(registry, "skiff/busybox", "latest")
        .await?;
    let httpd = httpd_image()?
        .push(registry, "skiff/httpd", "latest")
        .await?;
    let dns = binary_image(&bin.join("skiff-dns"))?
        .push(registry, "skiff/dns", env!("CARGO_PKG_VERSION"))
        .await?;
    tracing::info!(
        registry,
        "pushed the pause, busybox, httpd and skiff-dns images"
    );
    Ok(Pushed {
        pause,
        httpd,
        busybox,
        dns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_program_is_a_static_executable() {
        // ELF, and no interpreter (PT_INTERP) named in it: it runs in an image of its own.
        assert_eq!(&PAUSE[..4], b"\x7fELF");
        let interp = b"/lib64/ld-linux";
        assert!(!PAUSE.windows(interp.len()).any(|w| w == interp));
    }

    #[test]
    fn layers_are_the_same_bytes_each_time() {
        let a = pause_image().build().unwrap();
        let b = pause_image().build().unwrap();
        assert_eq!(digest(&a.layer), digest(&b.layer));
        assert_eq!(digest(&a.config), digest(&b.config));
    }
}
