//! The routes: each handler extracts, calls one function, and maps the result.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use buddy_core::component::{Component, RunRequest};
use buddy_core::durable::{self, DurableRun};
use buddy_core::session::{SessionCursor, SessionKey};
use buddy_core::{RunRecord, Session, SessionKind, SessionQuery, Storage};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::{ApiKey, Caller, require_key};
use crate::error::{ApiError, ApiResult};
use crate::hub::{Hub, Live, Outcome};
use crate::{Registry, Served, sse};

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) registry: Arc<Registry>,
    pub(crate) hub: Arc<Hub>,
}

/// The most sessions or runs one page holds.
const MAX_PAGE: usize = 100;

/// The routes, with auth on all but `/health`.
pub(crate) fn router(state: AppState, keys: Arc<[ApiKey]>, body_limit: usize) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/{kind}", get(list_components))
        .route("/v1/{kind}/{id}", get(describe))
        .route("/v1/{kind}/{id}/runs", post(start_run))
        .route("/v1/{kind}/{id}/sessions", get(list_sessions))
        .route(
            "/v1/{kind}/{id}/sessions/{session_id}",
            get(read_session)
                .patch(rename_session)
                .delete(delete_session),
        )
        .route("/v1/runs/{run_id}", get(run_record))
        .route("/v1/runs/{run_id}/events", get(run_events))
        .route("/v1/runs/{run_id}/cancel", post(cancel_run))
        .route("/v1/runs/{run_id}/waits", get(run_waits))
        .route("/v1/runs/{run_id}/waits/{*key}", post(answer_wait))
        .route("/v1/models", get(crate::openai::list_models))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route_layer(axum::middleware::from_fn_with_state(keys, require_key));
    Router::new()
        .route("/health", get(health))
        .merge(api)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
}

async fn health() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn openapi(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(crate::openapi::document(&state.registry))
}

/// Whether `id` may name a component, a session or a run: 1 to 128 letters, digits, `-`,
/// `_`, `.` or `:`.
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn check_id<'a>(what: &str, id: &'a str) -> ApiResult<&'a str> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid {what} id: use 1 to 128 letters, digits, `-`, `_`, `.` or `:`"),
        ))
    }
}

/// A JSON body: malformed JSON is 400, JSON of the wrong shape 422, too big 413.
pub(crate) fn body<T: DeserializeOwned>(bytes: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes =
        bytes.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = error.path().to_string();
        let inner = error.into_inner();
        let status = if inner.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        let detail = if status == StatusCode::BAD_REQUEST {
            format!("invalid JSON: {inner}")
        } else {
            format!("invalid request body: {inner}")
        };
        ApiError::new(status, detail)
            .with("field", if field == "." { String::new() } else { field })
    })
}

fn kind_of(kind: &str) -> ApiResult<SessionKind> {
    match kind {
        "workflows" => Ok(SessionKind::Workflow),
        "agents" => Ok(SessionKind::Agent),
        "teams" => Ok(SessionKind::Team),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Not found")),
    }
}

fn kind_title(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Agent => "Agent",
        SessionKind::Team => "Team",
        _ => "Workflow",
    }
}

fn find<'a>(state: &'a AppState, kind: &str, id: &str) -> ApiResult<&'a Served> {
    let kind = kind_of(kind)?;
    check_id(&kind_title(kind).to_lowercase(), id)?;
    state
        .registry
        .of(kind)
        .iter()
        .find(|served| served.id == id)
        .ok_or_else(|| ApiError::not_found(kind_title(kind)))
}

async fn list_components(
    State(state): State<AppState>,
    Path(kind): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let kind = kind_of(&kind)?;
    let list: Vec<Value> = state
        .registry
        .of(kind)
        .iter()
        .map(|served| {
            json!({
                "id": served.id,
                "name": served.component.name(),
                "description": served.component.description(),
            })
        })
        .collect();
    Ok(axum::Json(Value::Array(list)))
}

