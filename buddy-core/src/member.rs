//! The member protocol: what a run hands the components it orchestrates (agents, teams,
//! nested workflows) before they run.
//!
//! It lives here, below the three orchestrators, because all of them use it: a workflow
//! attaches its fields, a team attaches its members.

use std::sync::Arc;

/// What a run hands a member before the member runs: the session, the user, debug mode, and
/// where the member sits (its member path).
///
/// The path names the member from the top-level run down: the field names of a workflow,
/// the member ids of a team (`["writers", "critic"]`). It is the member's scope in stored
/// sessions ([`SessionKey::scope`](crate::session::SessionKey)) and it is stamped on every
/// event the member emits ([`RunEvent::member_path`](crate::run::RunEvent::member_path)).
///
/// ```
/// # extern crate buddy_core as buddy;
/// use buddy::member::{Member, MemberContext};
///
/// #[derive(Default)]
/// struct Counter { session: Option<String>, scope: String }
///
/// impl Member for Counter {
///     fn attach(&mut self, context: &MemberContext) {
///         self.session = Some(context.session_id.clone());
///         self.scope = context.scope();
///     }
/// }
///
/// let workflow = MemberContext::new("s1");
/// let mut counter = Counter::default();
/// counter.attach(&workflow.member("counter"));
/// assert_eq!(counter.session.as_deref(), Some("s1"));
/// assert_eq!(counter.scope, "counter");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberContext {
    /// The session the member runs in (its parent's).
    pub session_id: String,
    /// The user the parent runs for; a member without one adopts it, and loses one it had
    /// when the parent has none.
    pub user_id: Option<String>,
    /// The id of the workflow the member belongs to, if any.
    pub workflow_id: Option<String>,
    /// Whether the parent runs in debug mode (it reaches members at every depth).
    pub debug_mode: bool,
    /// The member path of the component receiving this context (empty for a top-level
    /// component).
    pub path: Vec<String>,
}

impl MemberContext {
    /// The context of a top-level component running in `session_id`.
    pub fn new(session_id: impl Into<String>) -> Self {
        MemberContext {
            session_id: session_id.into(),
            ..MemberContext::default()
        }
    }

    /// The same context for user `user_id`.
    pub fn user_id(mut self, user_id: Option<String>) -> Self {
        self.user_id = user_id;
        self
    }

    /// The same context inside workflow `workflow_id`.
    pub fn workflow_id(mut self, workflow_id: Option<String>) -> Self {
        self.workflow_id = workflow_id;
        self
    }

    /// The same context with debug mode on or off.
    pub fn debug_mode(mut self, debug_mode: bool) -> Self {
        self.debug_mode = debug_mode;
        self
    }

    /// The same context at member path `path`.
    pub fn path(mut self, path: Vec<String>) -> Self {
        self.path = path;
        self
    }

    /// The context for this component's member `name` (one level down).
    pub fn member(&self, name: &str) -> MemberContext {
        let mut child = self.clone();
        child.path.push(name.to_owned());
        child
    }

    /// The member path joined with `/` (`""` at the top): the member's session scope.
    pub fn scope(&self) -> String {
        self.path.join("/")
    }
}

/// A component a run orchestrates: an agent, a team or a nested workflow.
///
/// `#[workflow]` registers every field marked `#[member]` (and every field whose type is
/// named `Agent` or `Team`) and calls [`attach`](Member::attach) on each before every run,
/// with the context of that field ([`MemberContext::member`] with the field's name), so
/// members share the workflow's session and user. A team does the same for its members.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow member",
    label = "registered as a member here",
    note = "members are agents, teams and workflows; implement `buddy::Member` for `{Self}`, or remove `#[member]`"
)]
pub trait Member: Send {
    /// Receives the parent's session, user, debug mode and this member's path before a run.
    fn attach(&mut self, context: &MemberContext);
}

impl<T: Member> Member for Option<T> {
    fn attach(&mut self, context: &MemberContext) {
        if let Some(member) = self {
            member.attach(context);
        }
    }
}

impl<T: Member> Member for Vec<T> {
    /// Attaches every element, at the path of the field followed by its index.
    fn attach(&mut self, context: &MemberContext) {
        for (index, member) in self.iter_mut().enumerate() {
            member.attach(&context.member(&index.to_string()));
        }
    }
}

impl<T: Member + ?Sized> Member for Box<T> {
    fn attach(&mut self, context: &MemberContext) {
        (**self).attach(context);
    }
}

impl<T: Member + Clone + Sync> Member for Arc<T> {
    /// Attaches to the shared member, cloning it first if other handles exist.
    fn attach(&mut self, context: &MemberContext) {
        Arc::make_mut(self).attach(context);
    }
}

/// What an agent or a team holds of the run that attached it: session, user, debug mode and
/// member path (one copy of the rule for both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attachment {
    pub(crate) session_id: Option<Arc<str>>,
    pub(crate) user_id: Option<Arc<str>>,
    pub(crate) debug_mode: bool,
    pub(crate) path: Vec<String>,
}

impl Attachment {
    /// Takes the parent's session, user and debug mode, and this member's path.
    pub(crate) fn attach(&mut self, context: &MemberContext) {
        self.debug_mode |= context.debug_mode;
        if self.session_id.as_deref() != Some(context.session_id.as_str()) {
            self.session_id = Some(Arc::from(context.session_id.as_str()));
        }
        if self.user_id.as_deref() != context.user_id.as_deref() {
            self.user_id = context.user_id.as_deref().map(Arc::from);
        }
        if self.path != context.path {
            self.path.clone_from(&context.path);
        }
    }

    /// Whether debug output is on (here, or with `BUDDY_DEBUG=true`).
    pub(crate) fn debug(&self) -> bool {
        self.debug_mode || crate::debug::env_debug()
    }

    /// The session to run in: the attached one, or `default` (made once, on first use).
    pub(crate) fn session_id<'a>(&'a self, default: &'a std::sync::OnceLock<String>) -> &'a str {
        match &self.session_id {
            Some(id) => id,
            None => default.get_or_init(|| uuid::Uuid::new_v4().to_string()),
        }
    }

    /// The name of this member's entries in a durable run's journal: its field or member
    /// id (the last segment of its path), else its own name, else `default` — never its id,
    /// which may be made up anew in every process.
    pub(crate) fn journal_name(&self, name: Option<&str>, default: &str) -> String {
        self.path
            .last()
            .map(String::as_str)
            .or(name)
            .unwrap_or(default)
            .to_owned()
    }

    /// The user, owned.
    pub(crate) fn user(&self) -> Option<String> {
        self.user_id.as_deref().map(str::to_owned)
    }
}

/// Attaches the member in field `field` of a workflow, with the context one level down
/// (what `#[workflow]` generates for each member field).
#[doc(hidden)]
pub fn attach_member<M: Member + ?Sized>(
    member: &mut M,
    context: &MemberContext,
    field: &'static str,
) {
    member.attach(&context.member(field));
}
