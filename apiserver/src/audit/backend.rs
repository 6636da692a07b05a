//! The log backend: where encoded events go (`--audit-log-path`: a rotating file, or `-` for
//! standard output) and how (`--audit-log-mode`).
//!
//! - `blocking` (kube-apiserver's default) writes each event in the request that produced it; a
//!   failed write is counted and logged, and the request goes on.
//! - `blocking-strict` is the same, except that a request whose `RequestReceived` event cannot
//!   be written is refused (500).
//! - `batch` hands events to a bounded buffer (`--audit-log-batch-buffer-size`) that a writer
//!   thread drains in batches (`--audit-log-batch-max-size`, `--audit-log-batch-max-wait`). A
//!   request never waits: when the buffer is full the event is dropped and counted in
//!   `apiserver_audit_error_total{plugin="buffered"}`. Shutdown writes what is buffered.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::rotate::{Limits, RotatingFile};
use crate::metrics::Metrics;

/// The name kube gives the log backend in `apiserver_audit_error_total`.
pub const LOG_PLUGIN: &str = "log";
/// The name kube gives the batching buffer in `apiserver_audit_error_total`.
pub const BUFFERED_PLUGIN: &str = "buffered";
/// The name kube gives the truncating step in `apiserver_audit_error_total`.
pub const TRUNCATE_PLUGIN: &str = "truncate";

/// `--audit-log-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Events buffered and written by a thread of their own.
    Batch,
    /// Events written by the request.
    #[default]
    Blocking,
    /// As blocking, and a request whose first event cannot be written fails.
    BlockingStrict,
}

impl Mode {
    /// Parses the flag as kube-apiserver spells it.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "batch" => Ok(Mode::Batch),
            "blocking" => Ok(Mode::Blocking),
            "blocking-strict" => Ok(Mode::BlockingStrict),
            other => Err(format!(
                "invalid audit log mode {other}, allowed modes are \"batch,blocking,blocking-strict\""
            )),
        }
    }
}

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Standard output (`-`).
    Stdout,
    /// A file, rotated by size.
    File(PathBuf, Limits),
}

/// The batching options (`--audit-log-batch-*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Events buffered before new ones are dropped.
    pub buffer_size: usize,
    /// Events written together at most.
    pub max_size: usize,
    /// How long a batch waits to fill up.
    pub max_wait: Duration,
}

impl Default for Batch {
    fn default() -> Self {
        // kube-apiserver's for the log backend: batching does not help a file.
        Batch {
            buffer_size: 10_000,
            max_size: 1,
            max_wait: Duration::ZERO,
        }
    }
}

