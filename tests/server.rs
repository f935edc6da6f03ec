//! The HTTP server over real HTTP on 127.0.0.1: every route and its errors, server-sent
//! events with reconnects (`Last-Event-ID`, none lost, none twice), across a server restart
//! on SQLite and across two servers on Postgres; auth, CORS, pauses, cancel, shutdown.

#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use buddy::prelude::*;
use buddy::{Server, Storage};
use buddy_core::testing::ScriptedModel;
use serde::Deserialize;
use serde_json::{Value, json};

mod common;
use common::{assert_contiguous, read_sse, replay};

/// A served workflow.
#[workflow(description = "Says hello to someone.")]
struct Greeter {}

#[workflow]
impl Greeter {
    async fn run(&mut self, name: String, times: u32) -> Result<RunResponse> {
        let greeting = vec![format!("hello {name}"); times as usize].join(" ");
        self.state_mut()
            .insert(format!("greeted_{}", uuid_like(&greeting)), json!(true));
        Ok(RunResponse::from_text(greeting))
    }
}

fn uuid_like(text: &str) -> usize {
    text.len()
}

/// What a reviewer sends back.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Approval {
    approved: bool,
}

/// A durable workflow that pauses for approval.
#[workflow]
struct Approver {}

#[workflow(durable)]
impl Approver {
    async fn run(&mut self, draft: String) -> Result<RunResponse> {
        let approval: Approval = self.wait_for("approve", json!({"draft": draft})).await?;
        Ok(RunResponse::from_text(format!(
            "approved={}",
            approval.approved
        )))
    }
}

struct Running {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }
}

fn chatty_model() -> ScriptedModel {
    let mut model = ScriptedModel::new();
    for _ in 0..200 {
        model = model.chunks(["one ", "two ", "three ", "four ", "five"]);
    }
    model
}

fn server(storage: &Arc<dyn Storage>, model: &ScriptedModel) -> Server {
    let storage_for_workflows = Arc::clone(storage);
    let approver_storage = Arc::clone(storage);
    Server::new()
        .storage(Arc::clone(storage))
        .workflow(move || {
            Greeter::builder()
                .storage(Arc::clone(&storage_for_workflows))
                .build()
                .unwrap()
        })
        .workflow(move || {
            Approver::builder()
                .storage(Arc::clone(&approver_storage))
                .build()
                .unwrap()
        })
        .agent(Agent::new(model.clone()).name("Blog Writer"))
        .team(
            Team::new(model.clone(), TeamMode::Route)
                .name("writers")
                .member(Agent::new(model.clone()).name("helper")),
        )
        .body_limit(64 * 1024)
        .grace_period(Duration::from_millis(300))
}

async fn start(server: Server) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve_with_shutdown(listener, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        base,
        stop: Some(stop),
        task,
    }
}

/// `GET url`: the status and the JSON body (or the text, when it is not JSON).
async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> (u16, Value) {
    json_of(http.get(url).send().await.unwrap()).await
}

/// `POST url` with a JSON body: the status and the JSON body.
async fn post_json(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    body: &Value,
) -> (u16, Value) {
    json_of(http.post(url).json(body).send().await.unwrap()).await
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn components_are_listed_and_described() {
    let (_, storage, _dir) = common::stores("server_components", false).await.remove(0);
    let running = start(server(&storage, &chatty_model())).await;
    let http = reqwest::Client::new();
    let base = &running.base;
    let (status, health) = get_json(&http, format!("{base}/health")).await;
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    let (_, agents) = get_json(&http, format!("{base}/v1/agents")).await;
    assert_eq!(agents[0]["id"], "blog-writer");
    let (_, workflows) = get_json(&http, format!("{base}/v1/workflows")).await;
    let ids: Vec<_> = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("greeter"), json!("approver")]);
    assert_eq!(workflows[0]["description"], "Says hello to someone.");
    let (status, greeter) = get_json(&http, format!("{base}/v1/workflows/greeter")).await;
    assert_eq!(status, 200);
    assert_eq!(greeter["parameters"][0]["name"], "name");
    assert!(
        greeter["input_schema"]["properties"]["times"].is_object(),
        "{greeter}"
    );
    assert_eq!(greeter["streaming"], true);
    for (path, detail) in [
        ("/v1/workflows/nope", "Workflow not found"),
        ("/v1/agents/nope", "Agent not found"),
        ("/v1/teams/nope", "Team not found"),
        ("/v1/gadgets", "Not found"),
        ("/nowhere", "Not found"),
    ] {
        let (status, body) = get_json(&http, format!("{base}{path}")).await;
        assert_eq!((status, body), (404, json!({"detail": detail})), "{path}");
    }
    let (status, body) = json_of(
        http.delete(format!("{base}/v1/agents"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body),
        (405, json!({"detail": "Method not allowed"}))
    );
    let (status, _) = get_json(&http, format!("{base}/v1/agents/bad%20id")).await;
    assert_eq!(status, 400);
    let (status, doc) = get_json(&http, format!("{base}/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/workflows/greeter/runs"]["post"]["requestBody"].is_object());
    running.shutdown().await;
}

