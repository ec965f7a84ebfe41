//! wardend: the signer daemon. It logs into the HSM, unseals the node seed into zeroizing
//! memory, loads the policy and its state, and serves admins (and, through the signer, the
//! node). Configuration comes from a TOML file, the environment (WARDEN_*), and flags, in
//! rising order of precedence; the HSM PIN is never a flag.

use anyhow::Context;
use clap::Parser;
use std::sync::Arc;
use warden::approval::ApprovalConfig;
use warden::clock::SystemClock;
use warden::config::StoreConfig;
use warden::config::{AdminTls, ConfigArgs};
use warden::core::{Core, GovernanceError, LoadedPolicy, PolicyFile};
use warden::governance::{PolicyHistory, PolicyVersion};
use warden::hsm::Hsm;
use warden::policy::{load_policy_file_for, parse_policy_for, DEFAULT_POLICY};
use warden::store::postgres::{LeaseRow, PgBackend};
use warden::store::Store;

/// Warden's signer daemon: an HSM-backed, validating Lightning signer.
///
/// Every option can also be set in the configuration file (see README.md, "Configuration")
/// or through the environment variable shown beside it.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    /// Log filter, e.g. "info" or "warden=debug" (also RUST_LOG)
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = args.config.resolve()?;

    // The file on disk (or the embedded default) is only a proposal: the policy in force is the
    // one the state database says the governance quorum last approved. Read it now, judge it
    // once the database is open.
    let file_policy = read_policy_file(&config);

    // Before the seed is unsealed: no core dump, no swap, no other process reading our memory.
    let hardening = warden::hardening::protect_process();
    if !hardening.no_core_dumps {
        tracing::warn!("could not turn core dumps off; the seed could reach a core file");
    }
    if let Err(why) = &hardening.memory_locked {
        tracing::warn!(
            "memory is not locked into RAM, so pages holding keys may be swapped: {why}"
        );
    }
    let hsm = Hsm::open(&config.hsm)?;
    let loaded_seed = hsm.load_seed(&config.data_dir, config.network)?;
    let node_id = warden::signer::node_id(&loaded_seed.seed, config.network);
    let audit_key = hsm.audit_public_key()?;

    // Signal handlers go in before anything is printed: a supervisor that sends SIGTERM as soon
    // as it reads a line must get a clean shutdown, not the default signal death.
    let shutdown = shutdown_signals();
    tokio::pin!(shutdown);
    let metrics = Arc::new(warden::metrics::Metrics::default());
    // Bound now, so a standby answers scrapes (its role, the active one's epoch) while it waits.
    let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on metrics.listen {}", config.metrics_listen))?;
    let metrics_addr = metrics_listener.local_addr()?;
    let serving: Arc<std::sync::OnceLock<Arc<Core>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let standby_view: Arc<std::sync::Mutex<Option<LeaseRow>>> = Arc::default();
    {
        let mut rx = stop_rx.clone();
        let (serving, metrics, standby_view) =
            (serving.clone(), metrics.clone(), standby_view.clone());
        tokio::spawn(warden::metrics::serve(
            move || match serving.get() {
                Some(core) => core.render_metrics(),
                None => standby_metrics(&metrics, &standby_view),
            },
            metrics_listener,
            async move {
                let _ = rx.changed().await;
            },
        ));
    }

    let (store, pg) = match &config.store {
        StoreConfig::Local(backend) => {
            if let Some(advice) = backend.advice() {
                tracing::info!("{advice}");
            }
            (
                Store::open_local(&config.data_dir.join("state"), *backend)?,
                None,
            )
        }
        StoreConfig::Postgres(settings) => {
            let Some(pg) = open_waiting(settings.clone(), &metrics, &mut shutdown).await? else {
                tracing::info!("wardend stopping (the state database never became available)");
                let _ = stop_tx.send(true);
                return Ok(());
            };
            let pg = Arc::new(pg);
            // A fleet member serves only as the node and seed its name is bound to: checked
            // before it even waits as a standby.
            if let Some(f) = &pg.settings().fleet {
                pg.join_fleet(
                    &node_id.to_string(),
                    &loaded_seed.binding.seed_id_hex(),
                    false,
                )?;
                tracing::info!(fleet = %f.fleet, member = %f.member, "a member of the fleet");
            }
            let Some(epoch) = wait_for_lease(
                &pg,
                &hsm,
                config.network,
                &standby_view,
                metrics_addr,
                &mut shutdown,
            )
            .await?
            else {
                tracing::info!("wardend stopping (standby)");
                let _ = stop_tx.send(true);
                return Ok(());
            };
            pg.start_renewing();
            pg.on_deposed(|by| {
                // Every commit and every answer already fails (the lease is gone); the stream
                // answers what is in hand as temporary failures, so the node retries them on
                // the new active wardend, then the process ends and its supervisor starts it
                // again as a standby.
                eprintln!("wardend deposed: {by} holds the lease now; exiting with status {EXIT_DEPOSED} in {DEPOSED_GRACE:?}");
                std::thread::spawn(|| {
                    std::thread::sleep(DEPOSED_GRACE);
                    // At once, without running exit handlers: the HSM library's static
                    // destructors must not run under threads still using it.
                    // SAFETY: FFI; _exit(2) takes a status and never returns.
                    unsafe { nix::libc::_exit(EXIT_DEPOSED) }
                });
            });
            tracing::info!(epoch, holder = %pg.settings().holder, "took the lease: this wardend is the active signer");
            (Store::new(pg.clone()), Some((pg, epoch)))
        }
    };
    warden::signer::bind_seed(&store, &loaded_seed.binding)?;
    // Only now, holding the database's lock with the seed's id accepted by the state.
    let seed_upgraded = hsm.upgrade_seed(&config.data_dir, &loaded_seed)?;
    let seed_binding = loaded_seed.binding;
    let seed = loaded_seed.seed;
    // The history must reach the version this token last saw in force, and a state that is not
    // empty is never a first start (the file on disk is only ever a proposal).
    warden::core::check_policy_anchor(&store, hsm.policy_anchor()?.as_ref())
        .map_err(|e| anyhow::anyhow!(e))?;
    let (loaded, file_state) = policy_in_force(&store, &config, file_policy)?;
    if let Some(v) = PolicyHistory::new(&store).in_force()? {
        hsm.advance_policy_anchor(&warden::hsm::PolicyAnchor {
            version: v.seq,
            hash: loaded.policy.hash,
        })?;
    }
    let audit = Arc::new(warden::audit::AuditLog::open(
        &store,
        Arc::new(warden::metrics::MeteredHsm {
            hsm: hsm.clone(),
            metrics: metrics.clone(),
        }),
        warden::audit::AuditConfig::default(),
    )?);
    let core = Arc::new(Core::open(
        store.clone(),
        loaded.clone(),
        ApprovalConfig {
            rejections_needed: config.rejections_needed,
            max_open: config.max_open_requests,
            retention_secs: config.request_retention_secs,
        },
        Arc::new(SystemClock),
        audit.clone(),
        metrics,
    )?);
    *core.node_id.write().unwrap_or_else(|p| p.into_inner()) = node_id.to_string();
    if let Some(f) = pg.as_ref().and_then(|(p, _)| p.settings().fleet.clone()) {
        // Admission is the fleet's policy's to give: a node it does not admit does not serve.
        if let Some(why) = warden::core::admission(&loaded.policy, &f.member, &node_id.to_string())
        {
            anyhow::bail!(
                "{why}. Admit it with a policy change that adds `{} = \"{node_id}\"` to [fleet.members] (a loosening: it takes effect after the governance delay, and any admin can veto it)",
                f.member
            );
        }
        if let Some((pg, _)) = &pg {
            pg.join_fleet(&node_id.to_string(), &seed_binding.seed_id_hex(), true)?;
        }
        core.join_fleet(f.fleet, f.member);
    }
    core.set_policy_file(file_state);
    core.set_max_clock_jump(Some(config.alerts.clock_jump_secs));
    *core
        .window_warn_fraction
        .write()
        .unwrap_or_else(|p| p.into_inner()) = config.alerts.window_warn_fraction;
    audit.append(
        core.clock.now(),
        "start",
        serde_json::json!({
            "node_id": node_id.to_string(),
            "policy_hash": loaded.policy.hash_hex(),
            "version": env!("CARGO_PKG_VERSION"),
            "audit_key": audit_key.to_string(),
            "seed_id": seed_binding.seed_id_hex(),
            "seed_upgraded": seed_upgraded,
            "lease_epoch": pg.as_ref().map(|(_, epoch)| *epoch),
            "holder": pg.as_ref().map(|(p, _)| p.settings().holder.clone()),
            "fleet": pg.as_ref().and_then(|(p, _)| p.settings().fleet.as_ref()).map(|f| serde_json::json!({"name": f.fleet, "member": f.member})),
        }),
    )?;
    if let Some((pg, epoch)) = &pg {
        let previous = standby_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .map(|r| format!("{} (epoch {})", r.holder, r.epoch))
            .unwrap_or_else(|| "nobody".into());
        core.events.emit(
            core.clock.now(),
            warden::events::EventKind::Role,
            "",
            &[warden::tags::TOOK_OVER.to_string()],
            format!(
                "{} took the lease at epoch {epoch} and is the active signer; it was held by {previous}",
                pg.settings().holder
            ),
            0,
        );
    }
    let settings = warden::signer::SignerSettings {
        network: config.network,
        max_invoices: config.max_invoices,
    };
    let filter = warden::signer::vls_filter(&config.vls_filters);
    let init = warden::signer::build_handler(core.clone(), &seed, &store, settings, &filter)?;
    // Kept (zeroizing) only to restore the node after a VLS panic; VLS holds its keys anyway.
    let rebuild: warden::signer::stream::Rebuild = {
        let (core, store, seed, filter) = (
            core.clone(),
            store.clone(),
            seed.duplicate(),
            filter.clone(),
        );
        Arc::new(move || {
            warden::signer::build_handler(core.clone(), &seed, &store, settings, &filter)
                .map_err(|e| e.to_string())
        })
    };
    drop(seed);
    tracing::info!(
        %node_id,
        network = %config.network,
        audit_key = %audit_key,
        policy = %loaded.policy.hash_hex(),
        "wardend started on the sealed seed"
    );

    if let Some(path) = config.policy_file.clone() {
        tokio::spawn(propose_on_sighup(core.clone(), path, config.network));
    }

    let mut admin_task = None;
    let api_tls = match &config.admin_tls {
        AdminTls::Mutual {
            cert,
            key,
            client_ca,
        } => Some(Some(warden::api::tls::server_config(cert, key, client_ca)?)),
        AdminTls::PlaintextLoopback => Some(None),
        AdminTls::Disabled => {
            tracing::warn!("admin API disabled: set admin.tls_cert, admin.tls_key and admin.client_ca to let admins approve payments");
            None
        }
    };
    if let Some(tls) = api_tls {
        let listener = tokio::net::TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("cannot listen on admin.listen {}", config.admin_listen))?;
        let api = warden::api::ApiConfig {
            tls,
            rate_per_minute: config.admin_rate_per_minute,
            burst: config.admin_burst,
            viewers: config.admin_viewers.clone(),
            relays: config.admin_relays.clone(),
            nodes: config.admin_nodes.clone(),
            max_message_bytes: 64 * 1024,
            auth_audit_secs: warden::api::AUTH_AUDIT_SECS,
            max_connections: warden::api::accept::MAX_CONNECTIONS,
            max_connections_per_certificate: warden::api::accept::MAX_CONNECTIONS_PER_CERTIFICATE,
        };
        let mut rx = stop_rx.clone();
        let core = core.clone();
        tracing::info!(listen = %config.admin_listen, "admin API listening (mutual TLS 1.3)");
        admin_task = Some(tokio::spawn(async move {
            warden::api::serve(core, api, listener, async move {
                let _ = rx.changed().await;
            })
            .await
        }));
    }

    let _ = serving.set(core.clone());
    let (seen, alerting) = (core.clone(), core.clone());
    tokio::spawn(warden::alerts::watch_node(
        move || seen.connection() == warden::core::NodeConnection::Connected,
        move |message| {
            alerting.events.emit(
                alerting.clock.now(),
                warden::events::EventKind::NodeConnection,
                "",
                &[warden::tags::NODE_DISCONNECTED.to_string()],
                message,
                0,
            );
        },
        std::time::Duration::from_secs(config.alerts.node_disconnect_secs),
        stop_rx.clone(),
    ));
    if let Some((url, secret_file)) = &config.alerts.webhook {
        let secret = zeroize::Zeroizing::new(std::fs::read(secret_file).with_context(|| {
            format!(
                "reading alerts.webhook_secret_file {}",
                secret_file.display()
            )
        })?);
        let hook = warden::alerts::Webhook::new(
            url,
            zeroize::Zeroizing::new(secret.trim_ascii().to_vec()),
            config.alerts.webhook_ca_file.as_deref(),
        )?;
        tokio::spawn(hook.run(core.events.subscribe()));
        tracing::info!(%url, "alerts are delivered to the webhook");
    }

    let hsmd_uri = format!("http://{}", config.hsmd_address);
    tracing::info!(node = %hsmd_uri, max_invoices = config.max_invoices, "serving the node's hsmd stream");
    // Expiries and the audit tail's checkpoint are due by the clock, not by a request.
    {
        let core = core.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(SWEEP_SECS));
            loop {
                tokio::select! {
                    _ = tick.tick() => {},
                    _ = rx.changed() => break,
                }
                let core = core.clone();
                let sweep = tokio::task::spawn_blocking(move || {
                    let r = core.sweep();
                    // Liquidity and closing alerts, from the channels as the signer holds them.
                    core.watch_channels();
                    r
                });
                if let Ok(Err(e)) = sweep.await {
                    tracing::error!(error = %e, "the periodic sweep could not commit");
                }
            }
        });
    }
    // An HSM that can no longer sign stops approvals within a second: probed four times a
    // second (a session call and a key lookup, well under a millisecond on a local token).
    tokio::spawn(warden::core::health::watch_hsm(
        hsm.clone(),
        core.clone(),
        std::time::Duration::from_millis(250),
        stop_rx.clone(),
    ));
    let signer_task = tokio::spawn(warden::signer::stream::run(
        init,
        core.clone(),
        hsmd_uri,
        stop_rx.clone(),
        rebuild,
    ));

    println!(
        "wardend ready: node id {node_id} ({} network)",
        config.network
    );
    if admin_task.is_some() {
        println!("admin API on {}", config.admin_listen);
    }
    println!("metrics on http://{metrics_addr}/metrics");
    shutdown.await;
    tracing::info!("wardend stopping");
    let _ = stop_tx.send(true);
    let _ = signer_task.await;
    let now = core.clock.now();
    // The stop record and the checkpoint that covers it are one commit.
    if let Err(e) = store.write(|| {
        audit.append(
            now,
            "stop",
            serde_json::json!({"node_id": node_id.to_string()}),
        )?;
        audit.checkpoint(now)
    }) {
        tracing::error!(error = %e, "could not close the audit log with a checkpoint");
    }
    if let Some((pg, _)) = &pg {
        // A standby takes over at once instead of waiting for the lease to run out.
        let pg = pg.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || pg.release()).await? {
            tracing::warn!(error = %e, "could not release the lease; a standby takes over when it expires");
        }
    }
    if let Some(t) = admin_task {
        // Open event streams (wardenctl watch, top) would hold a graceful shutdown forever:
        // give in-flight calls a moment, then close what is left.
        let abort = t.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(3), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    Ok(())
}

