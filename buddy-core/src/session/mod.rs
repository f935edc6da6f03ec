//! Sessions: the persisted record of a workflow's, an agent's or a team's conversation, and
//! the rules for merging session state.

mod record;
pub mod state;

pub use record::{Session, SessionCursor, SessionKey, SessionKind, SessionQuery, SessionWrite};
pub use state::{StateMerge, StatePatch};

/// The persisted session of a workflow (a [`Session`] of kind [`SessionKind::Workflow`]).
pub type WorkflowSession = Session;
/// The persisted session of an agent.
pub type AgentSession = Session;
/// The persisted session of a team.
pub type TeamSession = Session;
