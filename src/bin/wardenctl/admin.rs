//! `wardenctl` for admins: see and decide held payments over the mutual-TLS admin API.

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use serde::Deserialize;
use std::path::PathBuf;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use warden::api::proto::{self, warden_client::WardenClient};
use warden::approval::keys::AdminKey;
use warden::clock::format_utc;
use warden::policy::units::format_msat;
use warden_client::approval::{approval_digest, approval_text, ApprovalFields, Decision, Subject};

/// Exit code when the daemon refused the request (signature, quorum, state, rate limit).
pub const EXIT_REFUSED: i32 = 3;
/// Exit code when wardend could not be reached.
pub const EXIT_UNREACHABLE: i32 = 4;

/// Connection settings: flags, then WARDENCTL_* environment, then the profile file.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Conn {
    /// Profile file (TOML: server, ca, cert, key, admin, admin_key)
    #[arg(long, env = "WARDENCTL_PROFILE", global = true)]
    profile: Option<PathBuf>,
    /// Admin API URL [default: https://localhost:7443]
    #[arg(long, env = "WARDENCTL_SERVER", global = true)]
    server: Option<String>,
    /// CA certificate that signed wardend's certificate
    #[arg(long, env = "WARDENCTL_CA", global = true)]
    ca: Option<PathBuf>,
    /// This admin's client certificate
    #[arg(long, env = "WARDENCTL_CERT", global = true)]
    cert: Option<PathBuf>,
    /// This admin's client certificate key
    #[arg(long = "cert-key", env = "WARDENCTL_CERT_KEY", global = true)]
    cert_key: Option<PathBuf>,
    /// This admin's name in the policy's `[admins]`
    #[arg(long, env = "WARDENCTL_ADMIN", global = true)]
    admin: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Profile {
    server: Option<String>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    admin: Option<String>,
    admin_key: Option<PathBuf>,
}

impl Conn {
    fn profile(&self) -> anyhow::Result<Profile> {
        match &self.profile {
            None => Ok(Profile::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read profile {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("profile {}", p.display()))
            }
        }
    }

    /// The admin name.
    pub fn admin(&self) -> anyhow::Result<String> {
        self.admin
            .clone()
            .or(self.profile()?.admin)
            .ok_or_else(|| anyhow!("which admin are you? pass --admin NAME (or WARDENCTL_ADMIN, or `admin` in the profile)"))
    }

    /// The admin's signing key file from the profile, when --key is not given.
    pub fn admin_key(&self) -> anyhow::Result<Option<PathBuf>> {
        Ok(self.profile()?.admin_key)
    }

    pub async fn connect(&self) -> anyhow::Result<WardenClient<Channel>> {
        let p = self.profile()?;
        let server = self
            .server
            .clone()
            .or(p.server)
            .unwrap_or_else(|| "https://localhost:7443".into());
        let ca = self
            .ca
            .clone()
            .or(p.ca)
            .context("no CA certificate: pass --ca FILE (wardenctl tls init makes ca.pem)")?;
        let cert = self
            .cert
            .clone()
            .or(p.cert)
            .context("no client certificate: pass --cert FILE")?;
        let key = self
            .cert_key
            .clone()
            .or(p.key)
            .context("no client certificate key: pass --cert-key FILE")?;
        let read =
            |f: &PathBuf| std::fs::read(f).with_context(|| format!("cannot read {}", f.display()));
        let key_pem = zeroize::Zeroizing::new(read(&key)?);
        let host = server
            .split("://")
            .nth(1)
            .and_then(|r| r.split([':', '/']).next())
            .unwrap_or("localhost")
            .to_string();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&ca)?))
            .identity(Identity::from_pem(read(&cert)?, key_pem.as_slice()))
            .domain_name(host);
        let channel = Endpoint::from_shared(server.clone())
            .with_context(|| format!("bad server URL {server}"))?
            .tls_config(tls)?
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| Unreachable(format!("cannot reach wardend at {server}: {e}")))?;
        Ok(WardenClient::new(channel).max_decoding_message_size(4 << 20))
    }
}

/// wardend could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(String);

/// The daemon said no.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

pub fn rpc(e: tonic::Status) -> anyhow::Error {
    use tonic::Code::*;
    match e.code() {
        Unavailable | DeadlineExceeded | Unknown
            if e.message().contains("connect") || e.code() == Unavailable =>
        {
            Unreachable(format!("wardend is unreachable: {}", e.message())).into()
        }
        _ => Refused(format!("wardend refused: {}", e.message())).into(),
    }
}

