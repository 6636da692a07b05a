//! The audit log file with size-based rotation, as kube-apiserver's (lumberjack) rotates it:
//! before a write would take the file past `--audit-log-maxsize` megabytes it is renamed to
//! `NAME-2006-01-02T15-04-05.000.EXT` (the time of rotation, UTC) and a new file is started;
//! then backups beyond `--audit-log-maxbackup`, or older than `--audit-log-maxage` days by the
//! time in their names, are removed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};

/// lumberjack's size when none is given: 100 MB.
const DEFAULT_MAX_MB: u64 = 100;
const STAMP: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// When to rotate and what to keep.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Megabytes before rotation (0: 100).
    pub max_size_mb: u64,
    /// Backups kept (0: all).
    pub max_backups: usize,
    /// Days backups are kept (0: forever).
    pub max_age_days: u64,
}

/// A log file that rotates itself.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    limits: Limits,
    file: Option<File>,
    size: u64,
}

impl RotatingFile {
    /// A writer for `path`; the file is opened (or created, mode 0600) on first write.
    pub fn new(path: PathBuf, limits: Limits) -> Self {
        RotatingFile {
            path,
            limits,
            file: None,
            size: 0,
        }
    }

    /// Checks that the file can be opened for appending (at start, to refuse a bad path).
    pub fn open(&mut self) -> std::io::Result<()> {
        self.open_existing_or_new(0)
    }

    fn max(&self) -> u64 {
        let mb = if self.limits.max_size_mb == 0 {
            DEFAULT_MAX_MB
        } else {
            self.limits.max_size_mb
        };
        mb * 1024 * 1024
    }

    fn open_existing_or_new(&mut self, write_len: u64) -> std::io::Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.open_new(),
            Err(e) => return Err(e),
        };
        if meta.len() + write_len >= self.max() {
            return self.rotate();
        }
        match OpenOptions::new().append(true).open(&self.path) {
            Ok(f) => {
                self.file = Some(f);
                self.size = meta.len();
                Ok(())
            }
            // An existing file we cannot append to is set aside rather than given up on.
            Err(_) => self.open_new(),
        }
    }

    /// Moves the current file aside (if any) and starts a new one.
    fn open_new(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        if self.path.exists() {
            std::fs::rename(&self.path, backup_name(&self.path, Utc::now()))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&self.path)?;
        self.file = Some(f);
        self.size = 0;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        self.open_new()?;
        self.remove_old();
        Ok(())
    }

    /// Removes backups beyond the count and age limits; failures are only logged.
    fn remove_old(&self) {
        if self.limits.max_backups == 0 && self.limits.max_age_days == 0 {
            return;
        }
        let mut backups = backups(&self.path);
        // Newest first.
        backups.sort_by_key(|b| std::cmp::Reverse(b.1));
        let mut remove = Vec::new();
        if self.limits.max_backups > 0 && backups.len() > self.limits.max_backups {
            remove.extend(backups.split_off(self.limits.max_backups));
        }
        if self.limits.max_age_days > 0 {
            let days = i64::try_from(self.limits.max_age_days).unwrap_or(i64::MAX / 86_400);
            let cutoff = Utc::now() - chrono::Duration::days(days.min(365_000));
            let (old, _): (Vec<_>, Vec<_>) = backups.into_iter().partition(|b| b.1 < cutoff);
            remove.extend(old);
        }
        for (p, _) in remove {
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "removing an old audit log");
            }
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, p: &[u8]) -> std::io::Result<usize> {
        let len = p.len() as u64;
        if len > self.max() {
            return Err(std::io::Error::other(format!(
                "write length {len} exceeds maximum file size {}",
                self.max()
            )));
        }
        if self.file.is_none() {
            self.open_existing_or_new(len)?;
        }
        if self.size + len > self.max() {
            self.rotate()?;
        }
        let f = self.file.as_mut().expect("opened above");
        let n = f.write(p)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// `dir/NAME-STAMP.EXT` for `dir/NAME.EXT`.
pub fn backup_name(path: &Path, at: DateTime<Utc>) -> PathBuf {
    let (prefix, ext) = name_parts(path);
    let name = format!("{prefix}-{}{ext}", at.format(STAMP));
    path.with_file_name(name)
}

/// The name without its extension, and the extension with its dot (`audit`, `.log`).
fn name_parts(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) if i > 0 => (name[..i].to_string(), name[i..].to_string()),
        _ => (name, String::new()),
    }
}

/// The backups of `path` beside it, with the times in their names.
pub fn backups(path: &Path) -> Vec<(PathBuf, DateTime<Utc>)> {
    let (prefix, ext) = name_parts(path);
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stamp) = name
            .strip_prefix(&format!("{prefix}-"))
            .and_then(|r| r.strip_suffix(ext.as_str()))
        else {
            continue;
        };
        if let Ok(t) = NaiveDateTime::parse_from_str(stamp, STAMP) {
            out.push((e.path(), t.and_utc()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backups_are_named_as_lumberjack_names_them() {
        let t =
            Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(67);
        assert_eq!(
            backup_name(Path::new("/var/log/audit.log"), t),
            PathBuf::from("/var/log/audit-2025-01-02T03-04-05.067.log")
        );
        assert_eq!(
            backup_name(Path::new("audit"), t),
            PathBuf::from("audit-2025-01-02T03-04-05.067")
        );
        assert_eq!(
            backup_name(Path::new("/x/a.b.json"), t),
            PathBuf::from("/x/a.b-2025-01-02T03-04-05.067.json")
        );
    }

    #[test]
    fn a_full_file_is_rotated_and_old_backups_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        // Two stale backups: one beyond the age limit, one beyond the count.
        let old = backup_name(&path, Utc::now() - chrono::Duration::days(40));
        std::fs::write(&old, "old\n").unwrap();
        let older = backup_name(&path, Utc::now() - chrono::Duration::days(50));
        std::fs::write(&older, "older\n").unwrap();
        std::fs::write(dir.path().join("unrelated.log"), "x").unwrap();

        let mut f = RotatingFile::new(
            path.clone(),
            Limits {
                max_size_mb: 1,
                max_backups: 2,
                max_age_days: 30,
            },
        );
        let line = vec![b'x'; 1023];
        let mut line = line;
        line.push(b'\n');
        // 1 MiB exactly fits; the next line starts a new file.
        for _ in 0..1024 {
            f.write_all(&line).unwrap();
        }
        assert!(backups(&path).len() == 2, "no rotation yet");
        f.write_all(b"next\n").unwrap();
        let kept = backups(&path);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(std::fs::metadata(&kept[0].0).unwrap().len(), 1024 * 1024);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "next\n");
        assert!(dir.path().join("unrelated.log").exists());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // One line larger than the limit is refused, not written.
        let huge = vec![b'y'; 1024 * 1024 + 1];
        assert!(f.write(&huge).is_err());
    }

    #[test]
    fn an_existing_file_is_appended_to() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let mut f = RotatingFile::new(path.clone(), Limits::default());
        f.open().unwrap();
        f.write_all(b"one\n").unwrap();
        drop(f);
        let mut f = RotatingFile::new(path.clone(), Limits::default());
        f.write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        assert!(backups(&path).is_empty());
    }
}
