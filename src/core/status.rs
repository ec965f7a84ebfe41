//! The status view of the core: window use, the node connection and the Prometheus
//! exposition. Read-only: it sees committed state and the in-memory windows, and writes nothing.

use super::Core;
use crate::policy::{LedgerKey, LimitScope};

/// Whether the node's hsmd stream is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeConnection {
    /// wardend does not serve a node (tests, the admin API alone).
    NotConfigured,
    /// The stream to the node is open.
    Connected,
    /// The node cannot be reached, or its stream ended.
    Disconnected,
}

impl NodeConnection {
    /// The name in status replies and `wardenctl status`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeConnection::NotConfigured => "not configured",
            NodeConnection::Connected => "connected",
            NodeConnection::Disconnected => "disconnected",
        }
    }
}

/// One rolling window's use, for status, metrics and alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowUse {
    /// The limit's tag.
    pub tag: String,
    /// Window length, seconds.
    pub window_secs: u64,
    /// "node", "listed destinations" or "busiest destination".
    pub scope: &'static str,
    /// Msat used.
    pub used_msat: u64,
    /// The amount limit, if any.
    pub limit_msat: Option<u64>,
    /// Payments counted.
    pub used_count: u64,
    /// The count limit, if any.
    pub limit_count: Option<u64>,
}

impl WindowUse {
    /// The larger of the amount and count fractions used.
    pub fn fraction(&self) -> f64 {
        let a = self
            .limit_msat
            .filter(|l| *l > 0)
            .map(|l| self.used_msat as f64 / l as f64)
            .unwrap_or(0.0);
        let c = self
            .limit_count
            .filter(|l| *l > 0)
            .map(|l| self.used_count as f64 / l as f64)
            .unwrap_or(0.0);
        a.max(c)
    }
}

impl Core {
    /// Bring memory up to what every fleet member committed (for a report, a timer; a
    /// decision does this itself). It takes the fleet's lock for a moment. A read that fails
    /// leaves memory as it was, which can only show less than the fleet spent: logged.
    pub fn refresh_shared(&self) {
        if !self.store.is_fleet() {
            return;
        }
        let r = self.store.write(|| {
            let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
            self.sync_fleet(&mut engine)
                .map_err(|detail| crate::store::StoreError::Unavailable { detail })
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot read the fleet's shared state; the report shows this member's last copy");
        }
    }

    /// Every rolling window's use at `now`. With `all_destinations`, per-destination limits
    /// report their busiest destination (a scan of every destination ledger).
    pub fn window_usage(&self, now: u64, all_destinations: bool) -> Vec<WindowUse> {
        self.with_engine(|engine| {
            let state = engine.state();
            engine
                .policy()
                .limits
                .iter()
                .filter_map(|l| {
                    let w = l.window_secs?;
                    let (scope, totals) = match &l.scope {
                        LimitScope::Node => ("node", state.totals(&LedgerKey::Node, now, w)),
                        LimitScope::Fleet => ("fleet", state.spent(&LedgerKey::Fleet, now, w)),
                        LimitScope::Destinations(_) => (
                            "listed destinations",
                            state.totals(&LedgerKey::Group(l.tag.clone()), now, w),
                        ),
                        LimitScope::EachDestination if all_destinations => (
                            "busiest destination",
                            state
                                .ledgers()
                                .filter(|(k, _)| matches!(k, LedgerKey::Destination(_)))
                                .map(|(_, ledger)| ledger.totals(now, w))
                                .max_by_key(|t| t.amount_msat)
                                .unwrap_or_default(),
                        ),
                        LimitScope::EachDestination => return None,
                    };
                    Some(WindowUse {
                        tag: l.tag.clone(),
                        window_secs: w,
                        scope,
                        used_msat: u64::try_from(totals.amount_msat).unwrap_or(u64::MAX),
                        limit_msat: l.max_amount_msat,
                        used_count: totals.count,
                        limit_count: l.max_count,
                    })
                })
                .collect()
        })
    }

    /// In a fleet: its name, this member, and the members the policy in force admits.
    pub fn fleet_line(&self) -> String {
        let Some((fleet, member)) = self
            .fleet_member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return String::new();
        };
        let admitted: Vec<String> = self.policy().policy.fleet_members.keys().cloned().collect();
        format!(
            "{fleet}: member {member} of {} admitted ({})",
            admitted.len(),
            admitted.join(", ")
        )
    }

