//! Operator intent: which apps were stopped by hand, and by whom, kept in
//! `state_dir` so it survives updates and daemon restarts.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use appvisor_protocol::StoppedBy;

/// Operator intent: which apps were stopped by hand, and by whom, kept in
/// `state_dir` so it survives updates and daemon restarts.
#[derive(Debug)]
pub(super) struct Intents {
    path: PathBuf,
    stopped: Mutex<BTreeMap<String, StoppedBy>>,
}

impl Intents {
    pub(super) fn load(path: PathBuf) -> Intents {
        let stopped = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable operator-intent file");
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        };
        Intents {
            path,
            stopped: Mutex::new(stopped),
        }
    }

    pub(super) fn get(&self, app: &str) -> Option<StoppedBy> {
        self.stopped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// Records that `app` was stopped by hand (`Some`) or started (`None`).
    pub(super) fn set(&self, app: &str, stopped_by: Option<StoppedBy>) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match stopped_by {
            Some(by) => {
                stopped.insert(app.to_owned(), by);
                true
            }
            None => stopped.remove(app).is_some(),
        };
        if changed {
            if let Err(err) = write_atomically(
                &self.path,
                &serde_json::to_vec_pretty(&*stopped).unwrap_or_default(),
            ) {
                tracing::warn!(path = %self.path.display(), error = %err, "saving operator intent");
            }
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
