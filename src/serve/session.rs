//! One client connection's state in `serve`: its PostgreSQL settings, the query it is running
//! (what a CancelRequest, the query timeout or a stop interrupts), and the registry that finds a
//! connection from a CancelRequest's process id and secret key, as PostgreSQL does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use pgwire::messages::startup::SecretKey;

use super::compat::Settings;

/// Why a query was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// A CancelRequest (psql's Ctrl-C, Grafana superseding a panel query, a driver's timeout).
    Cancel,
    /// It ran longer than the connection's statement_timeout or `--query-timeout`.
    Timeout,
}

/// Interrupts the DuckDB connection a query runs on (from any thread).
pub type Interrupter = Arc<dyn Fn() + Send + Sync>;

/// A running query: interrupts the DuckDB connection it runs on (a remote lake's probe first,
/// then the snapshot's) and remembers why.
#[derive(Default)]
pub struct QueryControl {
    interrupt: Mutex<Option<Interrupter>>,
    reason: AtomicU8,
}

impl QueryControl {
    /// Control over a query about to start.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The query now runs on the connection `interrupt` interrupts (at once if the query was
    /// stopped already).
    pub fn attach(&self, interrupt: Interrupter) {
        let mut current = self.interrupt.lock().expect("control lock");
        if self.stopped().is_some() {
            interrupt();
        }
        *current = Some(interrupt);
    }

    /// Stop the query (the first reason given wins).
    pub fn stop(&self, why: Stop) {
        let code = match why {
            Stop::Cancel => 1,
            Stop::Timeout => 2,
        };
        let _ = self.reason.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.interrupt_quietly();
    }

    /// Interrupt DuckDB without a reason to report (nobody is left to report it to).
    pub fn interrupt_quietly(&self) {
        if let Some(interrupt) = self.interrupt.lock().expect("control lock").as_ref() {
            interrupt();
        }
    }

    /// Why it was stopped, if it was. The query's thread checks this before each step, so a stop
    /// that lands before DuckDB started executing (and so was not seen by it) still counts.
    pub fn stopped(&self) -> Option<Stop> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(Stop::Cancel),
            2 => Some(Stop::Timeout),
            _ => None,
        }
    }
}

/// A client connection's state.
#[derive(Default)]
pub struct Session {
    running: Mutex<Option<Arc<QueryControl>>>,
    /// The connection's PostgreSQL parameters (SET/SHOW).
    pub settings: Mutex<Settings>,
}

impl Session {
    /// A session with these settings (from the connection's startup packet).
    pub fn new(settings: Settings) -> Self {
        Self { running: Mutex::new(None), settings: Mutex::new(settings) }
    }

    /// Mark `control` as the connection's running query; cleared when the returned guard drops.
    pub fn running(self: &Arc<Self>, control: Arc<QueryControl>) -> RunningGuard {
        *self.running.lock().expect("session lock") = Some(control.clone());
        RunningGuard { session: Arc::downgrade(self), control }
    }

    /// Stop the running query, if any.
    pub fn cancel(&self) {
        if let Some(q) = self.running.lock().expect("session lock").as_ref() {
            q.stop(Stop::Cancel);
        }
    }
}

/// Clears the session's running query when the query ends (or its stream is dropped).
pub struct RunningGuard {
    session: Weak<Session>,
    control: Arc<QueryControl>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Some(s) = self.session.upgrade() {
            let mut running = s.running.lock().expect("session lock");
            if running.as_ref().is_some_and(|r| Arc::ptr_eq(r, &self.control)) {
                *running = None;
            }
        }
    }
}

type Key = (i32, Bytes);

/// The connections a CancelRequest may name.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Key, Weak<Session>>>,
}

impl Sessions {
    /// Register a connection under its process id and secret key; unregistered when the
    /// returned guard (kept in the connection's extensions) drops with the connection.
    pub fn register(self: &Arc<Self>, pid: i32, key: &SecretKey, session: &Arc<Session>) -> Registration {
        let k = (pid, key.to_bytes());
        self.map.lock().expect("sessions lock").insert(k.clone(), Arc::downgrade(session));
        Registration { sessions: Arc::downgrade(self), key: k }
    }

    /// A CancelRequest: stop that connection's running query. An unknown pid or a wrong key
    /// does nothing, as in PostgreSQL (the request gets no answer either way).
    pub fn cancel(&self, pid: i32, key: &SecretKey) {
        let session = self.map.lock().expect("sessions lock").get(&(pid, key.to_bytes())).and_then(Weak::upgrade);
        match session {
            Some(s) => s.cancel(),
            None => tracing::debug!(pid, "cancel request for no current connection"),
        }
    }

    /// Connections registered now (tests, logs).
    pub fn len(&self) -> usize {
        self.map.lock().expect("sessions lock").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's entry in [`Sessions`].
pub struct Registration {
    sessions: Weak<Sessions>,
    key: Key,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.upgrade() {
            s.map.lock().expect("sessions lock").remove(&self.key);
        }
    }
}
