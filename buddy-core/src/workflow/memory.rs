use crate::run::RunRecord;

/// The runs of the current session a workflow keeps in memory.
///
/// With storage, it holds the session's most recent runs as read at the start of each run
/// (at most `history_runs`, default 20) plus the run that just finished; the full history
/// stays in storage ([`Storage::runs`](crate::storage::Storage::runs)). Without storage, it
/// holds the runs of this process, bounded the same way.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowMemory {
    session_id: Option<String>,
    runs: Vec<RunRecord>,
    capacity: usize,
}

impl Default for WorkflowMemory {
    fn default() -> Self {
        WorkflowMemory::with_capacity(20)
    }
}

impl WorkflowMemory {
    /// An empty memory keeping at most `capacity` runs.
    pub fn with_capacity(capacity: usize) -> Self {
        WorkflowMemory {
            session_id: None,
            runs: Vec::new(),
            capacity,
        }
    }

    /// The session the runs belong to.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The runs kept, oldest first.
    pub fn runs(&self) -> &[RunRecord] {
        &self.runs
    }

    /// The most recent run.
    pub fn last_run(&self) -> Option<&RunRecord> {
        self.runs.last()
    }

    /// How many runs are kept at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets all runs.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.session_id = None;
    }

    /// Adds a run, dropping the oldest beyond the capacity.
    pub fn add_run(&mut self, run: RunRecord) {
        if self.session_id.as_deref() != Some(run.session_id.as_str()) {
            self.runs.clear();
            self.session_id = Some(run.session_id.clone());
        }
        self.runs.push(run);
        self.trim();
    }

    /// Replaces the runs with those read from storage for `session_id`.
    pub(crate) fn load(&mut self, session_id: &str, runs: Vec<RunRecord>) {
        self.session_id = Some(session_id.to_owned());
        self.runs = runs;
        self.trim();
    }

    /// Keeps the runs only if they belong to `session_id`.
    pub(crate) fn keep_session(&mut self, session_id: &str) {
        if self.session_id.as_deref() != Some(session_id) {
            self.clear();
        }
    }

    fn trim(&mut self) {
        if self.runs.len() > self.capacity {
            let excess = self.runs.len() - self.capacity;
            self.runs.drain(..excess);
        }
    }
}