async fn describe(
    State(state): State<AppState>,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<Value>> {
    let served = find(&state, &kind, &id)?;
    Ok(axum::Json(description(served)))
}

/// A component's description, as `GET /v1/{kind}/{id}` returns it.
pub(crate) fn description(served: &Served) -> Value {
    let component = &served.component;
    let parameters: Vec<Value> = component
        .parameters()
        .iter()
        .map(|parameter| {
            json!({
                "name": parameter.name,
                "type": parameter.rust_type,
                "default": parameter.default,
                "required": parameter.required,
            })
        })
        .collect();
    json!({
        "id": served.id,
        "kind": component.kind().as_str(),
        "name": component.name(),
        "description": component.description(),
        "component_id": component.id(),
        "parameters": parameters,
        "input_schema": component.input_schema(),
        "streaming": true,
        "durable": component.is_durable(),
        "storage": component.storage().is_some(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    input: Value,
    session_id: Option<String>,
    user_id: Option<String>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    background: bool,
    /// Cancel the run when the client goes away before it ends.
    #[serde(default)]
    cancel_on_disconnect: bool,
}

/// The user a request acts for: a bound key's user (another one in the body is 403), else
/// the body's.
pub(crate) fn acting_user(caller: &Caller, asked: Option<String>) -> ApiResult<Option<String>> {
    match (&caller.user_id, asked) {
        (Some(bound), Some(asked)) if *bound != asked => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this API key may only act for its own user",
        )),
        (Some(bound), _) => Ok(Some(bound.clone())),
        (None, asked) => Ok(asked),
    }
}

async fn start_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, id)): Path<(String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let served = find(&state, &kind, &id)?;
    let body: RunBody = body(bytes)?;
    let user_id = acting_user(&caller, body.user_id)?;
    if let Some(session_id) = &body.session_id {
        check_id("session", session_id)?;
        if caller.user_id.is_some()
            && let Some(session) = served.component.read_session(session_id, 0).await?
            && !caller.may_see(session.user_id.as_deref())
        {
            return Err(ApiError::not_found("Session"));
        }
    }
    if !state.hub.is_accepting() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let mut request = RunRequest::new(body.input);
    request.session_id = body.session_id;
    request.user_id = user_id;
    let started = state
        .hub
        .start(Arc::clone(&served.component), request)
        .await?;
    let live = started.live;
    let guard = body.cancel_on_disconnect.then(|| Arc::clone(&live));
    if body.background {
        return Ok((
            StatusCode::ACCEPTED,
            axum::Json(started_body(&live, "running")),
        )
            .into_response());
    }
    if body.stream {
        let events = state
            .hub
            .subscribe(&live.run_id, state.hub.storage.clone(), 0);
        return Ok(sse::respond(events, guard));
    }
    let _guard = guard.map(sse::CancelOnDrop);
    outcome_response(&state, &live, live.finished().await).await
}

fn started_body(live: &Live, status: &str) -> Value {
    json!({"run_id": live.run_id, "session_id": live.session_id, "status": status})
}

async fn outcome_response(state: &AppState, live: &Live, outcome: Outcome) -> ApiResult<Response> {
    Ok(match outcome {
        Outcome::Completed(response) => axum::Json(*response).into_response(),
        Outcome::Failed(message) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            .with("run_id", live.run_id.clone())
            .into_response(),
        Outcome::Cancelled => ApiError::new(StatusCode::CONFLICT, "the run was cancelled")
            .with("run_id", live.run_id.clone())
            .into_response(),
        Outcome::Paused => {
            let (storage, _) = find_run(state, &live.run_id).await?;
            let waits = durable::pending_waits(&*storage, &live.run_id).await?;
            let mut body = started_body(live, "paused");
            body["pending_waits"] = json!(waits);
            (StatusCode::ACCEPTED, axum::Json(body)).into_response()
        }
    })
}

/// The storage holding run `run_id`, and its row.
async fn find_run(state: &AppState, run_id: &str) -> ApiResult<(Arc<dyn Storage>, DurableRun)> {
    check_id("run", run_id)?;
    for storage in state.registry.storages(&state.hub.storage) {
        if let Some(found) = storage.load_durable(run_id).await? {
            return Ok((storage, found.run));
        }
    }
    Err(ApiError::not_found("Run"))
}

/// The run, if the caller may see it (another user's run is not found).
async fn visible_run(
    state: &AppState,
    caller: &Caller,
    run_id: &str,
) -> ApiResult<(Arc<dyn Storage>, DurableRun)> {
    let (storage, run) = find_run(state, run_id).await?;
    if !caller.may_see(run.user_id.as_deref()) {
        return Err(ApiError::not_found("Run"));
    }
    Ok((storage, run))
}