#[tokio::test]
async fn runs_sessions_and_their_errors() {
    for (name, storage, _dir) in common::stores("server_runs_sessions", false).await {
        let model = chatty_model();
        let running = start(server(&storage, &model)).await;
        let http = reqwest::Client::new();
        let base = &running.base;
        let runs = format!("{base}/v1/workflows/greeter/runs");
        // A plain run answers with the response.
        let (status, response) = post_json(
            &http,
            &runs,
            &json!({"input": {"name": "ada", "times": 2}, "session_id": "s-1", "user_id": "u1"}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {response}");
        assert_eq!(response["content"], "hello ada hello ada", "{name}");
        let run_id = response["run_id"].as_str().unwrap().to_owned();
        let (status, record) = get_json(&http, format!("{base}/v1/runs/{run_id}")).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(record["status"], "completed", "{name}: {record}");
        assert_eq!(record["response"]["content"], "hello ada hello ada");

        // Bad input: 422 naming the field, and nothing is written.
        let before = storage
            .list_sessions(&SessionQuery::all())
            .await
            .unwrap()
            .len();
        for (input, field) in [
            (json!({"name": "ada"}), "times"),
            (json!({"name": "ada", "times": "two"}), "times"),
            (json!({"name": "ada", "times": 1, "extra": 1}), "extra"),
        ] {
            let (status, body) = post_json(&http, &runs, &json!({"input": input})).await;
            assert_eq!(status, 422, "{name}: {body}");
            assert_eq!(body["field"], field, "{name}: {body}");
            assert!(
                body["detail"].as_str().unwrap().contains("Greeter"),
                "{body}"
            );
        }
        assert_eq!(
            storage
                .list_sessions(&SessionQuery::all())
                .await
                .unwrap()
                .len(),
            before
        );
        // Bad JSON 400, unknown body field 422, too big 413.
        let (status, body) = json_of(
            http.post(&runs)
                .header("content-type", "application/json")
                .body("{nope")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let (status, body) = post_json(&http, &runs, &json!({"inptu": {}})).await;
        assert_eq!(status, 422, "{body}");
        let big = "x".repeat(100 * 1024);
        let (status, body) =
            post_json(&http, &runs, &json!({"input": {"name": big, "times": 1}})).await;
        assert_eq!(status, 413, "{body}");
        // Unknown run: 404.
        let (status, body) = get_json(&http, format!("{base}/v1/runs/no-such-run")).await;
        assert_eq!((status, body), (404, json!({"detail": "Run not found"})));

        // An agent run, then its sessions.
        let agent_runs = format!("{base}/v1/agents/blog-writer/runs");
        let (status, _) = post_json(
            &http,
            &agent_runs,
            &json!({"input": {"message": "First line\nsecond"}, "session_id": "chat-1"}),
        )
        .await;
        assert_eq!(status, 200);
        let (_, listed) = get_json(&http, format!("{base}/v1/agents/blog-writer/sessions")).await;
        assert_eq!(listed["sessions"][0]["session_id"], "chat-1", "{listed}");
        assert_eq!(listed["sessions"][0]["title"], "First line");

        // Pages of two, each from the `next_cursor` of the one before: the sessions of one
        // listing, in its order, none lost and none twice.
        for n in 2..=5 {
            let (status, _) = post_json(
                &http,
                &agent_runs,
                &json!({"input": {"message": "more"}, "session_id": format!("chat-{n}")}),
            )
            .await;
            assert_eq!(status, 200);
        }
        let sessions_url = format!("{base}/v1/agents/blog-writer/sessions");
        let ids = |page: &Value| -> Vec<String> {
            page["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|session| session["session_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, whole) = get_json(&http, &sessions_url).await;
        assert_eq!(whole["next_cursor"], Value::Null);
        let mut paged = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            // Cursors hold only id characters and digits: nothing to escape.
            let url = match &cursor {
                Some(cursor) => format!("{sessions_url}?limit=2&cursor={cursor}"),
                None => format!("{sessions_url}?limit=2"),
            };
            let (status, page) = get_json(&http, url).await;
            assert_eq!(status, 200, "{name}: {page}");
            assert!(ids(&page).len() <= 2);
            paged.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(paged, ids(&whole), "{name}");
        assert_eq!(paged.len(), 5, "{name}: {paged:?}");
        for bad in ["nope", "x:chat-1", "12:not%20an%20id"] {
            let (status, body) = get_json(&http, format!("{sessions_url}?cursor={bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
        }
        let session_url = format!("{base}/v1/agents/blog-writer/sessions/chat-1");
        let (status, read) = get_json(&http, &session_url).await;
        assert_eq!(status, 200);
        assert_eq!(read["runs"].as_array().unwrap().len(), 1);
        let (status, renamed) = json_of(
            http.patch(&session_url)
                .json(&json!({"session_name": "Drafts"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, &renamed["title"]), (200, &json!("Drafts")));
        let (status, _) = json_of(http.delete(&session_url).send().await.unwrap()).await;
        assert_eq!(status, 204);
        let (status, _) = json_of(http.delete(&session_url).send().await.unwrap()).await;
        assert_eq!(status, 204, "delete is idempotent");
        let (status, body) = get_json(&http, &session_url).await;
        assert_eq!(
            (status, body),
            (404, json!({"detail": "Session not found"}))
        );
        let (status, _) = json_of(
            http.patch(&session_url)
                .json(&json!({"session_name": "x"}))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 404);

        // A failing run: 500 with its message, and still recorded.
        let failing = ScriptedModel::new();
        let failing_server = Server::new()
            .storage(Arc::clone(&storage))
            .agent(Agent::new(failing).name("broken"));
        let broken = start(failing_server).await;
        let (status, body) = post_json(
            &http,
            format!("{}/v1/agents/broken/runs", broken.base),
            &json!({"input": {"message": "hi"}}),
        )
        .await;
        assert_eq!(status, 500, "{body}");
        assert!(!body["detail"].as_str().unwrap().is_empty());
        let failed_id = body["run_id"].as_str().unwrap();
        let (_, record) = get_json(&http, format!("{}/v1/runs/{failed_id}", broken.base)).await;
        assert_eq!(record["status"], "error", "{record}");
        broken.shutdown().await;
        running.shutdown().await;
    }
}

#[tokio::test]
async fn sse_reconnects_lose_and_repeat_nothing_even_across_a_restart() {
    for (name, storage, _dir) in common::stores("server_sse_reconnects", false).await {
        let model = chatty_model();
        let running = start(server(&storage, &model)).await;
        let http = reqwest::Client::new();
        let runs = format!("{}/v1/agents/blog-writer/runs", running.base);
        let response = http
            .post(&runs)
            .json(&json!({"input": {"message": "go"}, "stream": true}))
            .send()
            .await
            .unwrap();
        let all = read_sse(response, usize::MAX).await;
        assert_contiguous(&all, name);
        assert_eq!(all[0].event.as_deref(), Some("run_started"));
        assert_eq!(all.last().unwrap().event.as_deref(), Some("run_completed"));
        let first: Value = serde_json::from_str(&all[0].data).unwrap();
        let run_id = first["run_id"].as_str().unwrap().to_owned();
        let events_url = |base: &str| format!("{base}/v1/runs/{run_id}/events");
        // Reconnect at every point: exactly the rest.
        for after in 0..=all.len() {
            let rest = read_sse(
                http.get(events_url(&running.base))
                    .header("last-event-id", after.to_string())
                    .send()
                    .await
                    .unwrap(),
                usize::MAX,
            )
            .await;
            assert_eq!(rest, all[after..].to_vec(), "{name}: after {after}");
        }
        // `?after=` works too.
        let rest = read_sse(
            http.get(format!("{}?after=2", events_url(&running.base)))
                .send()
                .await
                .unwrap(),
            usize::MAX,
        )
        .await;
        assert_eq!(rest, all[2..].to_vec());

        // Disconnect from a live run after a few events, restart the server, reconnect.
        let slow = chatty_model().latency(Duration::from_millis(30));
        let slow_server = start(server(&storage, &slow)).await;
        let response = http
            .post(format!("{}/v1/agents/blog-writer/runs", slow_server.base))
            .json(&json!({"input": {"message": "go"}, "stream": true}))
            .send()
            .await
            .unwrap();
        let seen = read_sse(response, 2).await;
        let started: Value = serde_json::from_str(&seen[0].data).unwrap();
        let live_id = started["run_id"].as_str().unwrap().to_owned();
        // The disconnect did not stop the run: it completes.
        let record_url = format!("{}/v1/runs/{live_id}", slow_server.base);
        let mut completed = false;
        for _ in 0..200 {
            let (_, record) = get_json(&http, &record_url).await;
            if record["status"] == "completed" {
                completed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(completed, "{name}: the run went on after the client left");
        slow_server.shutdown().await;
        let restarted = start(server(&storage, &chatty_model())).await;
        let rest = read_sse(
            http.get(format!("{}/v1/runs/{live_id}/events", restarted.base))
                .header("last-event-id", seen[1].id.clone().unwrap())
                .send()
                .await
                .unwrap(),
            usize::MAX,
        )
        .await;
        let mut joined = seen.clone();
        joined.extend(rest);
        assert_contiguous(&joined, name);
        assert_eq!(
            joined.last().unwrap().event.as_deref(),
            Some("run_completed")
        );
        restarted.shutdown().await;
        running.shutdown().await;
    }
}

/// Two points of a run the test waits for and opens.
#[derive(Default)]
struct Gates {
    emitted: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

/// Emits `count` events, says so, and ends when the test lets it: a live run with more
/// events than the server keeps of it in memory.
#[workflow]
struct Burst {
    #[field(default)]
    gates: Arc<Gates>,
}

#[workflow]
impl Burst {
    async fn run(&mut self, count: u32) -> impl Stream<Item = Result<RunEvent>> {
        let gates = Arc::clone(&self.gates);
        buddy::try_stream! {
            for n in 0..count {
                yield RunEvent::custom("n", json!({ "n": n }));
            }
            gates.emitted.notify_one();
            gates.release.notified().await;
        }
    }
}

#[tokio::test]
async fn a_late_subscriber_of_a_long_live_run_gets_its_early_events_from_the_log() {
    const COUNT: usize = 6_000;
    for (name, storage, _dir) in common::stores("server_long_live_run", false).await {
        let gates = Arc::new(Gates::default());
        let shared = Arc::clone(&gates);
        let running = start(
            Server::new()
                .storage(Arc::clone(&storage))
                .workflow(move || {
                    let mut burst = Burst::builder().build().unwrap();
                    burst.gates = Arc::clone(&shared);
                    burst
                }),
        )
        .await;
        let http = reqwest::Client::new();
        let (status, started) = post_json(
            &http,
            format!("{}/v1/workflows/burst/runs", running.base),
            &json!({"input": {"count": COUNT}, "background": true}),
        )
        .await;
        assert_eq!(status, 202, "{name}: {started}");
        let run_id = started["run_id"].as_str().unwrap().to_owned();
        gates.emitted.notified().await;
        // The run is live and has emitted more than the server keeps in memory: a
        // subscriber from the start, and one from an early point, get the early events
        // from the log and the rest without a gap.
        let events_url = format!("{}/v1/runs/{run_id}/events", running.base);
        let from_start = read_sse(http.get(&events_url).send().await.unwrap(), COUNT + 1).await;
        assert_contiguous(&from_start, name);
        assert_eq!(
            from_start.len(),
            COUNT + 1,
            "{name}: run_started and every event"
        );
        let early = read_sse(
            http.get(&events_url)
                .header("last-event-id", "100")
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert_eq!(early.first().unwrap().id.as_deref(), Some("101"), "{name}");
        assert_eq!(early.last().unwrap().id.as_deref(), Some("300"), "{name}");
        gates.release.notify_one();
        let rest = read_sse(
            http.get(&events_url)
                .header("last-event-id", (COUNT + 1).to_string())
                .send()
                .await
                .unwrap(),
            usize::MAX,
        )
        .await;
        assert_eq!(
            rest.last().unwrap().event.as_deref(),
            Some("run_completed"),
            "{name}: {rest:?}"
        );
        let mut all = from_start;
        all.extend(rest);
        assert_contiguous(&all, name);
        running.shutdown().await;
    }
}

#[tokio::test]
async fn a_live_run_followed_from_another_server_on_the_same_database() {
    for (name, storage, _dir) in common::stores("server_another_server", false).await {
        let slow = chatty_model().latency(Duration::from_millis(20));
        let a = start(server(&storage, &slow)).await;
        let b = start(server(&storage, &chatty_model())).await;
        let http = reqwest::Client::new();
        let (status, started) = post_json(
            &http,
            format!("{}/v1/agents/blog-writer/runs", a.base),
            &json!({"input": {"message": "go"}, "background": true}),
        )
        .await;
        assert_eq!(status, 202, "{started}");
        assert_eq!(started["status"], "running");
        let run_id = started["run_id"].as_str().unwrap();
        let from_b = read_sse(
            http.get(format!("{}/v1/runs/{run_id}/events", b.base))
                .send()
                .await
                .unwrap(),
            usize::MAX,
        )
        .await;
        let from_a = read_sse(
            http.get(format!("{}/v1/runs/{run_id}/events", a.base))
                .send()
                .await
                .unwrap(),
            usize::MAX,
        )
        .await;
        assert_eq!(from_a, from_b, "{name}");
        assert_eq!(
            from_b.last().unwrap().event.as_deref(),
            Some("run_completed"),
            "{name}"
        );
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn a_durable_run_pauses_and_resumes_over_http() {
    for (name, storage, _dir) in common::stores("server_pauses", false).await {
        let running = start(server(&storage, &chatty_model())).await;
        let http = reqwest::Client::new();
        let base = &running.base;
        let (status, paused) = post_json(
            &http,
            format!("{base}/v1/workflows/approver/runs"),
            &json!({"input": {"draft": "d1"}}),
        )
        .await;
        assert_eq!(status, 202, "{name}: {paused}");
        assert_eq!(paused["status"], "paused");
        let run_id = paused["run_id"].as_str().unwrap().to_owned();
        let (_, waits) = get_json(&http, format!("{base}/v1/runs/{run_id}/waits")).await;
        assert_eq!(waits[0]["key"], "approve#1", "{waits}");
        assert!(waits[0]["schema"]["properties"]["approved"].is_object());
        let answer = format!("{base}/v1/runs/{run_id}/waits/approve%231");
        let (status, body) = post_json(&http, &answer, &json!({"approved": "yes"})).await;
        assert_eq!(status, 422, "{body}");
        let (status, _) = post_json(
            &http,
            format!("{base}/v1/runs/{run_id}/waits/nope"),
            &json!({"approved": true}),
        )
        .await;
        assert_eq!(status, 404);
        let (status, body) = post_json(&http, &answer, &json!({"approved": true})).await;
        assert_eq!(status, 202, "{name}: {body}");
        let events = replay(&http, base, &run_id).await;
        assert_contiguous(&events, name);
        assert!(
            events
                .iter()
                .any(|e| e.event.as_deref() == Some("run_paused"))
        );
        let mut done = false;
        for _ in 0..200 {
            let (_, record) = get_json(&http, format!("{base}/v1/runs/{run_id}")).await;
            if record["status"] == "completed" {
                assert_eq!(record["response"]["content"], "approved=true");
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(done, "{name}");
        let (status, _) = post_json(&http, &answer, &json!({"approved": false})).await;
        assert_eq!(status, 409, "{name}: another value for an answered wait");
        running.shutdown().await;
    }
}

#[tokio::test]
async fn cancel_is_recorded_and_idempotent_and_shutdown_cancels_what_outlives_the_grace() {
    for (name, storage, _dir) in common::stores("server_cancel", false).await {
        let slow = chatty_model().latency(Duration::from_secs(2));
        let running = start(server(&storage, &slow)).await;
        let http = reqwest::Client::new();
        let base = running.base.clone();
        let start_background = || async {
            let (_, started) = post_json(
                &http,
                format!("{base}/v1/agents/blog-writer/runs"),
                &json!({"input": {"message": "go"}, "background": true}),
            )
            .await;
            started["run_id"].as_str().unwrap().to_owned()
        };
        let run_id = start_background().await;
        for _ in 0..2 {
            let (status, record) = json_of(
                http.post(format!("{base}/v1/runs/{run_id}/cancel"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{name}");
            assert_eq!(record["status"], "cancelled", "{name}: {record}");
        }
        let events = replay(&http, &base, &run_id).await;
        assert_eq!(
            events.last().unwrap().event.as_deref(),
            Some("run_cancelled"),
            "{name}"
        );
        // Shutdown: the run outlives the grace period and is recorded cancelled.
        let outliving = start_background().await;
        running.shutdown().await;
        let stored = storage.load_durable(&outliving).await.unwrap().unwrap();
        assert_eq!(stored.run.status, buddy::RunStatus::Cancelled, "{name}");
    }
}

/// A durable workflow: a quick step that counts its runs, then a slow one.
#[workflow]
struct Stepper {
    #[field(default)]
    quick_runs: Arc<AtomicUsize>,
}

#[workflow(durable)]
impl Stepper {
    async fn run(&mut self, slow_ms: u64) -> Result<RunResponse> {
        let counter = Arc::clone(&self.quick_runs);
        let quick = self
            .step("quick", async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Error>(1u64)
            })
            .await?;
        let slow = self
            .step("slow", async move {
                tokio::time::sleep(Duration::from_millis(slow_ms)).await;
                Ok::<_, Error>(2u64)
            })
            .await?;
        Ok(RunResponse::from_text((quick + slow).to_string()))
    }
}

fn stepper(storage: &Arc<dyn Storage>, quick_runs: &Arc<AtomicUsize>) -> Stepper {
    let mut stepper = Stepper::builder()
        .storage(Arc::clone(storage))
        .build()
        .unwrap();
    stepper.quick_runs = Arc::clone(quick_runs);
    stepper
}

#[tokio::test]
async fn shutdown_stops_a_durable_run_that_outlives_the_grace_and_it_resumes_later() {
    for (name, storage, _dir) in common::stores("server_shutdown_durable", false).await {
        let quick_runs = Arc::new(AtomicUsize::new(0));
        let (factory_storage, factory_runs) = (Arc::clone(&storage), Arc::clone(&quick_runs));
        let running = start(
            Server::new()
                .storage(Arc::clone(&storage))
                .workflow(move || stepper(&factory_storage, &factory_runs))
                .grace_period(Duration::from_millis(200)),
        )
        .await;
        let http = reqwest::Client::new();
        let (status, started) = post_json(
            &http,
            format!("{}/v1/workflows/stepper/runs", running.base),
            &json!({"input": {"slow_ms": 3000}, "background": true}),
        )
        .await;
        assert_eq!(status, 202, "{name}: {started}");
        let run_id = started["run_id"].as_str().unwrap().to_owned();
        for _ in 0..200 {
            if quick_runs.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(quick_runs.load(Ordering::SeqCst), 1, "{name}");
        running.shutdown().await;
        // Stopped, not cancelled: the run is still `running` in its journal.
        let stored = storage.load_durable(&run_id).await.unwrap().unwrap();
        assert_eq!(stored.run.status, buddy::RunStatus::Running, "{name}");

        // Later (the next start of the service): it resumes from its journal.
        let resumed = buddy::workflow::resume_unfinished(|| stepper(&storage, &quick_runs))
            .await
            .unwrap();
        assert_eq!(resumed.len(), 1, "{name}");
        assert_eq!(resumed[0].run_id, run_id, "{name}");
        let response = resumed[0].result.as_ref().unwrap();
        assert_eq!(response.text(), "3", "{name}");
        assert_eq!(
            quick_runs.load(Ordering::SeqCst),
            1,
            "{name}: the quick step ran once"
        );

        // Its log, served by a new server, runs without a gap to the end.
        let restarted = start(Server::new().storage(Arc::clone(&storage)).workflow({
            let (storage, runs) = (Arc::clone(&storage), Arc::clone(&quick_runs));
            move || stepper(&storage, &runs)
        }))
        .await;
        let (status, record) =
            get_json(&http, format!("{}/v1/runs/{run_id}", restarted.base)).await;
        assert_eq!(status, 200, "{name}: {record}");
        assert_eq!(record["status"], "completed", "{name}: {record}");
        let events = replay(&http, &restarted.base, &run_id).await;
        assert_contiguous(&events, name);
        assert_eq!(
            events.last().unwrap().event.as_deref(),
            Some("run_completed"),
            "{name}"
        );
        restarted.shutdown().await;
    }
}

#[tokio::test]
async fn concurrent_runs_on_one_session_lose_nothing() {
    for (name, storage, _dir) in common::stores("server_concurrent", false).await {
        let running = start(server(&storage, &chatty_model())).await;
        let http = reqwest::Client::new();
        let url = format!("{}/v1/workflows/greeter/runs", running.base);
        let requests = (1..=20u32).map(|times| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let response = http
                    .post(url)
                    .json(&json!({"input": {"name": "x", "times": times}, "session_id": "shared"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
        futures::future::join_all(requests).await;
        let session = storage
            .read(
                &buddy::SessionKey::new("shared", buddy::SessionKind::Workflow),
                &buddy::storage::ReadOptions::with_runs(0),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(session.run_count, 20, "{name}");
        assert_eq!(
            session.session_state.len(),
            20,
            "{name}: every run's state key is kept"
        );
        running.shutdown().await;
    }
}

/// Every log line this test binary writes, at every level and from every crate (the server,
/// axum, hyper, sqlx, ...), so a test can check that no key ever appears in one.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        // `try_init` also routes the `log` crate's records (sqlx's) into the capture.
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&sink)))
            .try_init()
            .unwrap();
        logs
    }))
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn keys_users_and_cors() {
    let logs = captured_logs();
    let (_, storage, _dir) = common::stores("server_keys", false).await.remove(0);
    let served = server(&storage, &chatty_model())
        .api_key("admin-secret-key")
        .api_key_for_user("alice-secret-key", "alice")
        .cors_origins(["https://app.example.com"]);
    let running = start(served).await;
    let http = reqwest::Client::new();
    let base = &running.base;
    let health = http.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status(), 200, "no auth on /health");
    for auth in [None, Some("Bearer wrong"), Some("Basic abc")] {
        let mut request = http.get(format!("{base}/v1/agents"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert!(
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let text = response.text().await.unwrap();
        assert!(!text.contains("secret-key"), "{text}");
    }
    let runs = format!("{base}/v1/agents/blog-writer/runs");
    let admin = |request: reqwest::RequestBuilder| request.bearer_auth("admin-secret-key");
    let alice = |request: reqwest::RequestBuilder| request.bearer_auth("alice-secret-key");
    let (status, _) = json_of(
        admin(http.post(&runs))
            .json(&json!({"input": {"message": "bob's"}, "session_id": "bob-1", "user_id": "bob"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = json_of(
        alice(http.post(&runs))
            .json(&json!({"input": {"message": "alice's"}, "session_id": "alice-1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = json_of(
        alice(http.post(&runs))
            .json(&json!({"input": {"message": "x"}, "user_id": "bob"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "a bound key cannot act for another user");
    let (status, _) = json_of(
        alice(http.post(&runs))
            .json(&json!({"input": {"message": "x"}, "session_id": "bob-1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "nor write into their session");
    let (_, listed) = json_of(
        alice(http.get(format!("{base}/v1/agents/blog-writer/sessions")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<_> = listed["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("alice-1")]);
    let (status, _) = json_of(
        alice(http.get(format!("{base}/v1/agents/blog-writer/sessions/bob-1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = json_of(
        alice(http.delete(format!("{base}/v1/agents/blog-writer/sessions/bob-1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (_, listed) = json_of(
        admin(http.get(format!("{base}/v1/agents/blog-writer/sessions")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    // CORS: the allowed origin only, never a wildcard.
    let allowed = admin(http.get(format!("{base}/v1/agents")))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = admin(http.get(format!("{base}/v1/agents")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    running.shutdown().await;
    // No key in any log line of any crate, at any level.
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("Blog Writer") && logs.contains("alice-1"),
        "the capture saw this test's runs"
    );
    for key in ["admin-secret-key", "alice-secret-key", "secret-key"] {
        assert!(!logs.contains(key), "a key in the logs");
    }
}

/// The python that has the client libraries (`scripts/py-clients.sh`), or a loud skip.
fn python(test: &str) -> Option<String> {
    match std::env::var("BUDDY_TEST_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ => {
            eprintln!(
                "SKIPPED: {test} (BUDDY_TEST_PYTHON is not set; scripts/py-clients.sh makes one)"
            );
            None
        }
    }
}

/// Runs a client script with `args`; panics with its output when it fails.
async fn run_python(python: String, script: &str, args: Vec<String>) -> String {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[tokio::test]
async fn the_openai_facade_answers_the_openai_client_plain_and_streamed() {
    let Some(python) = python("the OpenAI facade driven by the openai package") else {
        return;
    };
    let (_, storage, _dir) = common::stores("server_openai", false).await.remove(0);
    let running = start(server(&storage, &chatty_model())).await;
    let out = run_python(
        python,
        "openai_client.py",
        vec![
            running.base.clone(),
            "blog-writer".into(),
            "one two three four five".into(),
        ],
    )
    .await;
    assert!(out.starts_with("ok 5 chunks"), "{out}");
    running.shutdown().await;
}

/// Options with a type of their own, so the input schema has `$defs`.
#[derive(Debug, Deserialize, serde::Serialize, schemars::JsonSchema)]
struct ReportOptions {
    depth: u32,
    style: Style,
}

/// A nested enum.
#[derive(Debug, Deserialize, serde::Serialize, schemars::JsonSchema)]
enum Style {
    Short,
    Long,
}

/// A workflow whose input nests types.
#[workflow]
struct Reporter {}

#[workflow]
impl Reporter {
    async fn run(&mut self, topic: String, options: ReportOptions) -> Result<RunResponse> {
        Ok(RunResponse::from_text(format!("{topic} {options:?}")))
    }
}

#[tokio::test]
async fn the_openapi_document_validates_as_openapi_3_1() {
    let Some(python) = python("the OpenAPI document checked by openapi-spec-validator") else {
        return;
    };
    let (_, storage, _dir) = common::stores("server_openapi", false).await.remove(0);
    let served =
        server(&storage, &chatty_model()).workflow(|| Reporter::builder().build().unwrap());
    let running = start(served).await;
    let out = run_python(
        python,
        "openapi_validate.py",
        vec![format!("{}/openapi.json", running.base)],
    )
    .await;
    assert!(out.starts_with("ok"), "{out}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_client_that_opts_in_cancels_its_run_by_going_away() {
    for (name, storage, _dir) in common::stores("server_cancel_on_disconnect", false).await {
        let slow = chatty_model().latency(Duration::from_secs(2));
        let running = start(server(&storage, &slow)).await;
        let http = reqwest::Client::new();
        let response = http
            .post(format!("{}/v1/agents/blog-writer/runs", running.base))
            .json(
                &json!({"input": {"message": "go"}, "stream": true, "cancel_on_disconnect": true}),
            )
            .send()
            .await
            .unwrap();
        let seen = read_sse(response, 1).await;
        let started: Value = serde_json::from_str(&seen[0].data).unwrap();
        let run_id = started["run_id"].as_str().unwrap().to_owned();
        let mut cancelled = false;
        for _ in 0..250 {
            let (_, record) = get_json(&http, format!("{}/v1/runs/{run_id}", running.base)).await;
            if record["status"] == "cancelled" {
                cancelled = true;
                break;
            }
            assert_eq!(record["status"], "running", "{name}: {record}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            cancelled,
            "{name}: the run was cancelled when its client went away"
        );
        running.shutdown().await;
    }
}
