//! Governance through wardend: propose a policy file, see what a proposal changes, the chain of
//! policies that were in force, and the freeze. Signing a proposal or an unfreeze is
//! `wardenctl approve ID` (or `reject ID`, which vetoes it), like any request.

use crate::admin::{print_change, rpc, Conn};
use anyhow::Context;
use std::path::Path;
use warden::api::proto;
use warden::clock::format_utc;

/// `wardenctl policy propose FILE`.
pub async fn propose(conn: &Conn, file: &Path) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the policy file {}", file.display()))?;
    let resp = conn
        .connect()
        .await?
        .propose_policy(proto::ProposePolicyRequest { text })
        .await;
    let resp = match resp {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            // Every problem as FILE:LINE:COL: message, as `policy check` prints them.
            let msg = s.message();
            let mut lines = msg.lines();
            if let Some(first) = lines.next() {
                eprintln!("{first}");
            }
            for l in lines {
                eprintln!("{}:{l}", file.display());
            }
            return Ok(1);
        }
        Err(s) => return Err(rpc(s)),
    };
    let r = resp.request.context("wardend sent no request")?;
    println!(
        "{} {}",
        if resp.created {
            "proposed"
        } else {
            "already proposed:"
        },
        resp.message
    );
    print_change(&r);
    println!("next: two admins run `wardenctl approve {}`; any admin may veto with `wardenctl reject {}`", r.id, r.id);
    Ok(0)
}

/// `wardenctl policy diff ID`: every change the proposal makes, classified.
pub async fn diff(conn: &Conn, id: &str) -> anyhow::Result<i32> {
    let r = conn
        .connect()
        .await?
        .get_request(proto::GetRequestRequest { id: id.into() })
        .await
        .map_err(rpc)?
        .into_inner();
    if r.kind != "policy-change" {
        anyhow::bail!("request {id} is a {} request, not a policy change", r.kind);
    }
    println!("request      {}", r.id);
    print_change(&r);
    Ok(0)
}

