//! wardend's configuration: one TOML file, overridden by environment variables and flags,
//! validated once at start. A bad value stops the daemon before it touches the HSM, with a
//! message that names the key and says what to put there.

use crate::hsm::{HsmConfig, PinSource, DEFAULT_MODULE};
use lightning_signer::bitcoin::Network;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The configuration as written in the file; every field optional so that environment and
/// flags can fill what the file leaves out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Directory for the sealed seed and the state database.
    pub data_dir: Option<PathBuf>,
    /// bitcoin, testnet, signet or regtest.
    pub network: Option<String>,
    /// `[hsm]` table.
    #[serde(default)]
    pub hsm: FileHsm,
    /// `[node]` table.
    #[serde(default)]
    pub node: FileNode,
    /// `[admin]` table.
    #[serde(default)]
    pub admin: FileAdmin,
    /// `[policy]` table.
    #[serde(default)]
    pub policy: FilePolicy,
    /// `[approvals]` table.
    #[serde(default)]
    pub approvals: FileApprovals,
    /// `[signer]` table.
    #[serde(default)]
    pub signer: FileSigner,
    /// `[alerts]` table.
    #[serde(default)]
    pub alerts: FileAlerts,
    /// `[metrics]` table.
    #[serde(default)]
    pub metrics: FileListen,
    /// `[store]` table.
    #[serde(default)]
    pub store: FileStore,
    /// `[fleet]` table.
    #[serde(default)]
    pub fleet: FileFleet,
}

/// `[fleet]` in the file: several wardends, one per node, sharing one treasury through one
/// PostgreSQL database (see README "Several nodes, one treasury").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFleet {
    /// The fleet's name: every member names the same.
    pub name: Option<String>,
    /// This member's name in it, as the policy's `[fleet] members` lists it.
    pub member: Option<String>,
}

/// `[store]` in the file: where Warden's state lives.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStore {
    /// "log" (Warden's append-only log, the default), "sled" (embedded) or "postgres" (shared
    /// with standbys for failover). Unset, a data directory that already holds a sled database
    /// keeps it, so an upgrade never starts from an empty state.
    pub backend: Option<String>,
    /// PostgreSQL connection: libpq parameters ("host=… user=… dbname=…") or a postgresql://
    /// URL, without the password.
    pub url: Option<String>,
    /// File holding the database password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the database password.
    pub password_env: Option<String>,
    /// "disable" or "require" (TLS, the server checked against `ca_file`).
    pub tls: Option<String>,
    /// CA certificate (PEM) the database server's certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Seconds a lease lasts without renewal: the failover time.
    pub lease_secs: Option<f64>,
    /// Seconds between renewals by the active wardend.
    pub renew_secs: Option<f64>,
    /// This wardend's name in the lease (default: host name and process id).
    pub holder: Option<String>,
}

/// Where the state lives, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    /// One wardend's state in `data_dir/state`, on this local backend.
    Local(crate::store::LocalBackend),
    /// PostgreSQL, shared for failover.
    Postgres(crate::store::postgres::PgSettings),
}

/// `[hsm]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHsm {
    /// PKCS#11 library path.
    pub module: Option<PathBuf>,
    /// Token label.
    pub token_label: Option<String>,
    /// File holding the user PIN.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// Session pool size.
    pub max_sessions: Option<usize>,
}

/// `[node]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileNode {
    /// Address of the node-side hsmd gRPC service (remote_hsmd_socket).
    pub hsmd_address: Option<String>,
}

/// `[admin]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    /// host:port to listen on.
    pub listen: Option<String>,
    /// Server certificate (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Server key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA that admin client certificates must chain to (PEM).
    pub client_ca: Option<PathBuf>,
    /// Serve without TLS; allowed only on a loopback address, for development.
    pub plaintext_loopback: Option<bool>,
    /// Sustained requests per minute per client certificate.
    pub rate_per_minute: Option<u32>,
    /// Burst per client certificate.
    pub burst: Option<u32>,
    /// Certificate names (CN) that may read but not sign.
    pub viewers: Option<Vec<String>>,
    /// Certificate names (CN) that may submit any admin's signature (a relay for hardware
    /// wallets or an approval service).
    pub relays: Option<Vec<String>>,
    /// Certificate names (CN) of Lightning nodes' own clients (the CLN plugin): status only.
    pub nodes: Option<Vec<String>>,
}

/// `[policy]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    /// The policy file; the embedded default when absent.
    pub file: Option<PathBuf>,
}

