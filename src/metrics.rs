//! Prometheus metrics, on their own listener (`metrics.listen`), in the text exposition format.
//!
//! Counters and histograms are updated where things happen; gauges that describe current state
//! (pending approvals, velocity used per window, node connection, audit chain length) are read
//! from Warden's state when `/metrics` is scraped, so they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: String,
    tag: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Per-channel gauges, rebuilt at every scrape so a closed channel's series goes away.
struct ChannelGauges {
    capacity: Family<ChannelLabels, Gauge>,
    local: Family<ChannelLabels, Gauge>,
    remote: Family<ChannelLabels, Gauge>,
    offered: Family<ChannelLabels, Gauge>,
    offered_msat: Family<ChannelLabels, Gauge>,
    by_state: Family<StateLabel, Gauge>,
    local_total: Gauge,
    capacity_total: Gauge,
    in_flight_total: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

/// Warden's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    decisions: Family<DecisionLabels, Counter>,
    approved_msat: Counter,
    hsmd_requests: Family<NameLabel, Histogram, fn() -> Histogram>,
    stages: Family<NameLabel, Histogram, fn() -> Histogram>,
    hsm_ops: Family<NameLabel, Histogram, fn() -> Histogram>,
    hsm_errors: Family<NameLabel, Counter>,
    auth_failures: Counter,
    store_unavailable: Counter,
    pending: Gauge,
    node_connected: Gauge,
    audit_records: Gauge,
    state_commits: Gauge,
    store_seconds: Family<NameLabel, Gauge<f64, AtomicU64>>,
    store_ops: Family<NameLabel, Gauge>,
    velocity_used: Family<NameLabel, Gauge<f64, AtomicU64>>,
    channels: ChannelGauges,
    ha_role: Family<NameLabel, Gauge>,
    ha_epoch: Gauge,
    ha_lease_age: Gauge<f64, AtomicU64>,
    fleet_members: Family<StateLabel, Gauge>,
    fleet_frozen: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("warden");
        let decisions = Family::<DecisionLabels, Counter>::default();
        r.register(
            "decisions",
            "Payment decisions by outcome (approve, hold, deny) and deciding rule tag",
            decisions.clone(),
        );
        let approved_msat = Counter::default();
        r.register(
            "approved_msat",
            "Amount of the payments and on-chain spends approved, msat (volume per hour or day: increase over the range)",
            approved_msat.clone(),
        );
        let hsmd_requests = Family::<NameLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        r.register(
            "hsmd_request_seconds",
            "Time to answer a request from the node, by message",
            hsmd_requests.clone(),
        );
        let stages = Family::<NameLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        r.register(
            "request_stage_seconds",
            "Where a request's time goes: vls (VLS's handler, Warden's decision included), decide (Warden's policy, approvals and audit records), commit (the one durable commit: write, flush, fsync)",
            stages.clone(),
        );
        let hsm_ops = Family::<NameLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        r.register(
            "hsm_operation_seconds",
            "HSM operation latency, by operation",
            hsm_ops.clone(),
        );
        let hsm_errors = Family::<NameLabel, Counter>::default();
        r.register(
            "hsm_errors",
            "HSM operations that failed, by operation",
            hsm_errors.clone(),
        );
        let auth_failures = Counter::default();
        r.register(
            "admin_auth_failures",
            "Failed admin API TLS handshakes",
            auth_failures.clone(),
        );
        let store_unavailable = Counter::default();
        r.register(
            "store_unavailable",
            "Times the state database could not be reached or was passing through a state to wait out (starting, shutting down, a replica, out of connections)",
            store_unavailable.clone(),
        );
        let pending = Gauge::default();
        r.register(
            "pending_approvals",
            "Payments waiting for a quorum",
            pending.clone(),
        );
        let node_connected = Gauge::default();
        r.register(
            "node_connected",
            "1 while the node's hsmd stream is connected",
            node_connected.clone(),
        );
        let audit_records = Gauge::default();
        r.register(
            "audit_chain_length",
            "Records in the audit log",
            audit_records.clone(),
        );
        let state_commits = Gauge::default();
        r.register(
            "state_commits",
            "Durable commits of the state database since wardend started (one per request that changes state)",
            state_commits.clone(),
        );
        let store_seconds = Family::<NameLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "store_step_seconds",
            "Total time the state database spent in each step (sled: write, flush, fsync; PostgreSQL: commit, read)",
            store_seconds.clone(),
        );
        let store_ops = Family::<NameLabel, Gauge>::default();
        r.register(
            "store_step_count",
            "How often each step of the state database ran",
            store_ops.clone(),
        );
        let velocity_used = Family::<NameLabel, Gauge<f64, AtomicU64>>::default();
        r.register(
            "velocity_used_ratio",
            "Amount used in each rolling window as a fraction of its limit, by rule tag",
            velocity_used.clone(),
        );
        let channels = ChannelGauges {
            capacity: Family::default(),
            local: Family::default(),
            remote: Family::default(),
            offered: Family::default(),
            offered_msat: Family::default(),
            by_state: Family::default(),
            local_total: Gauge::default(),
            capacity_total: Gauge::default(),
            in_flight_total: Gauge::default(),
        };
        r.register(
            "channel_capacity_msat",
            "Each channel's capacity, from the signer's state",
            channels.capacity.clone(),
        );
        r.register(
            "channel_local_msat",
            "Each channel's outbound balance (ours) in the commitments VLS validated",
            channels.local.clone(),
        );
        r.register(
            "channel_remote_msat",
            "Each channel's inbound balance (the peer's): capacity less ours and what is in flight",
            channels.remote.clone(),
        );
        r.register(
            "channel_offered_htlcs",
            "Outgoing HTLCs in flight in each channel",
            channels.offered.clone(),
        );
        r.register(
            "channel_offered_msat",
            "msat in the outgoing HTLCs in flight in each channel",
            channels.offered_msat.clone(),
        );
        r.register(
            "channels",
            "Channels by state (stub, unconfirmed, open, closing, refused: a funding Warden refused to sign)",
            channels.by_state.clone(),
        );
        r.register(
            "channels_local_msat",
            "Outbound balance across channels not closing",
            channels.local_total.clone(),
        );
        r.register(
            "channels_capacity_msat",
            "Capacity across channels not closing",
            channels.capacity_total.clone(),
        );
        r.register(
            "channels_in_flight_msat",
            "msat in outgoing HTLCs across all channels",
            channels.in_flight_total.clone(),
        );
        let ha_role = Family::<NameLabel, Gauge>::default();
        r.register(
            "ha_role",
            "1 for this wardend's role on a database shared for failover (active, standby, deposed); absent on sled",
            ha_role.clone(),
        );
        let ha_epoch = Gauge::default();
        r.register(
            "ha_epoch",
            "The lease epoch: this wardend's own while active, the active one's while standby",
            ha_epoch.clone(),
        );
        let ha_lease_age = Gauge::<f64, AtomicU64>::default();
        r.register(
            "ha_lease_age_seconds",
            "Since the lease was last renewed (by this wardend while active, by the active one while standby)",
            ha_lease_age.clone(),
        );
        let fleet_members = Family::<StateLabel, Gauge>::default();
        r.register(
            "fleet_members",
            "In a fleet: its members by standing (serving, not-joined, removed, other-node); absent outside a fleet",
            fleet_members.clone(),
        );
        let fleet_frozen = Gauge::default();
        r.register(
            "fleet_frozen",
            "In a fleet: 1 while a freeze stops every member, 0 otherwise; absent outside a fleet",
            fleet_frozen.clone(),
        );
        Metrics {
            fleet_members,
            fleet_frozen,
            ha_role,
            ha_epoch,
            ha_lease_age,
            channels,
            registry: Mutex::new(r),
            decisions,
            approved_msat,
            hsmd_requests,
            stages,
            hsm_ops,
            hsm_errors,
            auth_failures,
            store_unavailable,
            pending,
            node_connected,
            audit_records,
            state_commits,
            store_seconds,
            store_ops,
            velocity_used,
        }
    }
}

