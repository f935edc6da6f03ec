//! [`CrashTest`]: runs a program in a child process, stops it at a fault point of a durable
//! run and kills it with SIGKILL — the harness for testing that a workflow resumes after a
//! crash without repeating what it finished.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::fault::{FAULT_POINT_MARKER, FAULT_POINT_VAR};

/// The fault points of a durable run, in the order a run reaches them. A point may be
/// narrowed to one journal entry with `point:key` (`before_model_call:writer#1/model#2`) and
/// to its `n`-th occurrence with `point@n`.
pub const FAULT_POINTS: &[&str] = &[
    "after_run_start",
    "before_model_call",
    "before_event_flush",
    "after_event_flush",
    "after_model_call",
    "before_tool_call",
    "after_tool_call",
    "before_step",
    "after_step",
    "before_pause",
    "after_pause",
    "before_run_end",
    "after_run_end",
];

/// How a child process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It reached the fault point and was killed there with SIGKILL.
    Killed {
        /// The point (`before_step`).
        point: String,
        /// The journal key it was reached for (`facts#1`).
        key: String,
        /// What it printed on stdout until then.
        stdout: String,
    },
    /// It exited on its own.
    Exited {
        /// Its exit code (`None` when a signal ended it).
        code: Option<i32>,
        /// What it printed on stdout.
        stdout: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl Outcome {
    /// Whether the child was killed at its fault point.
    pub fn killed(&self) -> bool {
        matches!(self, Outcome::Killed { .. })
    }

    /// What the child printed on stdout.
    pub fn stdout(&self) -> &str {
        match self {
            Outcome::Killed { stdout, .. } | Outcome::Exited { stdout, .. } => stdout,
        }
    }
}

/// A program to run as a child process, to its end or until a fault point.
///
/// The child is any program that runs a durable workflow with buddy — typically the test
/// binary itself, started again in a "child" mode. With a fault point set it stops there
/// (buddy prints a marker on its stderr and sleeps), and the harness kills it with SIGKILL:
/// the crash a test then resumes from.
///
/// ```no_run
/// # extern crate buddy_core as buddy;
/// use buddy::testing::CrashTest;
///
/// let child = CrashTest::new(std::env::current_exe().unwrap()).env("MY_TEST_ROLE", "child");
/// let outcome = child.run_until("after_step:publish#1").unwrap();
/// assert!(outcome.killed());
/// let rest = child.run().unwrap(); // the resume, in a new process
/// # let _ = rest;
/// ```
#[derive(Clone, Debug)]
pub struct CrashTest {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    timeout: Duration,
}

impl CrashTest {
    /// Runs `program`.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        CrashTest {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// Passes `arg` to the program.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets environment variable `key` for the program.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Kills a child that neither exits nor reaches its point within `timeout` (default 60
    /// s), and reports that as an error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs the program to its end.
    pub fn run(&self) -> std::io::Result<Outcome> {
        self.spawn(None)
    }

    /// Runs the program with fault point `point` (`name[:key][@n]`); kills it with SIGKILL
    /// when it gets there. A child that exits without reaching the point is
    /// [`Outcome::Exited`].
    pub fn run_until(&self, point: &str) -> std::io::Result<Outcome> {
        self.spawn(Some(point))
    }

    fn spawn(&self, point: Option<&str>) -> std::io::Result<Outcome> {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove(FAULT_POINT_VAR);
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        if let Some(point) = point {
            command.env(FAULT_POINT_VAR, point);
        }
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().map(read_all);
        let (marker_tx, marker_rx) = mpsc::channel();
        let stderr = child.stderr.take().map(|stderr| {
            std::thread::spawn(move || {
                let mut text = String::new();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.strip_prefix(FAULT_POINT_MARKER) {
                        let _ = marker_tx.send(rest.trim().to_owned());
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                text
            })
        });
        let started = Instant::now();
        loop {
            if let Ok(reached) = marker_rx.recv_timeout(Duration::from_millis(5)) {
                // SIGKILL: no destructor, no flush, no goodbye.
                child.kill()?;
                child.wait()?;
                let (point, key) = reached.split_once(' ').unwrap_or((reached.as_str(), ""));
                return Ok(Outcome::Killed {
                    point: point.to_owned(),
                    key: key.to_owned(),
                    stdout: join(stdout),
                });
            }
            if let Some(status) = child.try_wait()? {
                // A marker sent just before the exit is not a kill.
                return Ok(Outcome::Exited {
                    code: status.code(),
                    stdout: join(stdout),
                    stderr: stderr
                        .map(|handle| handle.join().unwrap_or_default())
                        .unwrap_or_default(),
                });
            }
            if started.elapsed() > self.timeout {
                child.kill()?;
                child.wait()?;
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "child {} neither exited nor reached its fault point in {:?}",
                        self.program.display(),
                        self.timeout
                    ),
                ));
            }
        }
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

fn join(handle: Option<std::thread::JoinHandle<String>>) -> String {
    handle
        .map(|handle| handle.join().unwrap_or_default())
        .unwrap_or_default()
}
