//! The event stream: what admins watch (`wardenctl watch`, `WatchEvents`) and what alerts are
//! made of. Publishing never blocks the signer: a subscriber that falls behind loses the oldest
//! events and is told how many it missed.

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A payment was held for a quorum.
    RequestCreated,
    /// An admin signed a request (quorum not yet reached).
    RequestSigned,
    /// A request reached its quorum.
    RequestApproved,
    /// A request was rejected.
    RequestRejected,
    /// A request expired unapproved.
    RequestExpired,
    /// A payment was approved by the signer.
    PaymentApproved,
    /// A payment was refused; the tags say by which rules.
    PaymentRefused,
    /// A velocity window passed its warning threshold, or a warn-mode rule matched.
    LimitWarning,
    /// The HSM failed or recovered.
    Hsm,
    /// The node connected or disconnected.
    NodeConnection,
    /// Repeated admin API authentication failures.
    AuthFailure,
    /// The policy changed.
    Policy,
    /// The system clock stepped back or jumped forward.
    Clock,
    /// The signer was frozen, or the freeze was lifted.
    Freeze,
    /// A recovery action was started, cancelled or executed.
    Recovery,
    /// A channel open was refused by `[channels]`, a channel started closing, or a channel's
    /// outbound liquidity fell below the policy's alert level.
    Channel,
    /// This wardend took the lease of a database shared for failover (it is the active one now).
    Role,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Increasing sequence number within this process.
    pub seq: u64,
    /// Unix time.
    pub time: u64,
    /// What happened.
    pub kind: EventKind,
    /// The approval request concerned, if any.
    pub request_id: String,
    /// Rule tags involved.
    pub tags: Vec<String>,
    /// A sentence for people.
    pub message: String,
    /// The amount concerned, msat.
    pub amount_msat: u64,
}

impl Event {
    /// An event not yet numbered (the bus numbers it when it is published).
    fn new(
        time: u64,
        kind: EventKind,
        request_id: &str,
        tags: &[String],
        message: String,
        amount_msat: u64,
    ) -> Self {
        Event {
            seq: 0,
            time,
            kind,
            request_id: request_id.to_string(),
            tags: tags.to_vec(),
            message,
            amount_msat,
        }
    }
}

/// Fan-out of events to every subscriber, and into the audit log when one is attached.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    seq: AtomicU64,
    audit: Option<std::sync::Arc<crate::audit::AuditLog>>,
}

impl EventKind {
    /// The name used in logs, audit records and webhooks.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::RequestCreated => "request-created",
            EventKind::RequestSigned => "request-signed",
            EventKind::RequestApproved => "request-approved",
            EventKind::RequestRejected => "request-rejected",
            EventKind::RequestExpired => "request-expired",
            EventKind::PaymentApproved => "payment-approved",
            EventKind::PaymentRefused => "payment-refused",
            EventKind::LimitWarning => "limit-warning",
            EventKind::Hsm => "hsm",
            EventKind::NodeConnection => "node-connection",
            EventKind::AuthFailure => "auth-failure",
            EventKind::Policy => "policy",
            EventKind::Clock => "clock",
            EventKind::Freeze => "freeze",
            EventKind::Recovery => "recovery",
            EventKind::Channel => "channel",
            EventKind::Role => "role",
        }
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(1_024)
    }
}

impl EventBus {
    /// A bus keeping up to `capacity` undelivered events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity);
        EventBus {
            tx,
            seq: AtomicU64::new(1),
            audit: None,
        }
    }

    /// A bus that records every event in `audit`, in the transaction of the request that
    /// raises it, and delivers it only once that transaction commits.
    pub fn recording(audit: std::sync::Arc<crate::audit::AuditLog>) -> Self {
        EventBus {
            audit: Some(audit),
            ..Self::default()
        }
    }

    /// Publish an event; returns it with its sequence number.
    pub fn emit(
        &self,
        time: u64,
        kind: EventKind,
        request_id: &str,
        tags: &[String],
        message: String,
        amount_msat: u64,
    ) -> Event {
        let event = Event::new(time, kind, request_id, tags, message, amount_msat);
        self.publish(event, true)
    }

    /// Publish an event whose content is already in the audit log (a decision's own record
    /// names its verdict, tags, warnings and amount): delivered like [`EventBus::emit`], after
    /// the request commits, but not recorded a second time.
    pub fn announce(
        &self,
        time: u64,
        kind: EventKind,
        request_id: &str,
        tags: &[String],
        message: String,
        amount_msat: u64,
    ) -> Event {
        let event = Event::new(time, kind, request_id, tags, message, amount_msat);
        self.publish(event, false)
    }

    fn publish(&self, mut event: Event, record: bool) -> Event {
        event.seq = self.seq.fetch_add(1, Ordering::SeqCst);
        // No subscriber is not an error: events are also in the logs and the audit log.
        let tx = self.tx.clone();
        let out = event.clone();
        // Logged when delivered: once its request's commit is durable, never for a request that
        // was not committed (a deposed or failed wardend decided nothing).
        let log = |event: &Event| tracing::info!(kind = ?event.kind, request = %event.request_id, tags = ?event.tags, "{}", event.message);
        match &self.audit {
            Some(audit) => {
                if record {
                    let data = serde_json::json!({
                        "event": event.kind.name(),
                        "request_id": event.request_id,
                        "tags": event.tags,
                        "message": event.message,
                        "amount_msat": event.amount_msat,
                    });
                    // In the request's transaction: recorded and delivered only if it commits.
                    if let Err(e) = audit.append(event.time, "event", data) {
                        tracing::error!(error = %e, "could not record an event in the audit log");
                    }
                }
                audit.store().after_commit(move || {
                    log(&event);
                    let _ = tx.send(event);
                });
            }
            None => {
                log(&event);
                let _ = tx.send(event);
            }
        }
        out
    }

    /// A new subscription, starting with the next event.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