impl Metrics {
    /// A decision: outcome "approve", "hold" or "deny", with the tags that decided it.
    pub fn decision(&self, outcome: &str, tags: &[String]) {
        if tags.is_empty() {
            self.decisions
                .get_or_create(&DecisionLabels {
                    outcome: outcome.into(),
                    tag: String::new(),
                })
                .inc();
        }
        for t in tags {
            self.decisions
                .get_or_create(&DecisionLabels {
                    outcome: outcome.into(),
                    tag: t.clone(),
                })
                .inc();
        }
    }

    /// A payment or spend of `amount_msat` was approved.
    pub fn approved(&self, amount_msat: u64) {
        self.approved_msat.inc_by(amount_msat);
    }

    /// The node asked `name` and got an answer after `secs`.
    pub fn hsmd_request(&self, name: &str, secs: f64) {
        self.hsmd_requests
            .get_or_create(&NameLabel { name: name.into() })
            .observe(secs);
    }

    /// One stage of a request took `secs` (see the metric's help).
    pub fn stage(&self, name: &str, secs: f64) {
        self.stages
            .get_or_create(&NameLabel { name: name.into() })
            .observe(secs);
    }

    /// An HSM operation took `secs`; `ok` says whether it succeeded.
    pub fn hsm_op(&self, op: &str, secs: f64, ok: bool) {
        self.hsm_ops
            .get_or_create(&NameLabel { name: op.into() })
            .observe(secs);
        if !ok {
            self.hsm_errors
                .get_or_create(&NameLabel { name: op.into() })
                .inc();
        }
    }