/// An error of a call that records something (a signature): when the failure is not an answer
/// of wardend's own (the connection broke, wardend died or timed out mid-call) the outcome is
/// unknown, which is exit 4 (unreachable) with what to check, never 3 (refused).
pub fn rpc_recording(id: &str) -> impl Fn(tonic::Status) -> anyhow::Error + '_ {
    use tonic::Code::*;
    move |e| {
        match e.code() {
        Unknown | Unavailable | Cancelled | DeadlineExceeded | Internal | Aborted => Unreachable(
            format!(
                "the call to wardend failed before its answer arrived ({:?}: {}); the signature may or may not have been recorded: check with `wardenctl show {id}` before signing again",
                e.code(),
                e.message()
            ),
        )
        .into(),
        _ => rpc(e),
    }
    }
}

/// Map an error to the documented exit code.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Unreachable>().is_some() {
        EXIT_UNREACHABLE
    } else if e.downcast_ref::<Refused>().is_some() {
        EXIT_REFUSED
    } else {
        1
    }
}

fn state_name(s: i32) -> &'static str {
    match proto::RequestState::try_from(s) {
        Ok(proto::RequestState::Pending) => "pending",
        Ok(proto::RequestState::Approved) => "approved",
        Ok(proto::RequestState::Rejected) => "rejected",
        Ok(proto::RequestState::Expired) => "expired",
        Ok(proto::RequestState::Consumed) => "consumed",
        _ => "unknown",
    }
}

