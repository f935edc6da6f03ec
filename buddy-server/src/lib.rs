//! An HTTP server for buddy workflows, agents and teams: REST and server-sent events over
//! axum, with no hand-written handler.
//!
//! ```no_run
//! # extern crate buddy_core as buddy;
//! # use buddy_server::Server;
//! # use buddy::agent::Agent;
//! # use buddy::testing::ScriptedModel;
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let calculator = Agent::new(ScriptedModel::new().text("4")).name("calculator");
//! Server::new()
//!     .agent(calculator)
//!     .api_keys_from_env("BUDDY_API_KEYS")
//!     .serve("127.0.0.1:7777")
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! Every run executes on its own task: a response only subscribes to the run's event log,
//! so a client that disconnects does not stop it (unless it asked to). The log is numbered;
//! server-sent events carry those numbers as their ids, so a client that reconnects with
//! `Last-Event-ID` gets exactly what it missed, from this process or, over a shared
//! database, another one. See `docs/serving.md` for the routes.

#![doc(test(attr(deny(warnings))))]

mod auth;
mod error;
mod hub;
mod openai;
mod openapi;
mod routes;
mod sse;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::serve::ListenerExt as _;
use buddy_core::agent::Agent;
use buddy_core::component::{Component, WorkflowComponent};
use buddy_core::storage::IntoStorage;
use buddy_core::team::Team;
use buddy_core::{MemoryStorage, RunWorkflow, SessionKind, Storage};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use auth::Caller;
pub use error::{ApiError, ApiResult};

use auth::ApiKey;
use hub::Hub;

/// The largest request body accepted by default (1 MiB).
pub const DEFAULT_BODY_LIMIT: usize = 1 << 20;

/// How long running runs may go on after shutdown starts, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Two components of one kind have the same id.
    #[error("two {kind}s have the id `{id}`; give one another with `.name(..)`")]
    DuplicateId {
        /// `workflow`, `agent` or `team`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A component's id is not a valid path segment.
    #[error(
        "the {kind} id `{id}` is not a valid identifier (letters, digits, `-`, `_`, `.`, at most 128)"
    )]
    InvalidId {
        /// `workflow`, `agent` or `team`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// The server's storage cannot keep run logs.
    #[error(
        "the server's storage cannot keep run logs; use MemoryStorage, SqliteStorage or PostgresStorage"
    )]
    Unsupported,
    /// The address could not be bound, or serving failed.
    #[error("serving failed")]
    Io(#[from] std::io::Error),
}

/// One served component and the id it is served under.
#[derive(Clone, Debug)]
pub(crate) struct Served {
    pub(crate) id: String,
    pub(crate) component: Arc<dyn Component>,
}

