//! `wardenctl migrate`: a stopped node's state moved, verified record by record and by its audit
//! chain: from sled into Warden's append-only log in place (`--from sled --to log`), or from
//! either into the PostgreSQL database a standby can share (`--to postgres`).

use anyhow::Context;
use std::sync::Arc;
use warden::config::{ConfigArgs, StoreConfig};
use warden::store::postgres::PgBackend;
use warden::store::LocalBackend;

pub fn run(from: &str, to: &str, args: &ConfigArgs) -> anyhow::Result<i32> {
    match (from, to) {
        ("sled", "log") => return sled_to_log(args),
        ("sled" | "log", "postgres") => {}
        _ => anyhow::bail!(
            "--from {from} --to {to}: supported are --from sled --to log (the data directory's sled state into the append-only log, in place) and --from sled|log --to postgres (the data directory's state into the PostgreSQL database named by store.url)"
        ),
    }
    // The destination is the PostgreSQL database the configuration names, whatever backend it
    // runs on today.
    let mut args = args.clone();
    args.store_backend = Some("postgres".into());
    let config = args.resolve()?;
    let StoreConfig::Postgres(settings) = &config.store else {
        unreachable!("the backend was set to postgres above")
    };
    let hsm = warden::hsm::Hsm::open(&config.hsm)?;
    let key = hsm.audit_public_key()?;
    let anchor = hsm.audit_anchor()?;
    let local_dir = config.data_dir.join("state");
    let found = LocalBackend::in_dir(&local_dir);
    if found != LocalBackend::named(from) {
        anyhow::bail!(
            "--from {from}: {} holds {}; name the backend it holds",
            local_dir.display(),
            match found {
                Some(b) => format!("{} state (--from {})", b.name(), b.name()),
                None => "no state (point data_dir at the stopped node's data directory)".into(),
            }
        );
    }
    let pg = Arc::new(
        PgBackend::open(settings.clone())
            .context("opening the PostgreSQL state database (store.url)")?,
    );
    // Holding the lease keeps every wardend on this database a standby while the copy runs.
    match pg.try_acquire()? {
        Some(_) => {}
        None => {
            let holder = pg
                .current()?
                .map(|r| format!("{} (epoch {})", r.holder, r.epoch))
                .unwrap_or_default();
            anyhow::bail!("a wardend is active on the destination database: {holder} holds its lease. Stop every wardend on it, then migrate");
        }
    }
    let copied = match warden::store::migrate::from_local(&local_dir, pg.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = pg.release();
            return Err(e)
                .context("copying the local state (stop wardend first: it holds the lock)");
        }
    };
    let store = warden::store::Store::new(pg.clone());
    let finding = warden::audit::verify::verify_store(&store, &key, anchor.as_ref())?;
    let _ = pg.release();
    let total: usize = copied.iter().map(|c| c.records).sum();
    println!(
        "migrated {total} records from {} to PostgreSQL ({})",
        local_dir.display(),
        settings.conninfo
    );
    print_copied(&copied);
    match finding {
        warden::audit::verify::Finding::Ok {
            records,
            checkpoints,
            ..
        } => {
            println!(
                "audit chain verifies on the copy: {records} records, {checkpoints} checkpoints"
            );
            println!("set store.backend = \"postgres\" and start wardend; keep {} until the node has run on PostgreSQL", local_dir.display());
            Ok(0)
        }
        warden::audit::verify::Finding::Bad { seq, problem } => {
            eprintln!("the copied audit chain does not verify at record {seq}: {problem}");
            Ok(1)
        }
    }
}

fn print_copied(copied: &[warden::store::migrate::Copied]) {
    for c in copied {
        println!(
            "  {:<10} {:>8} records  sha256 {}",
            c.ns.name(),
            c.records,
            hex::encode(c.digest)
        );
    }
    let vls = copied
        .iter()
        .find(|c| c.ns == warden::store::Namespace::Vls)
        .map(|c| hex::encode(c.digest))
        .unwrap_or_default();
    println!("VLS state hash {vls} (the same on both sides)");
}

/// `--from sled --to log`: the sled state in data_dir/state becomes the log in the same place;
/// the sled database is kept beside it.
fn sled_to_log(args: &ConfigArgs) -> anyhow::Result<i32> {
    let mut args = args.clone();
    args.store_backend = Some("log".into());
    let config = args.resolve()?;
    let hsm = warden::hsm::Hsm::open(&config.hsm)?;
    let key = hsm.audit_public_key()?;
    let anchor = hsm.audit_anchor()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut finding = None;
    let moved = warden::store::migrate::sled_to_log_in_place(&config.data_dir, now, |log| {
        let store = warden::store::Store::new(log.clone());
        let f = warden::audit::verify::verify_store(&store, &key, anchor.as_ref()).map_err(|e| {
            warden::store::StoreError::Io {
                op: "migrate",
                detail: format!("verifying the copied audit chain: {e}"),
            }
        })?;
        if let warden::audit::verify::Finding::Bad { seq, problem } = &f {
            return Err(warden::store::StoreError::Io {
                op: "migrate",
                detail: format!(
                    "the copied audit chain does not verify at record {seq}: {problem}; the sled state is left where it was"
                ),
            });
        }
        finding = Some(f);
        Ok(())
    })
    .context("moving the sled state into the log (stop wardend first: it holds the lock)")?;
    let total: usize = moved.copied.iter().map(|c| c.records).sum();
    if moved.finished_earlier {
        println!(
            "an earlier migration had already put the log in place; finished it (the sled database renamed) and compared both again"
        );
    }
    println!(
        "migrated {total} records from sled to the state log in {}",
        config.data_dir.join("state").display()
    );
    print_copied(&moved.copied);
    if let Some(warden::audit::verify::Finding::Ok {
        records,
        checkpoints,
        ..
    }) = finding
    {
        println!("audit chain verifies on the copy: {records} records, {checkpoints} checkpoints");
    }
    println!(
        "the sled database is kept in {}; remove store.backend = \"sled\" from the configuration (the log is the default) or set it to \"log\", start wardend, and delete the sled copy once the node has run on the log",
        moved.kept.display()
    );
    Ok(0)
}