/// Recompute what is signed from the fields shown, and check the server agrees.
pub fn local_fields(r: &proto::ApprovalRequest) -> anyhow::Result<(ApprovalFields<'_>, [u8; 32])> {
    if r.destinations.len() != r.output_amounts_msat.len() {
        bail!("the request from wardend is inconsistent (destinations and amounts differ in number); refusing to sign");
    }
    let payee = r
        .destinations
        .iter()
        .zip(&r.output_amounts_msat)
        .map(|(d, v)| format!("{d}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let hash32 = |b: &[u8], what: &str| -> anyhow::Result<[u8; 32]> {
        match b.len() {
            0 => Ok([0; 32]),
            32 => Ok(b.try_into().expect("32 bytes")),
            n => bail!("the {what} from wardend has {n} bytes; refusing to sign"),
        }
    };
    let policy = hex::decode(&r.policy_hash).context("policy hash is not hex")?;
    let freeze_id = || -> anyhow::Result<[u8; 32]> {
        let id = hash32(&r.freeze_id, "freeze id")?;
        let shown = warden::recovery::FreezeState {
            since: r.freeze_since,
            by: r.freeze_by.clone(),
            reason: r.freeze_reason.clone(),
            nonce: r.freeze_nonce.clone(),
            sweep: false,
            member: None,
        };
        if shown.id() != id {
            bail!(
                "the freeze wardend shows does not match the freeze id it names; refusing to sign"
            );
        }
        Ok(id)
    };
    let subject = if r.kind == "recovery" {
        let action =
            warden::policy::RecoveryKind::parse(&r.recovery_action).with_context(|| {
                format!(
                    "unknown recovery action {:?} from wardend",
                    r.recovery_action
                )
            })?;
        let params = hash32(&r.recovery_params_hash, "recovery parameters hash")?;
        // What the key signs must be what is shown: the new policy's text, or the freeze.
        let shown = match action {
            warden::policy::RecoveryKind::ReplaceAdmins | warden::policy::RecoveryKind::Sweep => {
                sha256::Hash::hash(r.recovery_text.as_bytes()).to_byte_array()
            }
            warden::policy::RecoveryKind::Unfreeze => freeze_id()?,
        };
        let member = (!r.recovery_member.is_empty()).then_some(r.recovery_member.as_str());
        let shown = warden::recovery::params_for(shown, member);
        if shown != params {
            bail!("the recovery parameters wardend shows do not match what it asks to sign; refusing to sign");
        }
        Subject::Recovery {
            action,
            params_hash: params,
            earliest_at: r.recovery_earliest_at,
        }
    } else if r.kind == "unfreeze" {
        // The digest covers the freeze through its id: check the freeze shown is the one signed.
        let id = freeze_id()?;
        Subject::Unfreeze {
            freeze_id: id,
            since: r.freeze_since,
            by: r.freeze_by.clone(),
            reason: r.freeze_reason.clone(),
        }
    } else if r.kind == "policy-change" {
        // The digest covers the file through its hash: check the text shown is the text signed.
        let hash = hash32(&r.policy_change_hash, "policy change hash")?;
        let shown = sha256::Hash::hash(r.policy_change_text.as_bytes()).to_byte_array();
        if hash != shown {
            bail!("the policy text from wardend does not hash to the policy change it names; refusing to sign");
        }
        Subject::PolicyChange {
            hash,
            loosens: r.loosens,
            delay_secs: r.delay_secs,
        }
    } else {
        Subject::Payment {
            payment_hash: hash32(&r.payment_hash, "payment hash")?,
            amount_msat: r.amount_msat,
            payee,
        }
    };
    let fields = ApprovalFields {
        id: &r.id,
        subject,
        policy_hash: hash32(&policy, "policy hash")?,
        expires_at: r.expires_at,
        rule_tag: &r.rule_tag,
        need: r.need as usize,
        members: r.of.clone(),
    };
    let digest = approval_digest(&fields, Decision::Approve);
    if digest.as_slice() != r.approval_digest.as_slice() {
        bail!("the approval digest from wardend does not match the request it shows; refusing to sign (is something between you and wardend altering messages?)");
    }
    Ok((fields, digest))
}

fn print_request(r: &proto::ApprovalRequest) {
    println!("request      {}", r.id);
    println!("state        {}", state_name(r.state));
    println!("kind         {}", r.kind);
    if r.kind == "policy-change" {
        print_change(r);
    } else if r.kind == "recovery" {
        println!("action       {}", r.recovery_action);
        if r.recovery_started_at > 0 {
            println!("started      {}", format_utc(r.recovery_started_at));
        } else {
            println!("started      not yet (awaits the recovery key's signature)");
        }
        println!("executable   from {}", format_utc(r.recovery_earliest_at));
        for c in &r.policy_changes {
            println!("change       {c}");
        }
    } else if r.kind == "unfreeze" {
        println!(
            "lifts        the freeze of {} by {}: {}",
            format_utc(r.freeze_since),
            r.freeze_by,
            r.freeze_reason
        );
    } else {
        println!(
            "amount       {} ({} msat)",
            format_msat(r.amount_msat),
            r.amount_msat
        );
    }
    for (d, v) in r.destinations.iter().zip(&r.output_amounts_msat) {
        println!("payee        {d} ({})", format_msat(*v));
    }
    if !r.description.is_empty() {
        println!("description  {}", r.description);
    }
    if !r.payment_hash.is_empty() {
        println!("payment hash {}", hex::encode(&r.payment_hash));
    }
    println!(
        "rule         {} (needs {} of {})",
        r.rule_tag,
        r.need,
        r.of.join(", ")
    );
    println!("created      {}", format_utc(r.created_at));
    println!("expires      {}", format_utc(r.expires_at));
    println!("policy       {}", r.policy_hash);
    let approvals = r
        .signatures
        .iter()
        .filter(|s| s.decision == "approve")
        .count();
    println!("signed       {} of {} approvals", approvals, r.need);
    for s in &r.signatures {
        let reason = if s.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", s.reason)
        };
        println!(
            "  {} {}s at {}{reason}",
            s.admin,
            s.decision,
            format_utc(s.signed_at)
        );
    }
}

/// What a policy change does, as the admin must see it before signing.
pub fn print_change(r: &proto::ApprovalRequest) {
    println!("proposer     {}", r.proposer);
    println!("new policy   {}", hex::encode(&r.policy_change_hash));
    if r.loosens {
        println!(
            "effect       LOOSENS: takes effect {} after the quorum, unless an admin vetoes it",
            warden::policy::units::format_duration(r.delay_secs)
        );
    } else {
        println!("effect       tightens only: takes effect when the quorum signs");
    }
    if r.effective_at > 0 {
        println!("takes effect {}", format_utc(r.effective_at));
    }
    if r.policy_changes.is_empty() {
        println!("changes      none to any rule (comments or layout only)");
    }
    for c in &r.policy_changes {
        println!("change       {c}");
    }
}