/// Seconds between sweeps (expired requests, the audit tail's checkpoint).
const SWEEP_SECS: u64 = 5;

/// The exit status of a wardend whose lease another one took (EX_TEMPFAIL): its supervisor
/// starts it again, as a standby.
const EXIT_DEPOSED: i32 = 75;

/// How long a deposed wardend keeps its node connection to answer what is in hand as temporary
/// failures (so the node retries them on the active wardend) before it exits.
const DEPOSED_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Wait as a standby until the lease is ours (`Some(epoch)`), or a stop signal (`None`).
/// Open the PostgreSQL state, waiting out every state the database passes through (down,
/// starting up, shutting down, a replica, out of connections) with a backoff of up to 10 s,
/// each wait logged and counted (`warden_store_unavailable_total`); `None` if asked to stop
/// meanwhile. A configuration or authentication error is not waited out: it ends wardend with
/// the server's own words.
async fn open_waiting(
    settings: warden::store::postgres::PgSettings,
    metrics: &warden::metrics::Metrics,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<Option<PgBackend>> {
    let mut backoff = std::time::Duration::from_millis(500);
    loop {
        let s = settings.clone();
        match tokio::task::spawn_blocking(move || PgBackend::open(s)).await? {
            Ok(pg) => return Ok(Some(pg)),
            Err(e @ warden::store::StoreError::Unavailable { .. }) => {
                metrics.store_unavailable();
                eprintln!("wardend: the state database is not available ({e}); trying again in {backoff:?}");
                tracing::warn!(error = %e, "the state database is not available; waiting");
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(
                    "opening the PostgreSQL state database (store.url): a configuration or authentication error, not retried; check store.url, the role and its password",
                ))
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.as_mut() => return Ok(None),
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
    }
}

async fn wait_for_lease(
    pg: &Arc<PgBackend>,
    hsm: &Hsm,
    network: lightning_signer::bitcoin::Network,
    view: &Arc<std::sync::Mutex<Option<LeaseRow>>>,
    metrics_addr: std::net::SocketAddr,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
) -> anyhow::Result<Option<u64>> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waiter = {
        let (pg, view, stop, hsm) = (pg.clone(), view.clone(), stop.clone(), hsm.clone());
        tokio::task::spawn_blocking(move || {
            let mut announced = false;
            let store = Store::new(pg.clone());
            let mut followed = std::time::Instant::now() - STANDBY_FOLLOW_EVERY;
            pg.acquire(|row| {
                // While it waits, the standby keeps its own token's anchors up with what the
                // active one signs, so a log or a policy history cut back behind them (to an
                // anchor this token had before) is refused when it takes over.
                if followed.elapsed() >= STANDBY_FOLLOW_EVERY {
                    followed = std::time::Instant::now();
                    follow_active(&store, &hsm, network);
                }
                if let Some(r) = row {
                    if !announced {
                        println!(
                            "wardend standby: {} holds the lease (epoch {}); taking over when it expires",
                            r.holder, r.epoch
                        );
                        println!("standby metrics on http://{metrics_addr}/metrics");
                        tracing::info!(holder = %r.holder, epoch = r.epoch, "standby: waiting for the lease");
                        announced = true;
                    }
                    *view.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
                }
                !stop.load(std::sync::atomic::Ordering::SeqCst)
            })
        })
    };
    tokio::pin!(waiter);
    tokio::select! {
        r = &mut waiter => Ok(r?.context("waiting for the database's lease")?),
        _ = shutdown.as_mut() => {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = waiter.await;
            Ok(None)
        }
    }
}

/// How often a standby moves its token's anchors up to the active wardend's.
const STANDBY_FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Move this token's audit anchor to the newest checkpoint that verifies with its audit key,
/// and its policy anchor to the newest version of the verified policy history. Failures are
/// logged: the standby keeps waiting, and its takeover checks the state in full.
fn follow_active(store: &Store, hsm: &Hsm, network: lightning_signer::bitcoin::Network) {
    if let Err(e) = warden::audit::AuditLog::follow_checkpoints(store, hsm) {
        tracing::warn!(error = %e, "standby: cannot follow the active wardend's audit checkpoints");
    }
    match warden::core::verified_policy_in_force(store, network) {
        Ok(Some(v)) => {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&v.hash, &mut hash).is_ok() {
                if let Err(e) = hsm.advance_policy_anchor(&warden::hsm::PolicyAnchor {
                    version: v.seq,
                    hash,
                }) {
                    tracing::warn!(error = %e, "standby: cannot move the policy anchor");
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "standby: the policy history does not verify"),
    }
}

/// /metrics while standby: the role and the active wardend's lease, nothing else yet.
fn standby_metrics(
    metrics: &warden::metrics::Metrics,
    view: &std::sync::Mutex<Option<LeaseRow>>,
) -> String {
    let row = view.lock().unwrap_or_else(|p| p.into_inner()).clone();
    metrics.render(&warden::metrics::Gauges {
        pending: 0,
        node_connected: false,
        audit_records: 0,
        velocity: &[],
        state_commits: 0,
        store: &[],
        channels: &[],
        lease: Some(warden::metrics::LeaseView {
            role: warden::store::Role::Standby,
            epoch: row.as_ref().map(|r| r.epoch).unwrap_or(0),
            age_secs: row.map(|r| r.renewed_ago.as_secs_f64()).unwrap_or(0.0),
        }),
        fleet: None,
    })
}

/// Installs the SIGINT/SIGTERM handlers now and returns a future that resolves on either.
fn shutdown_signals() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())
            .expect("installing a SIGINT handler cannot fail on Unix");
        let mut term = signal(SignalKind::terminate())
            .expect("installing a SIGTERM handler cannot fail on Unix");
        async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The policy file on disk (or the embedded default, without one): the loaded policy, or every
/// problem as FILE:LINE:COL lines.
fn read_policy_file(config: &warden::config::Config) -> Result<LoadedPolicy, String> {
    match &config.policy_file {
        Some(path) => {
            let policy = load_policy_file_for(path, config.network).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read the policy file: {e}", path.display()))?;
            Ok(LoadedPolicy {
                policy: Arc::new(policy),
                text,
            })
        }
        None => Ok(LoadedPolicy {
            policy: Arc::new(
                parse_policy_for(DEFAULT_POLICY, config.network)
                    .map_err(|e| format!("embedded default policy: {e:?}"))?,
            ),
            text: DEFAULT_POLICY.to_string(),
        }),
    }
}

/// The policy in force, and what the file on disk is next to it. At the first start (no policy
/// in the database yet) the file becomes the first policy, with the admins it names as the
/// first governance quorum, and must load; after that a file that differs or does not load is
/// reported and the policy in force stays.
fn policy_in_force(
    store: &Store,
    config: &warden::config::Config,
    file: Result<LoadedPolicy, String>,
) -> anyhow::Result<(LoadedPolicy, Option<PolicyFile>)> {
    use warden::clock::Clock;
    let history = PolicyHistory::new(store);
    match warden::core::verified_policy_in_force(store, config.network)? {
        Some(v) => {
            let policy = parse_policy_for(&v.text, config.network).map_err(|errors| {
                let lines: Vec<String> = errors
                    .iter()
                    .map(|e| format!("  {}:{}: {}", e.line, e.col, e.message))
                    .collect();
                anyhow::anyhow!(
                    "the policy in force ({}, from the state database) does not load in this wardend:\n{}\nRun the wardend version that put it in force, or restore the data directory from a backup",
                    v.hash,
                    lines.join("\n")
                )
            })?;
            // Without a policy file there is nothing on disk to compare with.
            let state = config.policy_file.as_ref().map(|_| match &file {
                Ok(f) => PolicyFile::Loads(f.policy.hash),
                Err(e) => PolicyFile::Broken(e.clone()),
            });
            Ok((
                LoadedPolicy {
                    policy: Arc::new(policy),
                    text: v.text,
                },
                state,
            ))
        }
        None => {
            // The first policy is the signer's first governance: its admins are the only ones
            // who can ever change it, so it must be the operator's own, never the embedded
            // example (whose keys nobody holds).
            if config.policy_file.is_none() {
                anyhow::bail!("no policy is in force yet and no policy file is configured. The first policy decides who can ever change the rules (its admins are the first governance quorum), so it must be yours: copy policy/default.toml, put your admins' public keys in [admins], and set policy.file (or WARDEN_POLICY)");
            }
            let first = file.map_err(|e| anyhow::anyhow!("{e}"))?;
            let now = SystemClock.now();
            history.record(PolicyVersion::first(
                first.policy.hash_hex(),
                first.text.clone(),
                now,
            ))?;
            tracing::info!(policy = %first.policy.hash_hex(), "the first policy is recorded as the policy in force; later changes need its governance quorum");
            let hash = first.policy.hash;
            Ok((first, Some(PolicyFile::Loads(hash))))
        }
    }
}

/// On SIGHUP, propose the policy file to the governance quorum (as `wardenctl policy propose`
/// would); the policy in force stays until the proposal takes effect.
async fn propose_on_sighup(
    core: Arc<Core>,
    path: std::path::PathBuf,
    network: lightning_signer::bitcoin::Network,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; propose policy changes with wardenctl");
        return;
    };
    while hup.recv().await.is_some() {
        let (core, path) = (core.clone(), path.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    core.set_policy_file(Some(PolicyFile::Broken(format!(
                        "{}: cannot read the policy file: {e}",
                        path.display()
                    ))));
                    return;
                }
            };
            match core.propose_policy(&text, "policy file") {
                Ok(p) => tracing::info!("SIGHUP: {}", p.message),
                Err(GovernanceError::Unchanged(_)) => {
                    tracing::info!("SIGHUP: the policy file is the policy in force")
                }
                Err(e) => tracing::warn!("SIGHUP: {e}"),
            }
            let state = match load_policy_file_for(&path, network) {
                Ok(p) => PolicyFile::Loads(p.hash),
                Err(e) => PolicyFile::Broken(e.to_string()),
            };
            core.set_policy_file(Some(state));
        })
        .await;
    }
}