    /// In a fleet: every member the policy in force admits or the database has bound, each
    /// with its standing, for `wardenctl fleet` and the metrics. `None` outside a fleet. The
    /// policy and freezes are this member's copy: call [`Core::refresh_shared`] first.
    pub fn fleet(&self) -> Result<Option<FleetView>, crate::store::StoreError> {
        let Some((fleet, me)) = self
            .fleet_member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return Ok(None);
        };
        let admitted = self.policy().policy.fleet_members.clone();
        let bound = self.store.fleet_members()?;
        let freezes = crate::recovery::FreezeStore::new(&self.store);
        let mut names: std::collections::BTreeSet<String> = admitted.keys().cloned().collect();
        names.extend(bound.iter().map(|m| m.name.clone()));
        let mut members = Vec::new();
        for name in names {
            let row = bound.iter().find(|m| m.name == name);
            let standing = match (admitted.get(&name), row) {
                (Some(node), Some(r)) if *node == r.node_id => Standing::Serving,
                (Some(_), Some(_)) => Standing::OtherNode,
                (Some(_), None) => Standing::NotJoined,
                (None, _) => Standing::Removed,
            };
            members.push(FleetMemberView {
                node_id: row
                    .map(|r| r.node_id.clone())
                    .or_else(|| admitted.get(&name).cloned())
                    .unwrap_or_default(),
                seed_id: row.map(|r| r.seed_id.clone()),
                joined_at: row.map(|r| r.joined_at),
                seen_at: row.map(|r| r.seen_at),
                standing,
                frozen_alone: freezes.get_at(Some(&name))?.is_some(),
                this: name == me,
                name,
            });
        }
        Ok(Some(FleetView {
            name: fleet,
            frozen: freezes.get()?.is_some(),
            members,
        }))
    }

    /// The node connection's state.
    pub fn connection(&self) -> NodeConnection {
        *self
            .node_connection
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The Prometheus exposition, with current gauges.
    pub fn render_metrics(&self) -> String {
        let now = self.clock.now();
        self.refresh_shared();
        let pending = self
            .approvals
            .list_pending(now)
            .map(|l| l.len() as u64)
            .unwrap_or(0);
        let connected = self.connection() == NodeConnection::Connected;
        let audit = self.audit().len();
        let fleet = self.fleet().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list the fleet's members for the metrics");
            None
        });
        let usage: Vec<(String, f64)> = self
            .window_usage(now, true)
            .iter()
            .map(|w| (w.tag.clone(), w.fraction()))
            .collect();
        self.metrics.render(&crate::metrics::Gauges {
            pending,
            node_connected: connected,
            audit_records: audit,
            velocity: &usage,
            state_commits: self.store().commits(),
            store: &self.store().timings(),
            channels: &self.channels(),
            lease: self.store().lease().map(|l| crate::metrics::LeaseView {
                role: l.role,
                epoch: l.epoch,
                age_secs: l.renewed_ago.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            }),
            fleet: fleet.as_ref(),
        })
    }
}

/// A fleet as one of its members sees it (`wardenctl fleet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    /// The fleet's name.
    pub name: String,
    /// Whether a freeze of the whole fleet is in force.
    pub frozen: bool,
    /// Every member admitted or bound, by name.
    pub members: Vec<FleetMemberView>,
}

/// One member of a fleet: what the policy admits and what the database binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetMemberView {
    /// Its name.
    pub name: String,
    /// The node id it is bound to (or, not joined yet, the one the policy admits).
    pub node_id: String,
    /// The seed it is bound to, once joined.
    pub seed_id: Option<String>,
    /// When it first joined.
    pub joined_at: Option<u64>,
    /// When it last started.
    pub seen_at: Option<u64>,
    /// Whether it may serve.
    pub standing: Standing,
    /// Whether a freeze of this member alone is in force.
    pub frozen_alone: bool,
    /// Whether it is the wardend answering.
    pub this: bool,
}

/// Whether a member may serve, from the policy's `[fleet.members]` and the database's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Admitted, and bound to the node the policy admits.
    Serving,
    /// Admitted, and no wardend has joined under the name yet.
    NotJoined,
    /// Bound, and the policy in force no longer admits it: it refuses every request.
    Removed,
    /// Admitted as one node and bound to another: it cannot start until the policy or the
    /// binding agrees.
    OtherNode,
}

impl Standing {
    /// How `wardenctl fleet` and the metrics spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Serving => "serving",
            Standing::NotJoined => "not-joined",
            Standing::Removed => "removed",
            Standing::OtherNode => "other-node",
        }
    }

    /// Every standing, for gauges that report each (zero included).
    pub const ALL: [Standing; 4] = [
        Standing::Serving,
        Standing::NotJoined,
        Standing::Removed,
        Standing::OtherNode,
    ];
}