fn json_request(r: &proto::ApprovalRequest) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "state": state_name(r.state),
        "kind": r.kind,
        "amount_msat": r.amount_msat,
        "destinations": r.destinations,
        "output_amounts_msat": r.output_amounts_msat,
        "description": r.description,
        "payment_hash": hex::encode(&r.payment_hash),
        "rule_tag": r.rule_tag,
        "tags": r.tags,
        "need": r.need,
        "of": r.of,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "policy_hash": r.policy_hash,
        "approval_digest": hex::encode(&r.approval_digest),
        "policy_change_hash": hex::encode(&r.policy_change_hash),
        "policy_changes": r.policy_changes,
        "loosens": r.loosens,
        "delay_secs": r.delay_secs,
        "effective_at": r.effective_at,
        "proposer": r.proposer,
        "member": r.member,
        "signatures": r.signatures.iter().map(|s| serde_json::json!({"admin": s.admin, "decision": s.decision, "signed_at": s.signed_at, "reason": s.reason})).collect::<Vec<_>>(),
    })
}

pub async fn pending(conn: &Conn, json: bool) -> anyhow::Result<()> {
    let mut client = conn.connect().await?;
    let mut list = proto::ListPendingResponse::default();
    let mut token = String::new();
    // Every page, so a long queue shows whole.
    loop {
        let page = client
            .list_pending(proto::ListPendingRequest {
                page_size: 1_000,
                page_token: token,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        list.requests.extend(page.requests);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &list.requests.iter().map(json_request).collect::<Vec<_>>()
            )?
        );
        return Ok(());
    }
    if list.requests.is_empty() {
        println!("no pending requests");
        return Ok(());
    }
    // In a fleet, the node each payment is for: an approval is that member's to use.
    let fleet = list.requests.iter().any(|r| !r.member.is_empty());
    let node = |r: &proto::ApprovalRequest| {
        if fleet {
            format!("{:<14} ", if r.member.is_empty() { "-" } else { &r.member })
        } else {
            String::new()
        }
    };
    println!(
        "{:<20} {}{:>18} {:<9} {:<24} {:<22} payee",
        "ID",
        if fleet {
            format!("{:<14} ", "NODE")
        } else {
            String::new()
        },
        "AMOUNT",
        "SIGNED",
        "RULE",
        "EXPIRES"
    );
    for r in &list.requests {
        let approvals = r
            .signatures
            .iter()
            .filter(|s| s.decision == "approve")
            .count();
        println!(
            "{:<20} {}{:>18} {:<9} {:<24} {:<22} {}",
            r.id,
            node(r),
            format_msat(r.amount_msat),
            format!("{approvals}/{}", r.need),
            r.rule_tag,
            format_utc(r.expires_at),
            r.destinations.join(", ")
        );
    }
    Ok(())
}

pub async fn show(
    conn: &Conn,
    id: &str,
    message: bool,
    decision: Decision,
    json: bool,
) -> anyhow::Result<()> {
    let r = conn
        .connect()
        .await?
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .map_err(rpc)?
        .into_inner();
    if message {
        let (fields, _) = local_fields(&r)?;
        // Exactly the text a hardware wallet signs (the final newline is not part of it).
        println!("{}", approval_text(&fields, decision));
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&json_request(&r))?);
    } else {
        print_request(&r);
    }
    Ok(())
}

pub async fn decide(
    conn: &Conn,
    id: &str,
    decision: Decision,
    key: Option<PathBuf>,
    signature: Option<String>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let admin = conn.admin()?;
    let mut client = conn.connect().await?;
    let r = client
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .map_err(rpc)?
        .into_inner();
    let (fields, _) = local_fields(&r)?;
    let (format, sig) = match (key.or(conn.admin_key()?), signature) {
        (_, Some(b64)) => {
            let sig = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context(
                    "--signature is not base64 (paste the output of your wallet's sign-message)",
                )?;
            (proto::SignatureFormat::BitcoinMessage, sig)
        }
        (Some(path), None) => {
            let key = AdminKey::load(&path)?;
            (
                proto::SignatureFormat::Bip340,
                key.sign_approval(&fields, decision).to_vec(),
            )
        }
        (None, None) => bail!(
            "sign with --key FILE (BIP-340) or pass a wallet signature with --signature BASE64"
        ),
    };
    let req = proto::DecisionRequest {
        id: id.into(),
        admin,
        format: format as i32,
        signature: sig,
        reason: reason.unwrap_or_default(),
    };
    let out = match decision {
        Decision::Approve => client.approve(req).await,
        Decision::Reject => client.reject(req).await,
        Decision::Reopen => client.reopen(req).await,
    }
    .map_err(rpc_recording(id))?
    .into_inner();
    println!("{}", out.message);
    Ok(())
}