/// `[alerts]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAlerts {
    /// Fraction of a window's limit that raises a warning (0 < x ≤ 1).
    pub window_warn_fraction: Option<f64>,
    /// Seconds of node disconnection that raise an alert.
    pub node_disconnect_secs: Option<u64>,
    /// Seconds the system clock may move beyond the time that passed before it is an alert.
    pub clock_jump_secs: Option<u64>,
    /// Webhook URL for alert events: https://, or http:// to a loopback relay.
    pub webhook_url: Option<String>,
    /// File holding the webhook's HMAC secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// PEM file of the only CA(s) trusted for the webhook's certificate; Mozilla's roots if
    /// unset.
    pub webhook_ca_file: Option<PathBuf>,
}

/// Alert settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    /// Warning threshold as a fraction of a window's limit.
    pub window_warn_fraction: f64,
    /// Disconnection alert threshold, seconds.
    pub node_disconnect_secs: u64,
    /// Forward clock jump alert threshold, seconds.
    pub clock_jump_secs: u64,
    /// Webhook URL and secret file.
    pub webhook: Option<(String, PathBuf)>,
    /// The webhook's pinned CA file.
    pub webhook_ca_file: Option<PathBuf>,
}

/// `[signer]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSigner {
    /// Live invoices VLS may hold.
    pub max_invoices: Option<usize>,
    /// VLS policy filter rules, `"TAG:warn"` / `"TAG:error"`, `TAG*` for a prefix.
    pub vls_filters: Option<Vec<String>>,
}

/// One VLS policy filter rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlsFilter {
    /// The VLS rule tag, or a tag prefix.
    pub tag: String,
    /// Whether `tag` is a prefix.
    pub prefix: bool,
    /// Demote to a warning (true) or keep as an error (false).
    pub warn: bool,
}

/// Parse `"policy-channel-safe-mode:warn"`. A filter may demote named VLS rules to warnings,
/// but never all of them: a catch-all would switch VLS's validation off.
pub fn parse_vls_filter(spec: &str) -> Result<VlsFilter, String> {
    let (tag, action) = spec.split_once(':').ok_or_else(|| {
        format!("\"{spec}\" needs an action: write \"{spec}:warn\" or \"{spec}:error\"")
    })?;
    let warn = match action {
        "warn" => true,
        "error" => false,
        other => {
            return Err(format!(
                "\"{spec}\": unknown action \"{other}\"; use warn or error"
            ))
        }
    };
    let (tag, prefix) = match tag.strip_suffix('*') {
        Some(t) => (t.to_string(), true),
        None => (tag.to_string(), false),
    };
    if !tag.starts_with("policy-") || (prefix && warn && tag.len() <= "policy-".len() + 2) {
        return Err(format!(
            "\"{spec}\" would demote all or most of VLS's rules; VLS validation always stays on, so name the rules (e.g. policy-channel-safe-mode:warn)"
        ));
    }
    Ok(VlsFilter { tag, prefix, warn })
}

/// `[approvals]` in the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApprovals {
    /// Rejections that refuse a held payment.
    pub rejections_needed: Option<usize>,
    /// Approval requests that may be open at once.
    pub max_open: Option<usize>,
    /// Days a closed request is kept before it is pruned.
    pub retention_days: Option<u64>,
}

/// A table with a listen address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListen {
    /// host:port to listen on.
    pub listen: Option<String>,
}