    /// A failed admin handshake.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// The state database was found unavailable (and is being waited out).
    pub fn store_unavailable(&self) {
        self.store_unavailable.inc();
    }

    /// Render with current gauges.
    pub fn render(&self, now: &Gauges<'_>) -> String {
        let Gauges {
            pending,
            node_connected,
            audit_records,
            velocity,
            state_commits,
            store,
            channels,
            lease,
            fleet,
        } = *now;
        self.render_channels(channels);
        if let Some(f) = fleet {
            for standing in crate::core::Standing::ALL {
                let n = f.members.iter().filter(|m| m.standing == standing).count();
                self.fleet_members
                    .get_or_create(&StateLabel {
                        state: standing.as_str().into(),
                    })
                    .set(n as i64);
            }
            self.fleet_frozen.set(i64::from(f.frozen));
        }
        if let Some(l) = lease {
            use crate::store::Role;
            for role in [Role::Active, Role::Standby, Role::Deposed] {
                self.ha_role
                    .get_or_create(&NameLabel {
                        name: role.name().into(),
                    })
                    .set(i64::from(role == l.role));
            }
            self.ha_epoch.set(l.epoch as i64);
            self.ha_lease_age.set(l.age_secs);
        }
        self.state_commits.set(state_commits as i64);
        for t in store {
            self.store_seconds
                .get_or_create(&NameLabel {
                    name: t.step.into(),
                })
                .set(t.nanos as f64 / 1e9);
            self.store_ops
                .get_or_create(&NameLabel {
                    name: t.step.into(),
                })
                .set(t.count as i64);
        }
        self.pending.set(pending as i64);
        self.node_connected.set(i64::from(node_connected));
        self.audit_records.set(audit_records as i64);
        for (tag, used) in velocity {
            self.velocity_used
                .get_or_create(&NameLabel { name: tag.clone() })
                .set(*used);
        }
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// What the gauges read at a scrape.
#[derive(Debug, Clone, Copy)]
pub struct Gauges<'a> {
    /// Approval requests waiting.
    pub pending: u64,
    /// Whether the node's hsmd stream is up.
    pub node_connected: bool,
    /// Records in the audit log.
    pub audit_records: u64,
    /// Each window's use as a fraction of its limit, by rule tag.
    pub velocity: &'a [(String, f64)],
    /// Durable commits since start.
    pub state_commits: u64,
    /// The store's step timings.
    pub store: &'a [crate::store::Timing],
    /// The channels, from the signer's state.
    pub channels: &'a [crate::policy::channels::ChannelView],
    /// The lease, on a database shared for failover.
    pub lease: Option<LeaseView>,
    /// The fleet, on a fleet member.
    pub fleet: Option<&'a crate::core::FleetView>,
}

/// The lease as a scrape shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseView {
    /// This wardend's role.
    pub role: crate::store::Role,
    /// The epoch (ours while active, the active one's while standby).
    pub epoch: u64,
    /// Seconds since the last renewal.
    pub age_secs: f64,
}

impl Metrics {
    fn render_channels(&self, channels: &[crate::policy::channels::ChannelView]) {
        let g = &self.channels;
        for f in [
            &g.capacity,
            &g.local,
            &g.remote,
            &g.offered,
            &g.offered_msat,
        ] {
            f.clear();
        }
        g.by_state.clear();
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (mut local, mut capacity, mut flight) = (0u64, 0u64, 0u64);
        for state in ["stub", "unconfirmed", "open", "closing", "refused"] {
            g.by_state
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(0);
        }
        for c in channels {
            let l = ChannelLabels {
                channel: c.id.clone(),
                peer: c.peer.clone().unwrap_or_default(),
            };
            g.capacity.get_or_create(&l).set(gauge(c.capacity_msat));
            g.local.get_or_create(&l).set(gauge(c.local_msat));
            g.remote.get_or_create(&l).set(gauge(c.remote_msat));
            g.offered.get_or_create(&l).set(i64::from(c.offered_htlcs));
            g.offered_msat.get_or_create(&l).set(gauge(c.offered_msat));
            g.by_state
                .get_or_create(&StateLabel {
                    state: c.phase.as_str().into(),
                })
                .inc();
            flight = flight.saturating_add(c.offered_msat);
            if c.phase.counts() {
                local = local.saturating_add(c.local_msat);
                capacity = capacity.saturating_add(c.capacity_msat);
            }
        }
        g.local_total.set(gauge(local));
        g.capacity_total.set(gauge(capacity));
        g.in_flight_total.set(gauge(flight));
    }
}

