//! Where a run's events go: the stream its caller reads, stamped with the top-level run's ids.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use crate::run::RunEvent;

/// The top-level run's ids, stamped on every event that reaches its stream.
#[derive(Debug)]
struct Stamp {
    run_id: String,
    session_id: String,
    workflow_id: Option<String>,
}

/// The sending side of a run's event stream, shared by the run and the members it
/// delegates to (a team's members send into their team's stream).
///
/// A disabled sink (a run nobody streams) drops events without building them.
#[derive(Clone, Debug, Default)]
pub(crate) struct EventSink {
    tx: Option<UnboundedSender<RunEvent>>,
    stamp: Option<Arc<Stamp>>,
    /// The team whose members send through this sink: their events carry its id.
    team_id: Option<Arc<str>>,
}

impl EventSink {
    /// A sink that drops everything: the run is not streamed.
    pub(crate) fn disabled() -> Self {
        EventSink::default()
    }

    /// The sink of a new stream; the first run that uses it becomes its top-level run.
    pub(crate) fn root(tx: UnboundedSender<RunEvent>) -> Self {
        EventSink {
            tx: Some(tx),
            stamp: None,
            team_id: None,
        }
    }

    /// Whether anyone reads the events (runs then stream their model calls).
    pub(crate) fn is_enabled(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// This sink for the run `run_id`, and whether that run is the top-level run: a sink
    /// without a top-level run yet makes it the top.
    pub(crate) fn for_run(
        &self,
        run_id: &str,
        session_id: &str,
        workflow_id: Option<&str>,
    ) -> (Self, bool) {
        let (stamp, top_level) = match &self.stamp {
            Some(stamp) => (Arc::clone(stamp), false),
            None => (
                Arc::new(Stamp {
                    run_id: run_id.to_owned(),
                    session_id: session_id.to_owned(),
                    workflow_id: workflow_id.map(str::to_owned),
                }),
                true,
            ),
        };
        let sink = EventSink {
            tx: self.tx.clone(),
            stamp: Some(stamp),
            team_id: self.team_id.clone(),
        };
        (sink, top_level)
    }

    /// This sink for a member run inside the durable run `run_id`: when the sink has no
    /// top-level run yet (a member called with a sink of its own), the durable run is its
    /// top, so that its events in the run's log carry the run's ids.
    pub(crate) fn within_durable(&self, ids: (&str, &str, Option<&str>)) -> Self {
        if self.stamp.is_some() {
            return self.clone();
        }
        let (run_id, session_id, workflow_id) = ids;
        EventSink {
            tx: self.tx.clone(),
            stamp: Some(Arc::new(Stamp {
                run_id: run_id.to_owned(),
                session_id: session_id.to_owned(),
                workflow_id: workflow_id.map(str::to_owned),
            })),
            team_id: self.team_id.clone(),
        }
    }

    /// This sink for the members of team `team_id`.
    pub(crate) fn within_team(&self, team_id: &str) -> Self {
        EventSink {
            team_id: Some(Arc::from(team_id)),
            ..self.clone()
        }
    }

    /// Stamps `event` with the top-level run's ids and sends it; a closed stream drops it.
    pub(crate) fn send(&self, mut event: RunEvent) {
        if self.tx.is_none() {
            return;
        }
        self.stamp(&mut event);
        self.deliver(event);
    }

    /// Stamps `event` with the team it runs in and the top-level run's ids.
    pub(crate) fn stamp(&self, event: &mut RunEvent) {
        if event.team_id.is_none() {
            event.team_id = self.team_id.as_deref().map(str::to_owned);
        }
        if let Some(stamp) = &self.stamp {
            event.run_id = Some(stamp.run_id.clone());
            event.session_id = Some(stamp.session_id.clone());
            if let Some(workflow_id) = &stamp.workflow_id {
                event.workflow_id = Some(workflow_id.clone());
            }
        }
    }

    /// Sends a stamped event; a closed stream drops it.
    pub(crate) fn deliver(&self, event: RunEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(event);
        }
    }
}