/// Settings from flags or the environment; `None` means "not given". Each wins over the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Keys below override it.
    #[arg(long, short = 'c', env = "WARDEN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the sealed seed and the state database [default: ./warden-data]
    #[arg(long, env = "WARDEN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Bitcoin network: bitcoin, testnet, signet or regtest [default: regtest]
    #[arg(long, env = "WARDEN_NETWORK")]
    pub network: Option<String>,
    /// PKCS#11 module (the HSM vendor's library) [default: /usr/lib/softhsm/libsofthsm2.so]
    #[arg(long, env = "WARDEN_HSM_MODULE")]
    pub hsm_module: Option<PathBuf>,
    /// Label of the token that holds Warden's keys [default: warden]
    #[arg(long, env = "WARDEN_HSM_TOKEN")]
    pub hsm_token: Option<String>,
    /// File holding the token's user PIN (mode 0600). The PIN itself is never a flag.
    #[arg(long, env = "WARDEN_HSM_PIN_FILE")]
    pub hsm_pin_file: Option<PathBuf>,
    /// Name of an environment variable holding the token's user PIN
    #[arg(long, env = "WARDEN_HSM_PIN_ENV")]
    pub hsm_pin_env: Option<String>,
    /// Most PKCS#11 sessions open at once [default: 4]
    #[arg(long, env = "WARDEN_HSM_MAX_SESSIONS")]
    pub hsm_max_sessions: Option<usize>,
    /// host:port of the node's hsmd gRPC service (remote_hsmd_socket) [default: 127.0.0.1:7701]
    #[arg(long, env = "WARDEN_HSMD_ADDRESS")]
    pub hsmd_address: Option<String>,
    /// host:port for the admin gRPC API [default: 127.0.0.1:7443]
    #[arg(long, env = "WARDEN_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// host:port for the Prometheus endpoint [default: 127.0.0.1:9464]
    #[arg(long, env = "WARDEN_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Admin API server certificate (PEM)
    #[arg(long, env = "WARDEN_ADMIN_TLS_CERT")]
    pub admin_tls_cert: Option<PathBuf>,
    /// Admin API server key (PEM)
    #[arg(long, env = "WARDEN_ADMIN_TLS_KEY")]
    pub admin_tls_key: Option<PathBuf>,
    /// CA that admin client certificates must chain to (PEM)
    #[arg(long, env = "WARDEN_ADMIN_CLIENT_CA")]
    pub admin_client_ca: Option<PathBuf>,
    /// Policy file (TOML) [default: the embedded policy/default.toml]
    #[arg(long, env = "WARDEN_POLICY")]
    pub policy: Option<PathBuf>,
    /// Live invoices the VLS node may hold [default: 100000]
    #[arg(long, env = "WARDEN_MAX_INVOICES")]
    pub max_invoices: Option<usize>,
    /// State backend: log, sled or postgres [default: log, or sled for a data directory that
    /// already holds a sled database]
    #[arg(long, env = "WARDEN_STORE_BACKEND")]
    pub store_backend: Option<String>,
    /// PostgreSQL connection (libpq parameters or a postgresql:// URL, no password in it)
    #[arg(long, env = "WARDEN_STORE_URL")]
    pub store_url: Option<String>,
    /// File holding the PostgreSQL password (mode 0600). The password itself is never a flag.
    #[arg(long, env = "WARDEN_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Name of an environment variable holding the PostgreSQL password
    #[arg(long, env = "WARDEN_STORE_PASSWORD_ENV")]
    pub store_password_env: Option<String>,
    /// Seconds a lease lasts without renewal (the failover time) [default: 6]
    #[arg(long, env = "WARDEN_STORE_LEASE_SECS")]
    pub store_lease_secs: Option<f64>,
    /// Seconds between lease renewals [default: 2]
    #[arg(long, env = "WARDEN_STORE_RENEW_SECS")]
    pub store_renew_secs: Option<f64>,
    /// This wardend's name in the lease [default: host name and process id]
    #[arg(long, env = "WARDEN_STORE_HOLDER")]
    pub store_holder: Option<String>,
    /// The fleet this wardend is a member of (with store.backend = postgres)
    #[arg(long, env = "WARDEN_FLEET_NAME")]
    pub fleet_name: Option<String>,
    /// This wardend's member name in the fleet
    #[arg(long, env = "WARDEN_FLEET_MEMBER")]
    pub fleet_member: Option<String>,
}

/// How the admin API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTls {
    /// Mutual TLS with these files.
    Mutual {
        /// Server certificate.
        cert: PathBuf,
        /// Server key.
        key: PathBuf,
        /// Client CA.
        client_ca: PathBuf,
    },
    /// No TLS, loopback only, for development.
    PlaintextLoopback,
    /// The admin API is off.
    Disabled,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Directory for the sealed seed and the state database.
    pub data_dir: PathBuf,
    /// The Bitcoin network the node runs on.
    pub network: Network,
    /// How to reach the HSM.
    pub hsm: HsmConfig,
    /// The node-side hsmd gRPC service.
    pub hsmd_address: SocketAddr,
    /// The admin API listen address.
    pub admin_listen: SocketAddr,
    /// The metrics listen address.
    pub metrics_listen: SocketAddr,
    /// Admin API transport.
    pub admin_tls: AdminTls,
    /// Admin API rate limit per client certificate, per minute.
    pub admin_rate_per_minute: u32,
    /// Admin API burst per client certificate.
    pub admin_burst: u32,
    /// Certificate names with the viewer role.
    pub admin_viewers: Vec<String>,
    /// Certificate names with the relay role.
    pub admin_relays: Vec<String>,
    /// Certificate names with the node role.
    pub admin_nodes: Vec<String>,
    /// The policy file, or `None` for the embedded default.
    pub policy_file: Option<PathBuf>,
    /// Rejections that refuse a held payment.
    pub rejections_needed: usize,
    /// Approval requests that may be open at once.
    pub max_open_requests: usize,
    /// Seconds a closed request is kept.
    pub request_retention_secs: u64,
    /// Live invoices the VLS node may hold.
    pub max_invoices: usize,
    /// VLS policy filter rules.
    pub vls_filters: Vec<VlsFilter>,
    /// Alerts.
    pub alerts: AlertSettings,
    /// Where the state lives.
    pub store: StoreConfig,
}

/// What was wrong with the configuration.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what each message names
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read the configuration file {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    /// The file is not valid TOML, or has unknown keys or wrong types.
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    /// One or more values are invalid; every problem is listed.
    #[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<String> },
}