/// Serve `/metrics` on `listener` until `shutdown` resolves (HTTP/1.1 on hyper; anything
/// but `GET /metrics` is a 404). A scraper that connects and says nothing is dropped after
/// 5 s, and connections still open at shutdown are ended.
pub async fn serve(
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Method, Response, StatusCode};
    tokio::pin!(shutdown);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (sock, _) = tokio::select! {
            a = listener.accept() => match a { Ok(x) => x, Err(_) => continue },
            _ = &mut shutdown => break,
        };
        let render = render.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let ok = req.method() == Method::GET && req.uri().path() == "/metrics";
                    let resp = if ok {
                        // Rendering reads the signer's channels (VLS's locks): off the runtime.
                        let body = tokio::task::spawn_blocking(render)
                            .await
                            .unwrap_or_default();
                        Response::builder()
                            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(body)))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .header("Content-Type", "text/plain")
                            .body(Full::new(Bytes::from_static(
                                b"only /metrics is served here\n",
                            )))
                    };
                    Ok::<_, std::convert::Infallible>(resp.expect("a valid response"))
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(5))
            .serve_connection(hyper_util::rt::TokioIo::new(sock), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
}

/// The HSM as the audit log's checkpoint signer, with its latency and errors measured.
pub struct MeteredHsm {
    /// The HSM.
    pub hsm: crate::hsm::Hsm,
    /// Where to count.
    pub metrics: std::sync::Arc<Metrics>,
}

impl crate::audit::CheckpointSigner for MeteredHsm {
    fn sign(
        &self,
        digest: &[u8; 32],
    ) -> Result<lightning_signer::bitcoin::secp256k1::ecdsa::Signature, String> {
        let t = std::time::Instant::now();
        let r = self.hsm.sign_digest(digest).map_err(|e| e.to_string());
        self.metrics
            .hsm_op("sign", t.elapsed().as_secs_f64(), r.is_ok());
        r
    }

    fn public_key(&self) -> Result<lightning_signer::bitcoin::secp256k1::PublicKey, String> {
        let t = std::time::Instant::now();
        let r = self.hsm.audit_public_key().map_err(|e| e.to_string());
        self.metrics
            .hsm_op("public_key", t.elapsed().as_secs_f64(), r.is_ok());
        r
    }

    fn anchor(&self) -> Result<Option<crate::hsm::AuditAnchor>, String> {
        let t = std::time::Instant::now();
        let r = self.hsm.audit_anchor().map_err(|e| e.to_string());
        self.metrics
            .hsm_op("read_anchor", t.elapsed().as_secs_f64(), r.is_ok());
        r
    }

    fn advance_anchor(&self, anchor: &crate::hsm::AuditAnchor) -> Result<(), String> {
        let t = std::time::Instant::now();
        let r = self
            .hsm
            .advance_audit_anchor(anchor)
            .map_err(|e| e.to_string());
        self.metrics
            .hsm_op("advance_anchor", t.elapsed().as_secs_f64(), r.is_ok());
        r
    }

    fn policy_anchor(&self) -> Result<Option<crate::hsm::PolicyAnchor>, String> {
        let t = std::time::Instant::now();
        let r = self.hsm.policy_anchor().map_err(|e| e.to_string());
        self.metrics
            .hsm_op("read_policy_anchor", t.elapsed().as_secs_f64(), r.is_ok());
        r
    }

    fn advance_policy_anchor(&self, anchor: &crate::hsm::PolicyAnchor) -> Result<(), String> {
        let t = std::time::Instant::now();
        let r = self
            .hsm
            .advance_policy_anchor(anchor)
            .map_err(|e| e.to_string());
        self.metrics.hsm_op(
            "advance_policy_anchor",
            t.elapsed().as_secs_f64(),
            r.is_ok(),
        );
        r
    }
}
