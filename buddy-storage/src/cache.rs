//! The session rows a store last read or wrote, so that a commit can merge into its copy and
//! write in one statement that applies only if the row is still exactly that copy (see the
//! SQLite writer and the Postgres commit).

use std::collections::HashMap;

use buddy_core::session::{Session, SessionKey};

use crate::codec::{EncodedSession, Text};

/// The columns of a row as last seen that a one-statement commit compares, as stored, in the
/// order the statements bind them.
pub(crate) struct Compared {
    /// `version`, `created_at`, `updated_at`, `run_count`.
    pub numbers: [i64; 4],
    /// `component_id`, `user_id`, `session_name`, then the JSON `component_data`,
    /// `session_state` and `extra_data`.
    pub texts: [Option<String>; 6],
}

/// The most session rows a cache holds, and the most bytes of JSON they may hold; past
/// either, it forgets them all (and reads them again when they are next written).
const CACHE_ROWS: usize = 4096;
const CACHE_BYTES: usize = 32 << 20;

/// What the writer last saw of a session row.
pub(crate) enum Seen {
    /// No row.
    Absent,
    Row(Box<SeenRow>),
}

pub(crate) struct SeenRow {
    /// The row decoded (without runs).
    pub session: Session,
    /// Its JSON columns exactly as stored.
    pub stored: EncodedSession,
}

impl Seen {
    /// The session a commit merges into (`None`: there was no row) and, for a row, the
    /// columns to compare; text columns as `text` stores them.
    pub fn split(self, text: Text) -> (Option<Session>, Option<Compared>) {
        let Seen::Row(row) = self else {
            return (None, None);
        };
        let SeenRow { session, stored } = *row;
        let compared = Compared {
            numbers: [
                session.version,
                session.created_at,
                session.updated_at,
                session.run_count,
            ],
            texts: [
                text.store_opt(session.component_id.as_deref()),
                text.store_opt(session.user_id.as_deref()),
                text.store_opt(session.session_name.as_deref()),
                Some(stored.component_data),
                Some(stored.session_state),
                stored.extra_data,
            ],
        };
        (Some(session), Some(compared))
    }

    pub fn row(session: &Session, stored: EncodedSession) -> Self {
        let mut session = session.clone();
        session.runs = Vec::new();
        Seen::Row(Box::new(SeenRow { session, stored }))
    }

    /// About how many bytes the row holds (its JSON twice: as text and decoded).
    fn bytes(&self) -> usize {
        match self {
            Seen::Absent => 0,
            Seen::Row(row) => {
                let stored = &row.stored;
                2 * (stored.component_data.len()
                    + stored.session_state.len()
                    + stored.extra_data.as_ref().map_or(0, String::len))
            }
        }
    }
}

/// The session rows the writer last read or wrote, by key: bounded in rows and bytes.
#[derive(Default)]
pub(crate) struct Cache {
    rows: HashMap<SessionKey, Seen>,
    bytes: usize,
}

impl Cache {
    pub fn take(&mut self, key: &SessionKey) -> Option<Seen> {
        let seen = self.rows.remove(key)?;
        self.bytes -= seen.bytes();
        Some(seen)
    }

    pub fn remember(&mut self, key: SessionKey, seen: Seen) {
        let bytes = seen.bytes();
        if bytes > CACHE_BYTES / 16 {
            self.forget(&key);
            return;
        }
        if self.rows.len() >= CACHE_ROWS || self.bytes + bytes > CACHE_BYTES {
            self.rows.clear();
            self.bytes = 0;
        }
        self.bytes += bytes;
        if let Some(old) = self.rows.insert(key, seen) {
            self.bytes -= old.bytes();
        }
    }

    pub fn forget(&mut self, key: &SessionKey) {
        if let Some(seen) = self.rows.remove(key) {
            self.bytes -= seen.bytes();
        }
    }

    /// Forgets `key` and every session stored under it (what deleting `key` deletes).
    pub fn forget_covered(&mut self, key: &SessionKey) {
        let mut freed = 0;
        self.rows.retain(|stored, seen| {
            let keep = !key.covers(stored);
            if !keep {
                freed += seen.bytes();
            }
            keep
        });
        self.bytes -= freed;
    }
}