impl ConfigArgs {
    /// Merge flags/env over the file and validate everything, reporting all problems at once.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let mut problems = Vec::new();

        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("warden-data"));
        if data_dir.as_os_str().is_empty() {
            problems.push(
                "data_dir: is empty; set it to the directory Warden keeps its state in".into(),
            );
        }

        let network_text = self
            .network
            .clone()
            .or(file.network)
            .unwrap_or_else(|| "regtest".into());
        let network = match parse_network(&network_text) {
            Some(n) => n,
            None => {
                problems.push(format!(
                    "network: \"{network_text}\" is not a Bitcoin network; use one of bitcoin, testnet, signet, regtest"
                ));
                Network::Regtest
            }
        };

        let module = self
            .hsm_module
            .clone()
            .or(file.hsm.module)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE));
        if !module.is_file() {
            problems.push(format!(
                "hsm.module: {} does not exist; install softhsm2 (scripts/setup.sh) or set it to your HSM vendor's PKCS#11 library",
                module.display()
            ));
        }
        let token_label = self
            .hsm_token
            .clone()
            .or(file.hsm.token_label)
            .unwrap_or_else(|| "warden".into());
        if token_label.is_empty() || token_label.len() > 32 {
            problems.push(format!(
                "hsm.token_label: \"{token_label}\" must be 1 to 32 characters (a PKCS#11 token label)"
            ));
        }
        // Flags and environment override the file as a pair: naming either source replaces
        // whatever the file said.
        let (pin_file, pin_env) = if self.hsm_pin_file.is_some() || self.hsm_pin_env.is_some() {
            (self.hsm_pin_file.clone(), self.hsm_pin_env.clone())
        } else {
            (file.hsm.pin_file, file.hsm.pin_env)
        };
        let pin = match (pin_file, pin_env) {
            (Some(f), None) => PinSource::File(f),
            (None, Some(v)) if !v.is_empty() => PinSource::Env(v),
            (None, Some(_)) => {
                problems.push(
                    "hsm.pin_env: is empty; name the environment variable that holds the PIN"
                        .into(),
                );
                PinSource::Env(String::new())
            }
            (Some(_), Some(_)) => {
                problems.push(
                    "hsm.pin_file and hsm.pin_env: both are set; keep exactly one PIN source"
                        .into(),
                );
                PinSource::Env(String::new())
            }
            (None, None) => {
                problems.push(
                    "hsm.pin_file: no PIN source; set hsm.pin_file (a 0600 file) or hsm.pin_env (an environment variable name). A PIN is never a flag".into(),
                );
                PinSource::Env(String::new())
            }
        };
        let max_sessions = self.hsm_max_sessions.or(file.hsm.max_sessions).unwrap_or(4);
        if !(1..=64).contains(&max_sessions) {
            problems.push(format!(
                "hsm.max_sessions: {max_sessions} is out of range; use 1 to 64"
            ));
        }

        let mut addr = |key: &str, flag: &Option<String>, file: Option<String>, default: &str| {
            let text = flag.clone().or(file).unwrap_or_else(|| default.into());
            text.parse::<SocketAddr>().unwrap_or_else(|_| {
                problems.push(format!(
                    "{key}: \"{text}\" is not an IP address and port, e.g. \"{default}\""
                ));
                default.parse().expect("default address parses")
            })
        };
        let hsmd_address = addr(
            "node.hsmd_address",
            &self.hsmd_address,
            file.node.hsmd_address,
            "127.0.0.1:7701",
        );
        let admin_listen = addr(
            "admin.listen",
            &self.admin_listen,
            file.admin.listen,
            "127.0.0.1:7443",
        );
        let metrics_listen = addr(
            "metrics.listen",
            &self.metrics_listen,
            file.metrics.listen,
            "127.0.0.1:9464",
        );

        let cert = self.admin_tls_cert.clone().or(file.admin.tls_cert);
        let key = self.admin_tls_key.clone().or(file.admin.tls_key);
        let ca = self.admin_client_ca.clone().or(file.admin.client_ca);
        let admin_tls = match (
            cert,
            key,
            ca,
            file.admin.plaintext_loopback.unwrap_or(false),
        ) {
            (Some(cert), Some(key), Some(client_ca), false) => {
                for (k, p) in [
                    ("admin.tls_cert", &cert),
                    ("admin.tls_key", &key),
                    ("admin.client_ca", &client_ca),
                ] {
                    if !p.is_file() {
                        problems.push(format!(
                            "{k}: {} does not exist; `wardenctl tls init DIR` creates a demo PKI",
                            p.display()
                        ));
                    }
                }
                AdminTls::Mutual {
                    cert,
                    key,
                    client_ca,
                }
            }
            (None, None, None, false) => AdminTls::Disabled,
            (None, None, None, true) => {
                if !admin_listen.ip().is_loopback() {
                    problems.push(format!(
                        "admin.plaintext_loopback: the admin API listens on {admin_listen}, which is not a loopback address; plaintext is only allowed on 127.0.0.1/::1"
                    ));
                }
                AdminTls::PlaintextLoopback
            }
            (_, _, _, true) => {
                problems.push("admin.plaintext_loopback: set either plaintext_loopback or the TLS files, not both".into());
                AdminTls::Disabled
            }
            _ => {
                problems.push("admin.tls_cert, admin.tls_key and admin.client_ca: set all three (mutual TLS) or none".into());
                AdminTls::Disabled
            }
        };
        let admin_rate_per_minute = file.admin.rate_per_minute.unwrap_or(120);
        let admin_burst = file.admin.burst.unwrap_or(30);
        if admin_rate_per_minute == 0 || admin_burst == 0 {
            problems.push("admin.rate_per_minute and admin.burst: must be at least 1".into());
        }
        let policy_file = self.policy.clone().or(file.policy.file);
        if let Some(p) = &policy_file {
            if !p.is_file() {
                problems.push(format!("policy.file: {} does not exist", p.display()));
            }
        }
        let rejections_needed = file.approvals.rejections_needed.unwrap_or(1);
        let max_open_requests = file.approvals.max_open.unwrap_or(1_000);
        if !(1..=100_000).contains(&max_open_requests) {
            problems.push(format!(
                "approvals.max_open: {max_open_requests} is out of range; use 1 to 100000"
            ));
        }
        let retention_days = file.approvals.retention_days.unwrap_or(90);
        if !(1..=3_650).contains(&retention_days) {
            problems.push(format!(
                "approvals.retention_days: {retention_days} is out of range; use 1 to 3650"
            ));
        }
        if rejections_needed == 0 {
            problems.push("approvals.rejections_needed: must be at least 1".into());
        }

        let max_invoices = self
            .max_invoices
            .or(file.signer.max_invoices)
            .unwrap_or(100_000);
        if !(1..=10_000_000).contains(&max_invoices) {
            problems.push(format!(
                "signer.max_invoices: {max_invoices} is out of range; use 1 to 10,000,000"
            ));
        }

        let mut vls_filters = Vec::new();
        for spec in file.signer.vls_filters.unwrap_or_default() {
            match parse_vls_filter(&spec) {
                Ok(f) => vls_filters.push(f),
                Err(e) => problems.push(format!("signer.vls_filters: {e}")),
            }
        }

        let window_warn_fraction = file.alerts.window_warn_fraction.unwrap_or(0.8);
        if !(window_warn_fraction > 0.0 && window_warn_fraction <= 1.0) {
            problems.push(format!("alerts.window_warn_fraction: {window_warn_fraction} is not a fraction; use e.g. 0.8 for 80 %"));
        }
        let node_disconnect_secs = file.alerts.node_disconnect_secs.unwrap_or(60);
        if node_disconnect_secs == 0 {
            problems.push("alerts.node_disconnect_secs: must be at least 1".into());
        }
        let clock_jump_secs = file.alerts.clock_jump_secs.unwrap_or(300);
        if clock_jump_secs == 0 {
            problems.push("alerts.clock_jump_secs: must be at least 1".into());
        }
        let webhook = match (file.alerts.webhook_url, file.alerts.webhook_secret_file) {
            (Some(u), Some(f)) => {
                if let Err(e) = crate::alerts::check_url(&u) {
                    problems.push(format!("alerts.webhook_url: {e}"));
                }
                if !f.is_file() {
                    problems.push(format!(
                        "alerts.webhook_secret_file: {} does not exist",
                        f.display()
                    ));
                }
                Some((u, f))
            }
            (None, None) => None,
            _ => {
                problems.push("alerts.webhook_url and alerts.webhook_secret_file: set both (deliveries are HMAC-signed) or neither".into());
                None
            }
        };

        let webhook_ca_file = file.alerts.webhook_ca_file;
        if let Some(ca) = &webhook_ca_file {
            if webhook.is_none() {
                problems.push("alerts.webhook_ca_file: set only with alerts.webhook_url".into());
            } else if !ca.is_file() {
                problems.push(format!(
                    "alerts.webhook_ca_file: {} does not exist",
                    ca.display()
                ));
            }
        }
        let store = self.store(file.store, file.fleet, &data_dir, &mut problems);

        if !problems.is_empty() {
            return Err(ConfigError::Invalid { problems });
        }
        Ok(Config {
            data_dir,
            network,
            hsm: HsmConfig {
                module,
                token_label,
                pin,
                max_sessions,
            },
            hsmd_address,
            admin_listen,
            metrics_listen,
            admin_tls,
            admin_rate_per_minute,
            admin_burst,
            admin_viewers: file.admin.viewers.unwrap_or_default(),
            admin_relays: file.admin.relays.unwrap_or_default(),
            admin_nodes: file.admin.nodes.unwrap_or_default(),
            policy_file,
            rejections_needed,
            max_open_requests,
            request_retention_secs: retention_days * 86_400,
            max_invoices,
            vls_filters,
            alerts: AlertSettings {
                window_warn_fraction,
                node_disconnect_secs,
                clock_jump_secs,
                webhook,
                webhook_ca_file,
            },
            store,
        })
    }
}

