//! The bearer token, read from `target.token_file` and re-read when the file
//! changes (Kubernetes rotates mounted Secrets in place), so a rotated token
//! is picked up without a restart. The token is never logged.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often the file's metadata is looked at.
const RECHECK: Duration = Duration::from_secs(1);

/// A token file and its last known content.
#[derive(Debug)]
pub struct TokenSource {
    path: PathBuf,
    state: Mutex<TokenState>,
}

#[derive(Debug, Default)]
struct TokenState {
    token: Option<String>,
    /// Modification time and length when last read: a change means re-read.
    seen: Option<(SystemTime, u64)>,
    checked_at: Option<Instant>,
}

impl TokenSource {
    /// A source for this file; it is read on first use.
    pub fn new(path: PathBuf) -> TokenSource {
        TokenSource {
            path,
            state: Mutex::new(TokenState::default()),
        }
    }

    /// The current token (trimmed of surrounding white space), `None` when
    /// the file cannot be read or is empty.
    pub fn current(&self) -> Option<String> {
        // The file is looked at outside the lock, by one caller a second;
        // the others take the token as last read. That caller's look is a
        // `stat` (a read when the file changed) on a mounted Secret, which
        // Kubernetes keeps in memory: microseconds, on the thread of the
        // request that happens to be due (for updates and fetches, the
        // coordinator's task, see `delivery/coordinator/running.rs`).
        let stamp_seen = {
            let mut state = self.lock();
            let due = state.checked_at.is_none_or(|at| at.elapsed() >= RECHECK);
            if !due {
                return state.token.clone();
            }
            state.checked_at = Some(Instant::now());
            (state.seen, state.token.is_none())
        };
        let (seen, missing) = stamp_seen;
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp == seen && !missing {
            return self.lock().token.clone();
        }
        let token = std::fs::read_to_string(&self.path)
            .ok()
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty());
        tracing::info!(
            path = %self.path.display(),
            present = token.is_some(),
            "Read the Target token file."
        );
        let mut state = self.lock();
        state.seen = stamp;
        state.token = token;
        state.token.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TokenState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forces a re-read on the next use (after Target refused the token).
    pub fn invalidate(&self) {
        let mut state = self.lock();
        state.checked_at = None;
        state.seen = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_trimmed_and_a_replaced_file_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  first\n").unwrap();
        let source = TokenSource::new(path.clone());
        assert_eq!(source.current().as_deref(), Some("first"));
        // Replace the file the way a Secret volume does: a new file renamed over.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "second-token\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        source.invalidate();
        assert_eq!(source.current().as_deref(), Some("second-token"));
    }

    #[test]
    fn a_missing_or_blank_file_means_no_token() {
        let dir = tempfile::tempdir().unwrap();
        let source = TokenSource::new(dir.path().join("absent"));
        assert_eq!(source.current(), None);
        let path = dir.path().join("blank");
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(TokenSource::new(path).current(), None);
    }
}
