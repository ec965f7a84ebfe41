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
    // Why the last attempt to log in again failed, shown with the probe's error: "the token
    // refused the PIN" is what the operator needs to read, not only "no session".
    let mut login_error: Option<String> = None;
    // The probe's first error of this outage: the cause. Later probes fail in other ways as
    // wardend tears sessions and the library down, and would only repeat the event.
    let mut outage_cause: Option<String> = None;
    let mut refusals_seen = hsm.pin_refusals();
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
                login_error = None;
                outage_cause = None;
            }
            Err(e) => {
                let cause = outage_cause.get_or_insert(e).clone();
                if Instant::now() >= next_login {
                    let started = Instant::now();
                    let relogged = {
                        let hsm = hsm.clone();
                        tokio::task::spawn_blocking(move || hsm.relogin())
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r.map_err(|e| e.to_string()))
                    };
                    // Only PIN refusals the token itself gave count as failed logins; a PIN
                    // wardend declined to offer again is not a C_Login call.
                    let refusals = hsm.pin_refusals();
                    if refusals > refusals_seen {
                        core.metrics
                            .hsm_op("login", started.elapsed().as_secs_f64(), false);
                        refusals_seen = refusals;
                    }
                    match relogged {
                        Ok(()) => {
                            core.metrics
                                .hsm_op("login", started.elapsed().as_secs_f64(), true);
                            login_error = None;
                            core.set_hsm_health(Ok(()));
                            outage_cause = None;
                            backoff = every;
                            next_login = Instant::now();
                            continue;
                        }
                        Err(le) => {
                            if login_error.as_ref() != Some(&le) {
                                tracing::warn!(error = %le, "logging in to the HSM again failed; retrying with backoff");
                            }
                            login_error = Some(le);
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                    next_login = Instant::now() + backoff;
                }
                core.set_hsm_health(Err(match &login_error {
                    Some(le) => format!("{cause}; logging in again: {le}"),
                    None => cause,
                }));
            }
        }
    }
}