impl ConfigArgs {
    fn store(
        &self,
        file: FileStore,
        fleet: FileFleet,
        data_dir: &std::path::Path,
        problems: &mut Vec<String>,
    ) -> StoreConfig {
        let fleet = self.fleet(fleet, problems);
        use crate::store::postgres::{PgSettings, PgTls};
        use crate::store::LocalBackend;
        let backend = self
            .store_backend
            .clone()
            .or(file.backend)
            .unwrap_or_else(|| {
                LocalBackend::default_in(&data_dir.join("state"))
                    .name()
                    .into()
            });
        let local = |config: StoreConfig, problems: &mut Vec<String>| {
            if let Some(f) = &fleet {
                problems.push(format!(
                    "fleet: member \"{}\" of fleet \"{}\" needs store.backend = \"postgres\" (the fleet's members share one database); it is \"{backend}\"",
                    f.member, f.fleet
                ));
            }
            config
        };
        match (backend.as_str(), LocalBackend::named(&backend)) {
            (_, Some(b)) => return local(StoreConfig::Local(b), problems),
            ("postgres" | "postgresql", None) => {}
            (other, None) => {
                problems.push(format!(
                    "store.backend: \"{other}\" is not a backend; use sled (one wardend, embedded), log (one wardend, Warden's append-only log) or postgres (shared with standbys)"
                ));
                return StoreConfig::Local(LocalBackend::Log);
            }
        }
        let url = self.store_url.clone().or(file.url).unwrap_or_default();
        match url.parse::<tokio_postgres::Config>() {
            _ if url.is_empty() => problems.push(
                "store.url: is required with store.backend = \"postgres\"; e.g. \"host=db.internal user=warden dbname=warden\"".into(),
            ),
            Ok(c) if c.get_password().is_some() => problems.push(
                "store.url: holds a password; remove it and put the password in store.password_file (a 0600 file) or store.password_env".into(),
            ),
            Ok(_) => {}
            Err(e) => problems.push(format!(
                "store.url: \"{url}\" is not a PostgreSQL connection string ({e}); use libpq parameters (\"host=… user=… dbname=…\") or a postgresql:// URL"
            )),
        }
        let (pw_file, pw_env) =
            if self.store_password_file.is_some() || self.store_password_env.is_some() {
                (
                    self.store_password_file.clone(),
                    self.store_password_env.clone(),
                )
            } else {
                (file.password_file, file.password_env)
            };
        let password = match (pw_file, pw_env) {
            (Some(_), Some(_)) => {
                problems.push("store.password_file and store.password_env: both are set; keep exactly one password source".into());
                None
            }
            (Some(f), _) if shared_with_others(&f) => {
                problems.push(format!(
                    "store.password_file: {} is readable by group or others; chmod 600 it (only wardend's user should read the database password)",
                    f.display()
                ));
                None
            }
            (Some(f), None) => match std::fs::read_to_string(&f).map(zeroize::Zeroizing::new) {
                // The file's whole text is zeroized too, not only the trimmed copy.
                Ok(p) => Some(zeroize::Zeroizing::new(
                    p.trim_end_matches(['\n', '\r']).to_string(),
                )),
                Err(e) => {
                    problems.push(format!(
                        "store.password_file: cannot read {}: {e}",
                        f.display()
                    ));
                    None
                }
            },
            (None, Some(v)) => match std::env::var(&v) {
                Ok(p) if !p.is_empty() => {
                    // Like the PIN's: nothing wardend starts needs it, and a child process
                    // would inherit it.
                    std::env::remove_var(&v);
                    Some(zeroize::Zeroizing::new(p))
                }
                _ => {
                    problems.push(format!(
                        "store.password_env: the environment variable {v} is not set; set it, or use store.password_file"
                    ));
                    None
                }
            },
            // Trust or peer authentication (a Unix socket), or a password libpq finds itself.
            (None, None) => None,
        };
        let tls = match (file.tls.as_deref().unwrap_or("disable"), file.ca_file) {
            ("disable", _) => PgTls::Disable,
            ("require", Some(ca_file)) => PgTls::Require { ca_file },
            ("require", None) => {
                problems.push("store.ca_file: is required with store.tls = \"require\"; name the CA (PEM) that signed the database server's certificate".into());
                PgTls::Disable
            }
            (other, _) => {
                problems.push(format!(
                    "store.tls: \"{other}\" is not a TLS mode; use disable or require"
                ));
                PgTls::Disable
            }
        };
        let lease = self.store_lease_secs.or(file.lease_secs).unwrap_or(6.0);
        let renew = self.store_renew_secs.or(file.renew_secs).unwrap_or(2.0);
        if !(lease.is_finite() && (0.5..=600.0).contains(&lease)) {
            problems.push(format!(
                "store.lease_secs: {lease} is out of range; use 0.5 to 600 seconds (the failover time)"
            ));
        } else if !(renew.is_finite() && renew > 0.0 && renew * 2.0 <= lease) {
            problems.push(format!(
                "store.renew_secs: {renew} must be positive and at most half of store.lease_secs ({lease}), so one lost renewal does not lose the lease"
            ));
        }
        let holder = self
            .store_holder
            .clone()
            .or(file.holder)
            .unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "wardend".into());
                format!("{host}:{}", std::process::id())
            });
        if holder.is_empty() || holder.len() > 200 {
            problems.push("store.holder: must be 1 to 200 characters".into());
        }
        StoreConfig::Postgres(PgSettings {
            conninfo: url,
            password,
            tls,
            lease: std::time::Duration::from_secs_f64(lease.clamp(0.5, 600.0)),
            renew: std::time::Duration::from_secs_f64(renew.clamp(0.01, 600.0)),
            holder,
            fleet,
        })
    }

    /// `[fleet]`: both names or neither, each a valid name.
    fn fleet(
        &self,
        file: FileFleet,
        problems: &mut Vec<String>,
    ) -> Option<crate::store::postgres::FleetMember> {
        use crate::store::postgres::FleetMember;
        let name = self.fleet_name.clone().or(file.name);
        let member = self.fleet_member.clone().or(file.member);
        let (fleet, member) = match (name, member) {
            (None, None) => return None,
            (Some(f), Some(m)) => (f, m),
            (Some(_), None) => {
                problems.push("fleet.member: is required with fleet.name; name this wardend as the policy's [fleet] members list it".into());
                return None;
            }
            (None, Some(_)) => {
                problems.push("fleet.name: is required with fleet.member; every member of a fleet names the same fleet".into());
                return None;
            }
        };
        let mut ok = true;
        for (what, n) in [("fleet.name", &fleet), ("fleet.member", &member)] {
            if let Err(e) = FleetMember::check_name(n) {
                problems.push(format!("{what}: {e}"));
                ok = false;
            }
        }
        ok.then_some(FleetMember { fleet, member })
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        detail: e.to_string().trim_end().to_string(),
    })
}