/// `wardenctl policy history`: the chain of policies, oldest first.
pub async fn history(conn: &Conn, json: bool) -> anyhow::Result<i32> {
    let h = conn
        .connect()
        .await?
        .policy_history(proto::PolicyHistoryRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if json {
        let versions: Vec<_> = h
            .versions
            .iter()
            .map(|v| {
                serde_json::json!({
                    "seq": v.seq, "hash": v.hash, "request_id": v.request_id,
                    "approved_by": v.approved_by, "proposed_at": v.proposed_at,
                    "took_effect_at": v.took_effect_at, "changes": v.changes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&versions)?);
        return Ok(0);
    }
    let last = h.versions.len();
    for (i, v) in h.versions.iter().enumerate() {
        let how = if v.request_id.is_empty() {
            "the first policy".to_string()
        } else {
            format!("{}, approved by {}", v.request_id, v.approved_by.join(", "))
        };
        println!(
            "{:>3}  {}  in force from {}  ({how}){}",
            v.seq,
            v.hash,
            format_utc(v.took_effect_at),
            if i + 1 == last { "  <- in force" } else { "" }
        );
        for c in &v.changes {
            println!("       {c}");
        }
    }
    Ok(0)
}

/// `wardenctl freeze --reason ...`.
pub async fn freeze(conn: &Conn, reason: &str, member: Option<&str>) -> anyhow::Result<i32> {
    let r = conn
        .connect()
        .await?
        .freeze(proto::FreezeRequest {
            reason: reason.into(),
            member: member.unwrap_or_default().into(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    println!("{}", r.message);
    if r.created {
        println!(
            "frozen since {} by {}: {}",
            format_utc(r.since),
            r.by,
            r.reason
        );
    }
    Ok(0)
}

/// `wardenctl unfreeze`: opens the request the governance quorum approves.
pub async fn unfreeze(conn: &Conn, member: Option<&str>) -> anyhow::Result<i32> {
    let r = conn
        .connect()
        .await?
        .unfreeze(proto::UnfreezeRequest {
            member: member.unwrap_or_default().into(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let req = r.request.context("wardend sent no request")?;
    println!(
        "{} {}",
        if r.created { "opened" } else { "already open:" },
        r.message
    );
    println!(
        "next: the governance quorum runs `wardenctl approve {}`",
        req.id
    );
    Ok(0)
}

async fn open(
    conn: &Conn,
    action: &str,
    policy: Option<&Path>,
    member: Option<&str>,
) -> anyhow::Result<proto::ApprovalRequest> {
    let policy_text = match policy {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the policy file {}", p.display()))?,
        None => String::new(),
    };
    conn.connect()
        .await?
        .open_recovery(proto::OpenRecoveryRequest {
            action: action.into(),
            policy_text,
            member: member.unwrap_or_default().into(),
        })
        .await
        .map_err(rpc)
        .map(|r| r.into_inner())
}

/// `wardenctl recovery open ACTION`: prints what the recovery key signs (for a hardware wallet).
pub async fn recovery_open(
    conn: &Conn,
    action: &str,
    policy: Option<&Path>,
    member: Option<&str>,
) -> anyhow::Result<()> {
    let r = open(conn, action, policy, member).await?;
    let (fields, _) = crate::admin::local_fields(&r)?;
    println!(
        "recovery action {} opened; sign this text with the recovery key's wallet, then run",
        r.id
    );
    println!(
        "  wardenctl recovery start {action} --id {} --signature BASE64",
        r.id
    );
    if let Some(m) = member {
        println!("it applies to fleet member {m} alone (the parameters' hash covers the name)");
    }
    println!(
        "{}",
        warden_client::approval::approval_text(&fields, warden_client::approval::Decision::Approve)
    );
    Ok(())
}

/// `wardenctl recovery start ACTION --key FILE` (or `--id ID --signature BASE64`).
pub async fn recovery_start(
    conn: &Conn,
    action: &str,
    policy: Option<&Path>,
    member: Option<&str>,
    key: Option<&Path>,
    signature: Option<String>,
    id: Option<String>,
) -> anyhow::Result<i32> {
    use base64::Engine;
    let mut client = conn.connect().await?;
    let (r, format, sig) = match (key, signature) {
        (Some(path), None) => {
            let r = open(conn, action, policy, member).await?;
            let (_, digest) = crate::admin::local_fields(&r)?;
            let key = warden::approval::keys::AdminKey::load(path)?;
            (
                r,
                proto::SignatureFormat::Bip340,
                key.sign_digest(digest).to_vec(),
            )
        }
        (None, Some(b64)) => {
            let id = id.context(
                "with --signature, name the opened action with --id (wardenctl recovery open prints it)",
            )?;
            let r = client
                .get_request(proto::GetRequestRequest { id })
                .await
                .map_err(rpc)?
                .into_inner();
            crate::admin::local_fields(&r)?;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .context("--signature is not base64")?;
            (r, proto::SignatureFormat::BitcoinMessage, sig)
        }
        _ => anyhow::bail!(
            "sign with --key FILE (the recovery key, BIP-340), or pass --id ID --signature BASE64 from a wallet"
        ),
    };
    let out = client
        .start_recovery(proto::DecisionRequest {
            id: r.id.clone(),
            admin: warden::approval::RECOVERY_KEY.into(),
            format: format as i32,
            signature: sig,
            reason: String::new(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    println!("{}", out.message);
    Ok(0)
}

/// `wardenctl recovery execute ID`.
pub async fn recovery_execute(conn: &Conn, id: &str) -> anyhow::Result<i32> {
    let out = conn
        .connect()
        .await?
        .execute_recovery(proto::ExecuteRecoveryRequest { id: id.into() })
        .await
        .map_err(rpc)?
        .into_inner();
    println!("{}", out.message);
    Ok(0)
}