async fn record(storage: &dyn Storage, run: &DurableRun) -> ApiResult<Value> {
    let waits = if run.status == buddy_core::RunStatus::Paused {
        durable::pending_waits(storage, &run.run_id).await?
    } else {
        Vec::new()
    };
    Ok(json!({
        "run_id": run.run_id,
        "session_id": run.session_id,
        "user_id": run.user_id,
        "component": run.workflow,
        "component_id": run.workflow_id,
        "durable": !run.log_only,
        "status": run.status.as_str(),
        "input": run.input,
        "response": run.response,
        "error": run.error,
        "attempt": run.attempt,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "ended_at": run.ended_at,
        "pending_waits": waits,
    }))
}

async fn run_record(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (storage, run) = visible_run(&state, &caller, &run_id).await?;
    Ok(axum::Json(record(&*storage, &run).await?))
}

#[derive(Deserialize)]
struct EventsQuery {
    after: Option<u64>,
}

async fn run_events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let query = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let after = sse::resume_point(&headers, query.after)?;
    let (storage, _) = visible_run(&state, &caller, &run_id).await?;
    Ok(sse::respond(
        state.hub.subscribe(&run_id, storage, after),
        None,
    ))
}

async fn cancel_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (storage, run) = visible_run(&state, &caller, &run_id).await?;
    let live = state.hub.get(&run_id);
    match &live {
        Some(live) if !live.durable => live.cancel(),
        _ => {
            durable::cancel(&*storage, &run_id).await?;
            if let Some(live) = &live {
                live.cancel();
            }
        }
    }
    if let Some(live) = live {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), live.finished()).await;
    }
    let run = storage
        .load_durable(&run_id)
        .await?
        .map_or(run, |state| state.run);
    Ok(axum::Json(record(&*storage, &run).await?))
}

async fn run_waits(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(run_id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let (storage, run) = visible_run(&state, &caller, &run_id).await?;
    let waits = durable::pending_waits(&*storage, &run.run_id).await?;
    Ok(axum::Json(json!(waits)))
}

async fn answer_wait(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((run_id, key)): Path<(String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    if key.is_empty() || key.len() > 512 || key.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid wait key"));
    }
    let value: Value = body(bytes)?;
    let (storage, run) = visible_run(&state, &caller, &run_id).await?;
    durable::answer(&*storage, &run_id, &key, value).await?;
    let waits = durable::pending_waits(&*storage, &run_id).await?;
    if !waits.is_empty() || state.hub.get(&run_id).is_some() {
        let body = json!({"run_id": run_id, "session_id": run.session_id, "status": "paused", "pending_waits": waits});
        return Ok(axum::Json(body).into_response());
    }
    let component = state
        .registry
        .workflows
        .iter()
        .find(|served| Some(served.component.id()) == run.workflow_id.as_deref())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "the run's workflow is not served here",
            )
        })?;
    if !state.hub.is_accepting() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        ));
    }
    let started = state
        .hub
        .resume(Arc::clone(&component.component), &run)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(started_body(&started.live, "running")),
    )
        .into_response())
}

