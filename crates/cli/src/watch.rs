//! Watching manifest files for changes, by polling: cheap at these sizes and needs no inotify.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the files are looked at.
pub const PERIOD: Duration = Duration::from_millis(25);

/// Modification times and sizes of every file under the paths: a change shows in it.
pub fn fingerprint(paths: &[PathBuf]) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    fn walk(path: &Path, out: &mut Vec<(PathBuf, Option<SystemTime>, u64)>) {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {
                let mut entries: Vec<PathBuf> = std::fs::read_dir(path).into_iter().flatten().flatten().map(|e| e.path()).collect();
                entries.sort();
                for e in entries {
                    walk(&e, out);
                }
            }
            Ok(m) => out.push((path.to_owned(), m.modified().ok(), m.len())),
            Err(_) => out.push((path.to_owned(), None, 0)),
        }
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out);
    }
    out
}