/// Builds and runs the server (see the [crate docs](crate)).
pub struct Server {
    storage: Option<Arc<dyn Storage>>,
    workflows: Vec<Arc<dyn Component>>,
    agents: Vec<Agent>,
    teams: Vec<Team>,
    keys: Vec<ApiKey>,
    cors: Vec<HeaderValue>,
    body_limit: usize,
    grace: Duration,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("workflows", &self.workflows.len())
            .field("agents", &self.agents.len())
            .field("teams", &self.teams.len())
            .field("api_keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("cors", &self.cors)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

impl Server {
    /// A server with nothing served, no auth, CORS off, in-memory run logs.
    pub fn new() -> Self {
        Server {
            storage: None,
            workflows: Vec::new(),
            agents: Vec::new(),
            teams: Vec::new(),
            keys: Vec::new(),
            cors: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            grace: DEFAULT_GRACE,
        }
    }

    /// The storage of run logs, and of the sessions of agents and teams that have none of
    /// their own. Without it, logs are kept in memory (lost on restart). Workflows keep
    /// their own storage (their durable runs log where they journal).
    pub fn storage(mut self, storage: impl IntoStorage) -> Self {
        self.storage = Some(storage.into_storage());
        self
    }

    /// Serves workflow `W`: `factory` makes a fresh instance for every run (and one now,
    /// for the description). Its id is the workflow id (by default the kebab-case name).
    pub fn workflow<W, F>(mut self, factory: F) -> Self
    where
        W: RunWorkflow + Sync + 'static,
        F: Fn() -> W + Send + Sync + 'static,
    {
        self.workflows
            .push(Arc::new(WorkflowComponent::from_factory(factory)));
        self
    }

    /// Serves any component (a [`WorkflowComponent`] made from a template, say).
    pub fn component(mut self, component: impl Component + 'static) -> Self {
        self.workflows.push(Arc::new(component));
        self
    }

    /// Serves `agent` (a copy per run) under its id.
    pub fn agent(mut self, agent: Agent) -> Self {
        self.agents.push(agent);
        self
    }

    /// Serves `team` (a copy per run) under its id.
    pub fn team(mut self, team: Team) -> Self {
        self.teams.push(team);
        self
    }

    /// Accepts `key` as a bearer token (any user).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.keys.push(ApiKey::new(key, None));
        self
    }

    /// Accepts `key` as a bearer token for `user_id` only: that caller sees and changes only
    /// that user's sessions and runs.
    pub fn api_key_for_user(mut self, key: impl Into<String>, user_id: impl Into<String>) -> Self {
        self.keys.push(ApiKey::new(key, Some(user_id.into())));
        self
    }

    /// Accepts the keys listed in environment variable `name` (entries separated by commas
    /// or whitespace, each `KEY` or `USER_ID:KEY`). An unset or empty variable adds none.
    pub fn api_keys_from_env(mut self, name: &str) -> Self {
        if let Ok(text) = std::env::var(name) {
            self.keys.extend(ApiKey::parse_list(&text));
        }
        self
    }

    /// Allows cross-origin requests from these origins only (exact matches such as
    /// `https://app.example.com`; no wildcard). CORS is off by default.
    pub fn cors_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.cors.extend(
            origins
                .into_iter()
                .filter_map(|origin| HeaderValue::from_str(origin.as_ref()).ok()),
        );
        self
    }

    /// The largest request body accepted (larger ones get 413); 1 MiB by default.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// How long running runs may go on after shutdown starts before they are cancelled
    /// (durable runs are only stopped, and resume later); 10 s by default.
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The routes as an axum router (to merge into an app), and the handle that shuts its
    /// runs down.
    pub fn into_parts(self) -> Result<(Router, ShutdownHandle), ServerError> {
        let storage = self
            .storage
            .clone()
            .unwrap_or_else(|| MemoryStorage::new().into_storage());
        if !storage.supports_durable() {
            return Err(ServerError::Unsupported);
        }
        let mut registry = Registry::default();
        for workflow in self.workflows {
            registry.add(workflow)?;
        }
        for agent in self.agents {
            let agent = match agent.storage_handle() {
                Some(_) => agent,
                None => agent.storage(Arc::clone(&storage)),
            };
            registry.add(Arc::new(agent))?;
        }
        for team in self.teams {
            let team = match team.storage_handle() {
                Some(_) => team,
                None => team.storage(Arc::clone(&storage)),
            };
            registry.add(Arc::new(team))?;
        }
        let hub = Arc::new(Hub::new(storage));
        let state = routes::AppState {
            registry: Arc::new(registry),
            hub: Arc::clone(&hub),
        };
        let mut router = routes::router(state, self.keys.into(), self.body_limit);
        if !self.cors.is_empty() {
            router = router.layer(
                CorsLayer::new()
                    .allow_origin(AllowOrigin::list(self.cors))
                    .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                    .allow_headers([
                        header::AUTHORIZATION,
                        header::CONTENT_TYPE,
                        HeaderName::from_static("last-event-id"),
                    ]),
            );
        }
        Ok((
            router,
            ShutdownHandle {
                hub,
                grace: self.grace,
            },
        ))
    }

    /// The routes as an axum router, to merge into an app.
    ///
    /// Serve it with `TCP_NODELAY` on every accepted connection (axum's
    /// `ListenerExt::tap_io`, as [`Server::serve_with_shutdown`] does): otherwise each small
    /// event-stream frame may wait for the client's delayed acknowledgement, about 40 ms.
    /// Runs started through a bare router are not shut down gracefully; use
    /// [`Server::into_parts`] to keep the [`ShutdownHandle`].
    pub fn router(self) -> Result<Router, ServerError> {
        Ok(self.into_parts()?.0)
    }

