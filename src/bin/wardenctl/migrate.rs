//! `wardenctl migrate --from sled --to postgres`: a stopped node's state moved to the database a
//! standby can share, verified record by record and by its audit chain.

use anyhow::Context;
use std::sync::Arc;
use warden::config::{ConfigArgs, StoreConfig};
use warden::store::postgres::PgBackend;

pub fn run(from: &str, to: &str, args: &ConfigArgs) -> anyhow::Result<i32> {
    if (from, to) != ("sled", "postgres") {
        anyhow::bail!(
            "--from {from} --to {to}: only --from sled --to postgres is supported (the data directory's sled state into the PostgreSQL database named by store.url)"
        );
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
    let sled_dir = config.data_dir.join("state");
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
    let copied = match warden::store::migrate::from_sled(&sled_dir, pg.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = pg.release();
            return Err(e)
                .context("copying the sled state (stop wardend first: it holds the lock)");
        }
    };
    let store = warden::store::Store::new(pg.clone());
    let finding = warden::audit::verify::verify_store(&store, &key, anchor.as_ref())?;
    let _ = pg.release();
    let total: usize = copied.iter().map(|c| c.records).sum();
    println!(
        "migrated {total} records from {} to PostgreSQL ({})",
        sled_dir.display(),
        settings.conninfo
    );
    for c in &copied {
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
    match finding {
        warden::audit::verify::Finding::Ok {
            records,
            checkpoints,
            ..
        } => {
            println!(
                "audit chain verifies on the copy: {records} records, {checkpoints} checkpoints"
            );
            println!("set store.backend = \"postgres\" and start wardend; keep the sled directory until the node has run on PostgreSQL");
            Ok(0)
        }
        warden::audit::verify::Finding::Bad { seq, problem } => {
            eprintln!("the copied audit chain does not verify at record {seq}: {problem}");
            Ok(1)
        }
    }
}
