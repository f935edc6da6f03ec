use std::sync::Arc;

/// What a workflow hands its members before every run.
#[derive(Clone, Copy, Debug)]
pub struct MemberContext<'a> {
    /// The workflow's session id.
    pub session_id: &'a str,
    /// The workflow's user id.
    pub user_id: Option<&'a str>,
    /// The workflow's id.
    pub workflow_id: Option<&'a str>,
    /// Whether the workflow runs in debug mode.
    pub debug_mode: bool,
}

/// A component a workflow orchestrates: an agent, a team or a nested workflow.
///
/// `#[workflow]` registers every field marked `#[member]` (and every field whose type is
/// named `Agent` or `Team`) and calls [`attach`](Member::attach) on each before every run,
/// so members share the workflow's session and user.
///
/// ```
/// use buddy_core::workflow::{Member, MemberContext};
///
/// #[derive(Default)]
/// struct Counter { session: Option<String> }
///
/// impl Member for Counter {
///     fn attach(&mut self, context: &MemberContext<'_>) {
///         self.session = Some(context.session_id.to_owned());
///     }
/// }
///
/// let mut counter = Counter::default();
/// counter.attach(&MemberContext { session_id: "s1", user_id: None, workflow_id: None, debug_mode: false });
/// assert_eq!(counter.session.as_deref(), Some("s1"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow member",
    label = "registered as a member here",
    note = "members are agents, teams and workflows; implement `buddy::Member` for `{Self}`, or remove `#[member]`"
)]
pub trait Member: Send {
    /// Receives the workflow's session id and user id before a run.
    fn attach(&mut self, context: &MemberContext<'_>);
}

impl<T: Member> Member for Option<T> {
    fn attach(&mut self, context: &MemberContext<'_>) {
        if let Some(member) = self {
            member.attach(context);
        }
    }
}

impl<T: Member> Member for Vec<T> {
    fn attach(&mut self, context: &MemberContext<'_>) {
        for member in self {
            member.attach(context);
        }
    }
}

impl<T: Member + ?Sized> Member for Box<T> {
    fn attach(&mut self, context: &MemberContext<'_>) {
        (**self).attach(context);
    }
}

impl<T: Member + Clone + Sync> Member for Arc<T> {
    /// Attaches to the shared member, cloning it first if other handles exist.
    fn attach(&mut self, context: &MemberContext<'_>) {
        Arc::make_mut(self).attach(context);
    }
}