    /// Serves on `addr` until Ctrl-C (or SIGTERM), then shuts down gracefully.
    pub async fn serve(self, addr: &str) -> Result<(), ServerError> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        self.serve_with_shutdown(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `signal` completes: new connections are refused at once,
    /// open event streams end, and runs get the grace period to finish.
    pub async fn serve_with_shutdown(
        self,
        listener: tokio::net::TcpListener,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let (router, handle) = self.into_parts()?;
        let stopping = handle.clone();
        // Event streams write many small frames: without TCP_NODELAY each frame that follows
        // an unacknowledged one waits for the client's delayed ACK (about 40 ms).
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "setting TCP_NODELAY on a connection failed");
            }
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                signal.await;
                stopping.hub.begin_shutdown();
            })
            .await?;
        handle.shutdown().await;
        Ok(())
    }
}

/// Shuts a server's runs down (see [`Server::serve_with_shutdown`]).
#[derive(Clone)]
pub struct ShutdownHandle {
    hub: Arc<Hub>,
    grace: Duration,
}

impl fmt::Debug for ShutdownHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownHandle")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl ShutdownHandle {
    /// Refuses new runs, ends event streams, gives running runs the grace period, then
    /// cancels what still runs (durable runs stay resumable).
    pub async fn shutdown(&self) {
        self.hub.begin_shutdown();
        self.hub.shutdown(self.grace).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The served components, by kind and id.
#[derive(Default, Debug)]
pub(crate) struct Registry {
    pub(crate) workflows: Vec<Served>,
    pub(crate) agents: Vec<Served>,
    pub(crate) teams: Vec<Served>,
}

impl Registry {
    fn add(&mut self, component: Arc<dyn Component>) -> Result<(), ServerError> {
        let kind = component.kind();
        let id = kebab_case(component.name());
        let id = if id.is_empty() {
            component.id().to_owned()
        } else {
            id
        };
        if !routes::valid_id(&id) {
            return Err(ServerError::InvalidId {
                kind: kind.as_str(),
                id,
            });
        }
        let list = self.of_mut(kind);
        if list.iter().any(|served| served.id == id) {
            return Err(ServerError::DuplicateId {
                kind: kind.as_str(),
                id,
            });
        }
        list.push(Served { id, component });
        Ok(())
    }

    fn of_mut(&mut self, kind: SessionKind) -> &mut Vec<Served> {
        match kind {
            SessionKind::Agent => &mut self.agents,
            SessionKind::Team => &mut self.teams,
            _ => &mut self.workflows,
        }
    }

    pub(crate) fn of(&self, kind: SessionKind) -> &[Served] {
        match kind {
            SessionKind::Agent => &self.agents,
            SessionKind::Team => &self.teams,
            _ => &self.workflows,
        }
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &Served> {
        self.workflows.iter().chain(&self.agents).chain(&self.teams)
    }

    /// Every distinct storage a run's log may be in.
    pub(crate) fn storages(&self, server: &Arc<dyn Storage>) -> Vec<Arc<dyn Storage>> {
        let mut storages = vec![Arc::clone(server)];
        for served in self.all() {
            if let Some(storage) = served.component.storage()
                && !storages.iter().any(|known| Arc::ptr_eq(known, storage))
            {
                storages.push(Arc::clone(storage));
            }
        }
        storages
    }
}

/// `Blog Writer` → `blog-writer`; `ArticleWorkflow` → `article-workflow`.
pub(crate) fn kebab_case(name: &str) -> String {
    let mut out = String::new();
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_alphanumeric() {
            let boundary = c.is_uppercase()
                && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit());
            if boundary && !out.ends_with('-') {
                out.push('-');
            }
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        previous = Some(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::kebab_case;

    #[test]
    fn ids_are_kebab_case() {
        assert_eq!(kebab_case("Blog Writer"), "blog-writer");
        assert_eq!(kebab_case("ArticleWorkflow"), "article-workflow");
        assert_eq!(kebab_case("article_pipeline"), "article-pipeline");
        assert_eq!(kebab_case("  x  "), "x");
    }
}