#[derive(Deserialize)]
struct SessionsQuery {
    user_id: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// A session's title: its name, else the first line of its first run's message (at most
/// 100 characters, then `...`), else `Unnamed session`.
pub(crate) fn title(session: &Session, first_run: Option<&RunRecord>) -> String {
    if let Some(name) = session
        .session_name
        .as_deref()
        .filter(|name| !name.trim().is_empty())
    {
        return name.to_owned();
    }
    let content = first_run.and_then(|run| match &run.input {
        Value::String(text) => Some(text.as_str()),
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .or_else(|| map.values().find_map(Value::as_str)),
        _ => None,
    });
    let Some(line) =
        content.and_then(|text| text.lines().map(str::trim).find(|line| !line.is_empty()))
    else {
        return "Unnamed session".to_owned();
    };
    if line.chars().count() > 100 {
        let cut: String = line.chars().take(100).collect();
        format!("{cut}...")
    } else {
        line.to_owned()
    }
}

fn session_summary(session: &Session, title: String) -> Value {
    json!({
        "session_id": session.session_id,
        "title": title,
        "session_name": session.session_name,
        "user_id": session.user_id,
        "run_count": session.run_count,
        "created_at": session.created_at,
        "updated_at": session.updated_at,
    })
}

/// The `next_cursor` of a page that ends with `session`: `<updated_at>:<session_id>`, where
/// the next page starts (a session updated in between moves to the first page).
fn cursor_of(session: &Session) -> String {
    format!("{}:{}", session.updated_at, session.session_id)
}

fn parse_cursor(cursor: &str, kind: SessionKind) -> ApiResult<SessionCursor> {
    let invalid = || ApiError::bad_request("invalid cursor: pass a `next_cursor` as it was given");
    let (updated_at, session_id) = cursor.split_once(':').ok_or_else(invalid)?;
    let updated_at = updated_at.parse().map_err(|_| invalid())?;
    if !valid_id(session_id) {
        return Err(invalid());
    }
    Ok(SessionCursor {
        updated_at,
        key: SessionKey::new(session_id, kind),
    })
}

async fn list_sessions(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, id)): Path<(String, String)>,
    query: Result<Query<SessionsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let served = find(&state, &kind, &id)?;
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let user = acting_user(&caller, query.user_id)?;
    let limit = query.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    // One more than the page: whether there is a next one.
    let mut filter = SessionQuery::all().limit(limit + 1);
    if let Some(user) = user {
        filter = filter.user(user);
    }
    if let Some(cursor) = &query.cursor {
        filter = filter.after(parse_cursor(cursor, served.component.kind())?);
    }
    let page = served.component.list_sessions(filter).await?;
    let mut out = Vec::new();
    for session in page.iter().take(limit) {
        let first = if session.session_name.is_some() {
            None
        } else {
            first_run(served.component.as_ref(), session).await?
        };
        out.push(session_summary(session, title(session, first.as_ref())));
    }
    let next_cursor = (page.len() > limit).then(|| cursor_of(&page[limit - 1]));
    Ok(axum::Json(
        json!({"sessions": out, "next_cursor": next_cursor}),
    ))
}

async fn first_run(component: &dyn Component, session: &Session) -> ApiResult<Option<RunRecord>> {
    let Some(storage) = component.storage() else {
        return Ok(None);
    };
    let runs = storage.runs(&session.key(), None).await?;
    Ok(runs.into_iter().next())
}

/// The session, if it exists, belongs to the component and the caller may see it.
async fn visible_session(
    served: &Served,
    caller: &Caller,
    session_id: &str,
    recent_runs: usize,
) -> ApiResult<Option<Session>> {
    check_id("session", session_id)?;
    let session = served
        .component
        .read_session(session_id, recent_runs)
        .await?;
    Ok(session.filter(|session| caller.may_see(session.user_id.as_deref())))
}

#[derive(Deserialize)]
struct RunsPage {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn read_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, id, session_id)): Path<(String, String, String)>,
    query: Result<Query<RunsPage>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let served = find(&state, &kind, &id)?;
    let Query(page) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let limit = page.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let offset = page.offset.unwrap_or(0).min(1 << 20);
    let session = visible_session(served, &caller, &session_id, offset + limit)
        .await?
        .ok_or_else(|| ApiError::not_found("Session"))?;
    // Newest first: skip `offset` of the newest, then take `limit`.
    let runs: Vec<&RunRecord> = session.runs.iter().rev().skip(offset).take(limit).collect();
    let first = match session.session_name {
        Some(_) => None,
        None => first_run(served.component.as_ref(), &session).await?,
    };
    let mut body = session_summary(&session, title(&session, first.as_ref()));
    body["session_state"] = Value::Object(session.session_state.clone());
    body["runs"] = json!(runs);
    body["runs_offset"] = json!(offset);
    Ok(axum::Json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    session_name: String,
}

async fn rename_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, id, session_id)): Path<(String, String, String)>,
    bytes: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let served = find(&state, &kind, &id)?;
    let rename: Rename = body(bytes)?;
    if rename.session_name.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the session name is longer than 1024 bytes",
        )
        .with("field", "session_name"));
    }
    visible_session(served, &caller, &session_id, 0)
        .await?
        .ok_or_else(|| ApiError::not_found("Session"))?;
    served
        .component
        .rename_session(&session_id, rename.session_name)
        .await?;
    let session = visible_session(served, &caller, &session_id, 0)
        .await?
        .ok_or_else(|| ApiError::not_found("Session"))?;
    Ok(axum::Json(session_summary(&session, title(&session, None))))
}

async fn delete_session(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((kind, id, session_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    let served = find(&state, &kind, &id)?;
    check_id("session", &session_id)?;
    if let Some(session) = served.component.read_session(&session_id, 0).await? {
        if !caller.may_see(session.user_id.as_deref()) {
            return Err(ApiError::not_found("Session"));
        }
        served.component.delete_session(&session_id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
