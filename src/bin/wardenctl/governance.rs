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
pub async fn freeze(conn: &Conn, reason: &str) -> anyhow::Result<i32> {
    let r = conn
        .connect()
        .await?
        .freeze(proto::FreezeRequest {
            reason: reason.into(),
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
pub async fn unfreeze(conn: &Conn) -> anyhow::Result<i32> {
    let r = conn
        .connect()
        .await?
        .unfreeze(proto::UnfreezeRequest {})
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
