//! The processes `skiff server` runs: each started with its log in a file of its own, watched,
//! and stopped by its process id — SIGTERM, then SIGKILL after a grace period — in the
//! reverse order of their start.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One child process.
pub struct Process {
    /// Its name (and the stem of its log file).
    pub name: String,
    child: Child,
    /// Its log.
    pub log: PathBuf,
}

impl Process {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The children, in the order they were started.
#[derive(Default)]
pub struct Supervisor {
    children: Vec<Process>,
}

impl Supervisor {
    /// Starts `cmd` as `name`, its output appended to `log_dir/NAME.log`.
    pub fn start(&mut self, name: &str, cmd: &mut Command, log_dir: &Path) -> Result<u32> {
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        let pid = child.id();
        tracing::info!(name, pid, log = %log.display(), "started");
        self.children.push(Process {
            name: name.to_string(),
            child,
            log,
        });
        Ok(pid)
    }

    /// The first child that has exited, with how.
    pub fn exited(&mut self) -> Option<(String, String)> {
        for p in &mut self.children {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some((p.name.clone(), status.to_string()));
            }
        }
        None
    }

    /// Waits until `ok` says yes, for at most `within`; fails at once, with its log, when a
    /// child exits meanwhile.
    pub fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        mut ok: impl FnMut() -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        while !ok() {
            if let Some((name, status)) = self.exited() {
                bail!(
                    "{name} exited ({status}) while waiting for {what}:\n{}",
                    self.log_tail(&name)
                );
            }
            if Instant::now() > deadline {
                bail!("{what} did not happen within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Runs until `stop` says so; fails, with its log, when a child exits meanwhile.
    pub fn watch_until(&mut self, stop: &dyn Fn() -> bool) -> Result<()> {
        while !stop() {
            if let Some((name, status)) = self.exited() {
                bail!("{name} exited ({status}):\n{}", self.log_tail(&name));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The last lines of `name`'s log.
    pub fn log_tail(&self, name: &str) -> String {
        let Some(p) = self.children.iter().find(|p| p.name == name) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops `name` (SIGTERM, then SIGKILL after `grace`), if it runs.
    pub fn stop(&mut self, name: &str, grace: Duration) {
        if let Some(i) = self.children.iter().position(|p| p.name == name) {
            let p = self.children.remove(i);
            stop(p, grace);
        }
    }

    /// Stops every child, the last started first.
    pub fn stop_all(&mut self, grace: Duration) {
        while let Some(p) = self.children.pop() {
            stop(p, grace);
        }
    }
}

fn stop(mut p: Process, grace: Duration) {
    let pid = Pid::from_raw(p.child.id() as i32);
    if let Ok(None) = p.child.try_wait() {
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Ok(None) = p.child.try_wait() {
            tracing::warn!(name = p.name, "did not stop in time; killing it");
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    let _ = p.child.wait();
    tracing::info!(name = p.name, "stopped");
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(10));
    }
}
