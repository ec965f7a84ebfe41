//! The HSM watch: a cheap probe every second, so an HSM that can no longer sign stops
//! approvals within a second of the fault, not when the next audit checkpoint happens to be due;
//! and a fresh login, with backoff, until the token answers again.

use super::Core;
use crate::hsm::Hsm;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait between two attempts to log in again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Probe `hsm` every `every` until `stop` changes, telling `core` whether it can sign.
pub async fn watch_hsm(
    hsm: Hsm,
    core: Arc<Core>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = every;
    let mut next_login = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.changed() => break,
        }
        let probe = {
            let hsm = hsm.clone();
            let started = Instant::now();
            let r = tokio::task::spawn_blocking(move || hsm.probe())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            core.metrics
                .hsm_op("probe", started.elapsed().as_secs_f64(), r.is_ok());
            r
        };
        match probe {
            Ok(()) => {
                core.set_hsm_health(Ok(()));
                backoff = every;
            }
            Err(e) => {
                core.set_hsm_health(Err(e));
                if Instant::now() >= next_login {
                    let hsm = hsm.clone();
                    let relogged = tokio::task::spawn_blocking(move || hsm.relogin()).await;
                    if !matches!(relogged, Ok(Ok(()))) {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    next_login = Instant::now() + backoff;
                }
            }
        }
    }
}