/// An open output.
enum Writer {
    Stdout,
    File(RotatingFile),
    /// Lines kept in memory, for tests (holding the lock stalls the writer).
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Writer {
    fn open(d: &Destination) -> std::io::Result<Writer> {
        match d {
            Destination::Stdout => Ok(Writer::Stdout),
            Destination::File(path, limits) => {
                let mut f = RotatingFile::new(path.clone(), *limits);
                f.open()?;
                Ok(Writer::File(f))
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Writer::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Writer::File(f) => f.write_all(bytes),
            #[cfg(test)]
            Writer::Memory(m) => {
                m.lock().extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    Stop,
}

/// Errors counted and logged, at most one log line a second.
struct Errors {
    metrics: Arc<Metrics>,
    last_logged: AtomicU64,
    start: Instant,
}

impl Errors {
    fn report(&self, plugin: &str, events: u64, why: &dyn std::fmt::Display) {
        self.metrics.audit_error(plugin, events);
        let now = self.start.elapsed().as_secs() + 1;
        let last = self.last_logged.load(Ordering::Relaxed);
        if now > last
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                "Error in audit plugin '{plugin}' affecting {events} audit events: {why}"
            );
        }
    }
}

enum Inner {
    Blocking {
        writer: Mutex<Writer>,
        strict: bool,
    },
    Batch {
        sender: SyncSender<Msg>,
        thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    },
}

/// The log backend.
pub struct Backend {
    inner: Inner,
    errors: Arc<Errors>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the destination (a file must be writable now) and, in batch mode, starts the
    /// writer thread.
    pub fn open(
        dest: &Destination,
        mode: Mode,
        batch: Batch,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Backend> {
        Self::start(Writer::open(dest)?, mode, batch, metrics)
    }

    fn start(
        writer: Writer,
        mode: Mode,
        batch: Batch,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Backend> {
        let errors = Arc::new(Errors {
            metrics,
            last_logged: AtomicU64::new(0),
            start: Instant::now(),
        });
        let inner = match mode {
            Mode::Blocking | Mode::BlockingStrict => Inner::Blocking {
                writer: Mutex::new(writer),
                strict: mode == Mode::BlockingStrict,
            },
            Mode::Batch => {
                let (sender, rx) = std::sync::mpsc::sync_channel(batch.buffer_size.max(1));
                let errs = errors.clone();
                let thread = std::thread::Builder::new()
                    .name("audit-log".into())
                    .spawn(move || drain(rx, writer, batch, &errs))?;
                Inner::Batch {
                    sender,
                    thread: Mutex::new(Some(thread)),
                }
            }
        };
        Ok(Backend { inner, errors })
    }

    /// Sends one encoded event; false only when a strict backend could not write it.
    pub fn process(&self, line: Vec<u8>) -> bool {
        match &self.inner {
            Inner::Blocking { writer, strict } => match writer.lock().write_all(&line) {
                Ok(()) => true,
                Err(e) => {
                    self.errors.report(LOG_PLUGIN, 1, &e);
                    !*strict
                }
            },
            Inner::Batch { sender, .. } => {
                match sender.try_send(Msg::Line(line)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.errors
                            .report(BUFFERED_PLUGIN, 1, &"audit buffer queue blocked")
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.errors
                            .report(BUFFERED_PLUGIN, 1, &"audit backend shut down")
                    }
                }
                true
            }
        }
    }

    /// Counts and logs an event dropped before it reached the backend.
    pub fn dropped(&self, plugin: &str, why: &dyn std::fmt::Display) {
        self.errors.report(plugin, 1, why);
    }

    /// Writes what is buffered and stops the writer thread (batch mode); waits at most
    /// `within`. Events sent afterwards are dropped and counted.
    pub fn shutdown(&self, within: Duration) {
        let Inner::Batch { sender, thread } = &self.inner else {
            return;
        };
        let Some(handle) = thread.lock().take() else {
            return;
        };
        let deadline = Instant::now() + within;
        let mut stop = Msg::Stop;
        loop {
            match sender.try_send(stop) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    stop = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("audit log buffer not written out in time");
                    return;
                }
            }
        }
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            tracing::warn!("audit log buffer not written out in time");
        }
    }
}

/// The writer thread: batches of up to `max_size` events, each written at once.
fn drain(rx: Receiver<Msg>, mut writer: Writer, batch: Batch, errors: &Errors) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let first = match rx.recv() {
            Ok(Msg::Line(l)) => l,
            Ok(Msg::Stop) | Err(_) => return,
        };
        buf.clear();
        buf.extend_from_slice(&first);
        let mut n = 1u64;
        let mut stop = false;
        let deadline = Instant::now() + batch.max_wait;
        while (n as usize) < batch.max_size {
            let next = if batch.max_wait.is_zero() {
                rx.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            };
            match next {
                Ok(Msg::Line(l)) => {
                    buf.extend_from_slice(&l);
                    n += 1;
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    stop = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        if let Err(e) = writer.write_all(&buf) {
            errors.report(LOG_PLUGIN, n, &e);
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    fn lines(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn blocking_mode_writes_in_the_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let dest = Destination::File(path.clone(), Limits::default());
        let b = Backend::open(&dest, Mode::Blocking, Batch::default(), metrics()).unwrap();
        assert!(b.process(b"one\n".to_vec()));
        assert!(b.process(b"two\n".to_vec()));
        assert_eq!(lines(&path), vec!["one", "two"]);
    }

    #[test]
    fn a_failed_write_fails_only_strict_requests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let limits = Limits {
            max_size_mb: 1,
            ..Limits::default()
        };
        let too_big = vec![b'x'; 2 * 1024 * 1024];
        for (mode, ok) in [(Mode::Blocking, true), (Mode::BlockingStrict, false)] {
            let m = metrics();
            let dest = Destination::File(path.clone(), limits);
            let b = Backend::open(&dest, mode, Batch::default(), m.clone()).unwrap();
            assert_eq!(b.process(too_big.clone()), ok, "{mode:?}");
            assert!(m
                .render()
                .contains("apiserver_audit_error_total{plugin=\"log\"} 1"));
        }
    }

    #[test]
    fn a_bad_path_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let dest = Destination::File(dir.path().join("file/audit.log"), Limits::default());
        assert!(Backend::open(&dest, Mode::Batch, Batch::default(), metrics()).is_err());
    }

    #[test]
    fn batch_mode_drops_and_counts_when_full_and_flushes_on_shutdown() {
        let m = metrics();
        let out = Arc::new(Mutex::new(Vec::new()));
        let batch = Batch {
            buffer_size: 4,
            ..Batch::default()
        };
        let b = Backend::start(Writer::Memory(out.clone()), Mode::Batch, batch, m.clone()).unwrap();
        // The writer is stalled: the buffer fills, the rest is dropped, nobody waits.
        let stall = out.lock();
        let start = Instant::now();
        for i in 0..1000 {
            assert!(b.process(format!("{i}\n").into_bytes()));
        }
        assert!(start.elapsed() < Duration::from_secs(5), "never waits");
        drop(stall);
        b.shutdown(Duration::from_secs(10));
        let text = String::from_utf8(out.lock().clone()).unwrap();
        let written: Vec<&str> = text.lines().collect();
        // The buffer's 4, and maybe one the writer had taken before it stalled; the first
        // four in order.
        assert!(matches!(written.len(), 4 | 5), "{written:?}");
        assert_eq!(written[..4], ["0", "1", "2", "3"]);
        let dropped = 1000 - written.len();
        assert!(
            m.render().contains(&format!(
                "apiserver_audit_error_total{{plugin=\"buffered\"}} {dropped}"
            )),
            "{}",
            m.render()
        );
        // After shutdown nothing is written, and the drop is counted.
        b.process(b"late\n".to_vec());
        b.shutdown(Duration::from_secs(1));
        assert!(!String::from_utf8(out.lock().clone())
            .unwrap()
            .contains("late"));
        assert!(m.render().contains(&format!(
            "apiserver_audit_error_total{{plugin=\"buffered\"}} {}",
            dropped + 1
        )));
    }

    #[test]
    fn batch_mode_writes_everything_a_slow_request_rate_sends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let dest = Destination::File(path.clone(), Limits::default());
        let b = Backend::open(&dest, Mode::Batch, Batch::default(), metrics()).unwrap();
        for i in 0..50 {
            b.process(format!("{i}\n").into_bytes());
        }
        b.shutdown(Duration::from_secs(10));
        let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(lines(&path), want);
    }

    #[test]
    fn flags_parse_as_kube_spells_them() {
        assert_eq!(Mode::parse("batch"), Ok(Mode::Batch));
        assert_eq!(Mode::parse("blocking"), Ok(Mode::Blocking));
        assert_eq!(Mode::parse("blocking-strict"), Ok(Mode::BlockingStrict));
        assert_eq!(
            Mode::parse("async").unwrap_err(),
            "invalid audit log mode async, allowed modes are \"batch,blocking,blocking-strict\""
        );
    }
}
