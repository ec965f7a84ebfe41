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
                        LimitScope::Fleet => ("fleet", state.totals(&LedgerKey::Fleet, now, w)),
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
        })
    }
}