/// Parse a network name as operators write it.
pub fn parse_network(s: &str) -> Option<Network> {
    match s {
        "bitcoin" | "mainnet" => Some(Network::Bitcoin),
        "testnet" => Some(Network::Testnet),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// Whether a secret's file may be read by anyone but its owner.
#[cfg(unix)]
fn shared_with_others(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

#[cfg(not(unix))]
fn shared_with_others(_path: &std::path::Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_with_file(text: &str) -> (tempfile::TempDir, ConfigArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wardend.toml");
        std::fs::write(&path, text).unwrap();
        let module = dir.path().join("module.so");
        std::fs::write(&module, b"").unwrap();
        let args = ConfigArgs {
            config: Some(path),
            hsm_module: Some(module),
            ..Default::default()
        };
        (dir, args)
    }

    #[test]
    fn file_values_are_used_and_flags_override_them() {
        let (_d, mut args) = args_with_file(
            "data_dir = \"/var/lib/w\"\nnetwork = \"signet\"\n[hsm]\ntoken_label = \"t1\"\npin_env = \"P\"\n[node]\nhsmd_address = \"127.0.0.1:9999\"\n",
        );
        let c = args.resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/w"));
        assert_eq!(c.network, Network::Signet);
        assert_eq!(c.hsm.token_label, "t1");
        assert_eq!(c.hsm.pin, PinSource::Env("P".into()));
        assert_eq!(c.hsmd_address, "127.0.0.1:9999".parse().unwrap());
        args.network = Some("regtest".into());
        args.hsm_pin_file = Some("/etc/pin".into());
        let c = args.resolve().unwrap();
        assert_eq!(c.network, Network::Regtest);
        assert_eq!(c.hsm.pin, PinSource::File("/etc/pin".into()));
    }

    #[test]
    fn every_invalid_value_is_reported_with_its_key() {
        let (_d, args) = args_with_file(
            "network = \"moonnet\"\n[hsm]\npin_file = \"/p\"\npin_env = \"P\"\nmax_sessions = 0\n[admin]\nlisten = \"localhost\"\n",
        );
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("network: \"moonnet\" is not a Bitcoin network"),
            "{err}"
        );
        assert!(
            err.contains("hsm.pin_file and hsm.pin_env: both are set"),
            "{err}"
        );
        assert!(err.contains("hsm.max_sessions: 0 is out of range"), "{err}");
        assert!(
            err.contains("admin.listen: \"localhost\" is not an IP address and port"),
            "{err}"
        );
    }

    #[test]
    fn the_default_backend_is_the_log_except_where_sled_state_already_is() {
        let (d, mut args) = args_with_file("[hsm]\npin_env = \"P\"\n");
        args.data_dir = Some(d.path().join("data"));
        assert_eq!(
            args.resolve().unwrap().store,
            StoreConfig::Local(crate::store::LocalBackend::Log)
        );
        // A node upgraded from a release whose default was sled keeps its state.
        drop(
            crate::store::Store::open_local(
                &d.path().join("data/state"),
                crate::store::LocalBackend::Sled,
            )
            .unwrap(),
        );
        assert_eq!(
            args.resolve().unwrap().store,
            StoreConfig::Local(crate::store::LocalBackend::Sled)
        );
        // Named, the backend is what the operator said (the log then refuses the sled state).
        args.store_backend = Some("log".into());
        assert_eq!(
            args.resolve().unwrap().store,
            StoreConfig::Local(crate::store::LocalBackend::Log)
        );
    }

    #[test]
    fn the_store_password_file_must_be_private_and_its_variable_leaves_the_environment() {
        // Issue 25, item 15.
        use std::os::unix::fs::PermissionsExt;
        let (d, args) = args_with_file(
            "[hsm]\npin_env = \"P\"\n[store]\nbackend = \"postgres\"\nurl = \"host=db user=warden dbname=warden\"\npassword_file = \"pw\"\n",
        );
        let pw = d.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = std::fs::read_to_string(args.config.as_ref().unwrap())
            .unwrap()
            .replace("\"pw\"", &format!("\"{}\"", pw.display()));
        std::fs::write(args.config.as_ref().unwrap(), text).unwrap();
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "store.password_file: {} is readable by group or others; chmod 600 it",
                pw.display()
            )),
            "{err}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        args.resolve().unwrap();

        let (_e, args) = args_with_file(
            "[hsm]\npin_env = \"P\"\n[store]\nbackend = \"postgres\"\nurl = \"host=db user=warden dbname=warden\"\npassword_env = \"WARDEN_TEST_STORE_PW_25\"\n",
        );
        std::env::set_var("WARDEN_TEST_STORE_PW_25", "secret");
        match args.resolve().unwrap().store {
            StoreConfig::Postgres(p) => assert!(p.password.is_some()),
            StoreConfig::Local(_) => panic!("postgres expected"),
        }
        assert!(
            std::env::var("WARDEN_TEST_STORE_PW_25").is_err(),
            "read once, then removed from the environment"
        );
    }

    #[test]
    fn unknown_key_is_a_parse_error_with_its_line() {
        let (_d, args) = args_with_file("[hsm]\npin_env = \"P\"\npin = \"1234\"\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("unknown field `pin`"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn admin_tls_needs_all_three_files_and_plaintext_needs_loopback() {
        let (_d, args) = args_with_file("[hsm]\npin_env = \"P\"\n[admin]\ntls_cert = \"/x.pem\"\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("admin.tls_cert, admin.tls_key and admin.client_ca: set all three"),
            "{err}"
        );
        let (_d, args) = args_with_file("[hsm]\npin_env = \"P\"\n[admin]\nlisten = \"0.0.0.0:7443\"\nplaintext_loopback = true\n");
        let err = args.resolve().unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:7443, which is not a loopback address"),
            "{err}"
        );
        let (_d, args) =
            args_with_file("[hsm]\npin_env = \"P\"\n[admin]\nplaintext_loopback = true\n");
        assert_eq!(
            args.resolve().unwrap().admin_tls,
            AdminTls::PlaintextLoopback
        );
    }

    #[test]
    fn vls_filters_name_rules_and_never_switch_vls_off() {
        assert_eq!(
            parse_vls_filter("policy-channel-safe-mode:warn").unwrap(),
            VlsFilter {
                tag: "policy-channel-safe-mode".into(),
                prefix: false,
                warn: true
            }
        );
        assert!(
            parse_vls_filter("policy-commitment-*:error")
                .unwrap()
                .prefix
        );
        for bad in [
            "*:warn",
            "policy-*:warn",
            ":warn",
            "policy-channel-safe-mode",
            "policy-x:ignore",
        ] {
            assert!(parse_vls_filter(bad).is_err(), "{bad}");
        }
        assert!(parse_vls_filter("*:warn")
            .unwrap_err()
            .contains("VLS validation always stays on"));
    }

    #[test]
    fn missing_pin_source_and_module_are_named() {
        let args = ConfigArgs {
            hsm_module: Some("/nonexistent/libpkcs11.so".into()),
            ..Default::default()
        };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("hsm.pin_file: no PIN source"), "{err}");
        assert!(
            err.contains("hsm.module: /nonexistent/libpkcs11.so does not exist"),
            "{err}"
        );
    }
}