pub async fn watch(conn: &Conn) -> anyhow::Result<()> {
    let mut stream = conn
        .connect()
        .await?
        .watch_events(proto::WatchEventsRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    while let Some(e) = stream.message().await.map_err(rpc)? {
        let kind = proto::EventKind::try_from(e.kind)
            .map(|k| {
                k.as_str_name()
                    .trim_start_matches("EVENT_KIND_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|_| "event".into());
        let tags = if e.tags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", e.tags.join(", "))
        };
        let id = if e.request_id.is_empty() {
            String::new()
        } else {
            format!(" {}", e.request_id)
        };
        println!("{} {kind}{id}{tags}: {}", format_utc(e.time), e.message);
    }
    Ok(())
}

/// `wardenctl fleet`: the members as the policy admits them and the database binds them.
pub async fn fleet(conn: &Conn, json: bool) -> anyhow::Result<()> {
    let f = conn
        .connect()
        .await?
        .list_fleet(proto::ListFleetRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        let members: Vec<_> = f
            .members
            .iter()
            .map(|m| {
                serde_json::json!({
                    "name": m.name, "node_id": m.node_id, "seed_id": m.seed_id,
                    "joined_at": m.joined_at, "seen_at": m.seen_at, "standing": m.standing,
                    "frozen_alone": m.frozen_alone, "this": m.this,
                })
            })
            .collect();
        let out = serde_json::json!({ "fleet": f.fleet, "frozen": f.frozen, "members": members });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "fleet {}{}",
        f.fleet,
        if f.frozen {
            ": FROZEN (every member refuses until the quorum lifts it)"
        } else {
            ""
        }
    );
    println!(
        "  {:<14} {:<11} {:<68} {:<18} {:<20} FROZEN",
        "MEMBER", "STANDING", "NODE", "SEED", "LAST STARTED"
    );
    for m in &f.members {
        let seed = if m.seed_id.is_empty() {
            "-".to_string()
        } else {
            format!("{}…", &m.seed_id[..m.seed_id.len().min(16)])
        };
        let seen = if m.seen_at == 0 {
            "-".to_string()
        } else {
            warden::clock::format_utc(m.seen_at)
        };
        println!(
            "{} {:<14} {:<11} {:<68} {:<18} {:<20} {}",
            if m.this { "*" } else { " " },
            m.name,
            m.standing,
            m.node_id,
            seed,
            seen,
            if m.frozen_alone { "alone" } else { "" }
        );
    }
    println!("  (* answered this call)");
    Ok(())
}

/// `wardenctl channels`: the liquidity view, from VLS's channel state.
pub async fn channels(conn: &Conn, json: bool) -> anyhow::Result<()> {
    let list = conn
        .connect()
        .await?
        .list_channels(proto::ListChannelsRequest {})
        .await
        .map_err(rpc)?
        .into_inner()
        .channels;
    if json {
        let rows: Vec<_> = list
            .iter()
            .map(|c| {
                serde_json::json!({
                    "id": c.id, "peer": c.peer, "funding": c.funding, "outbound": c.outbound,
                    "state": c.state, "capacity_msat": c.capacity_msat, "local_msat": c.local_msat,
                    "remote_msat": c.remote_msat, "offered_htlcs": c.offered_htlcs,
                    "offered_msat": c.offered_msat, "received_htlcs": c.received_htlcs,
                    "received_msat": c.received_msat,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no channels");
        return Ok(());
    }
    let sat = |msat: u64| warden::policy::units::group_thousands(msat / 1_000);
    println!(
        "{:<18} {:<12} {:>14} {:>14} {:>14} {:>10} {:>10}",
        "PEER", "STATE", "CAPACITY sat", "LOCAL sat", "REMOTE sat", "HTLC OUT", "HTLC IN"
    );
    let (mut cap, mut local, mut remote, mut out_n, mut in_n) = (0u128, 0u128, 0u128, 0u64, 0u64);
    for c in &list {
        let peer = if c.peer.len() > 16 {
            format!("{}…", &c.peer[..16])
        } else if c.peer.is_empty() {
            "?".to_string()
        } else {
            c.peer.clone()
        };
        println!(
            "{:<18} {:<12} {:>14} {:>14} {:>14} {:>10} {:>10}",
            peer,
            c.state,
            sat(c.capacity_msat),
            sat(c.local_msat),
            sat(c.remote_msat),
            format!("{} ({})", c.offered_htlcs, sat(c.offered_msat)),
            format!("{} ({})", c.received_htlcs, sat(c.received_msat)),
        );
        cap += u128::from(c.capacity_msat);
        local += u128::from(c.local_msat);
        remote += u128::from(c.remote_msat);
        out_n += u64::from(c.offered_htlcs);
        in_n += u64::from(c.received_htlcs);
    }
    let total = |m: u128| warden::policy::units::group_thousands(m / 1_000);
    println!(
        "{:<18} {:<12} {:>14} {:>14} {:>14} {:>10} {:>10}",
        format!(
            "total, {} channel{}",
            list.len(),
            if list.len() == 1 { "" } else { "s" }
        ),
        "",
        total(cap),
        total(local),
        total(remote),
        out_n,
        in_n
    );
    Ok(())
}

pub async fn status(conn: &Conn, json: bool) -> anyhow::Result<()> {
    let s = conn
        .connect()
        .await?
        .status(proto::StatusRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "node_id": s.node_id, "policy_hash": s.policy_hash, "policy_name": s.policy_name,
                "pending": s.pending, "node_connection": s.node_connection, "time": s.time,
                "auth_failures": s.auth_failures, "policy_note": s.policy_note, "frozen": s.frozen, "recovery": s.recovery,
                "ha_role": s.ha_role, "ha_epoch": s.ha_epoch, "ha_lease_age_ms": s.ha_lease_age_ms,
                "fleet": s.fleet,
                "windows": s.windows.iter().map(|w| serde_json::json!({"tag": w.tag, "window": w.window, "scope": w.scope, "used_msat": w.used_msat, "limit_msat": w.limit_msat, "used_count": w.used_count, "limit_count": w.limit_count})).collect::<Vec<_>>(),
            }))?
        );
        return Ok(());
    }
    println!(
        "node id      {}",
        if s.node_id.is_empty() {
            "(not yet known)"
        } else {
            &s.node_id
        }
    );
    println!("node         {}", s.node_connection);
    if !s.ha_role.is_empty() {
        println!(
            "role         {} (lease epoch {}, renewed {:.1} s ago)",
            s.ha_role,
            s.ha_epoch,
            s.ha_lease_age_ms as f64 / 1000.0
        );
    }
    if !s.fleet.is_empty() {
        println!("fleet        {}", s.fleet);
    }
    println!("policy       {} {}", s.policy_name, s.policy_hash);
    if !s.policy_note.is_empty() {
        println!("policy file  {}", s.policy_note);
    }
    if !s.frozen.is_empty() {
        println!("FROZEN       {}", s.frozen);
    }
    for r in &s.recovery {
        println!("recovery     {r}");
    }
    println!("pending      {}", s.pending);
    println!("time         {}", format_utc(s.time));
    for w in &s.windows {
        let pct = if w.limit_msat > 0 {
            format!(
                " ({:.0} %)",
                w.used_msat as f64 * 100.0 / w.limit_msat as f64
            )
        } else {
            String::new()
        };
        let count = if w.limit_count > 0 {
            format!(", {} of {} payments", w.used_count, w.limit_count)
        } else {
            String::new()
        };
        println!(
            "window       {:<20} {:>4} {:<20} {} of {}{pct}{count}",
            w.tag,
            w.window,
            w.scope,
            format_msat(w.used_msat),
            format_msat(w.limit_msat)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_whose_answer_never_came_is_outcome_unknown_not_refused() {
        // Issue 25, item 14: wardend dying mid-call reaches tonic as a transport error.
        for status in [
            tonic::Status::unknown("transport error"),
            tonic::Status::unavailable("connection reset"),
            tonic::Status::cancelled("h2 protocol error: stream closed"),
            tonic::Status::internal("h2 protocol error"),
        ] {
            let e = rpc_recording("q7")(status);
            assert_eq!(exit_code(&e), EXIT_UNREACHABLE, "{e}");
            assert!(
                e.to_string().contains("check with `wardenctl show q7`"),
                "{e}"
            );
        }
        // wardend's own answers stay refusals.
        let e = rpc_recording("q7")(tonic::Status::failed_precondition("already signed"));
        assert_eq!(exit_code(&e), EXIT_REFUSED);
    }
}
