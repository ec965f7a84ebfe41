//! The HSM watch: a cheap probe every second, so an HSM that can no longer sign stops
//! approvals within a second of the fault, not when the next audit checkpoint happens to be due;
//! and a fresh login, with backoff, until the token answers again.

use super::Core;
use crate::hsm::Hsm;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait between two attempts to log in again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How long a probe may take before the HSM counts as not answering. A call that hangs keeps
/// its thread; no second probe is started until it returns.
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);
/// How long logging in again may take before the watch stops waiting for it (it goes on in
/// its thread, and no second attempt starts until it returns).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking HSM call on its own thread, awaited at most `limit`; a call still running from
/// an earlier round is waited for instead of starting another.
async fn bounded(
    task: &mut Option<tokio::task::JoinHandle<Result<(), String>>>,
    limit: Duration,
    what: &str,
    start: impl FnOnce() -> tokio::task::JoinHandle<Result<(), String>>,
) -> Result<(), String> {
    let handle = task.get_or_insert_with(start);
    match tokio::time::timeout(limit, &mut *handle).await {
        Ok(joined) => {
            *task = None;
            joined.map_err(|e| e.to_string()).and_then(|r| r)
        }
        Err(_) => Err(format!(
            "the HSM did not answer {what} within {} ms",
            limit.as_millis()
        )),
    }
}

/// Probe `hsm` every `every` until `stop` changes, telling `core` whether it can sign. A
/// failed probe refuses approvals at once, before anything else is tried.
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
    let mut probe_task = None;
    let mut login_task = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {},
            _ = stop.changed() => break,
        }
        let started = Instant::now();
        let probe = bounded(&mut probe_task, PROBE_TIMEOUT, "its probe", || {
            let hsm = hsm.clone();
            tokio::task::spawn_blocking(move || hsm.probe().map_err(|e| e.to_string()))
        })
        .await;
        core.metrics
            .hsm_op("probe", started.elapsed().as_secs_f64(), probe.is_ok());
        let e = match probe {
            Ok(()) => {
                core.set_hsm_health(Ok(()));
                backoff = every;
                login_error = None;
                outage_cause = None;
                continue;
            }
            Err(e) => e,
        };
        let cause = outage_cause.get_or_insert(e).clone();
        let health = |login_error: &Option<String>| match login_error {
            Some(le) => format!("{cause}; logging in again: {le}"),
            None => cause.clone(),
        };
        // Refuse first; then try to get the token back.
        core.set_hsm_health(Err(health(&login_error)));
        if Instant::now() < next_login {
            continue;
        }
        let started = Instant::now();
        let relogged = bounded(&mut login_task, LOGIN_TIMEOUT, "a new login", || {
            let hsm = hsm.clone();
            tokio::task::spawn_blocking(move || hsm.relogin().map_err(|e| e.to_string()))
        })
        .await;
        // Each PIN the token refused is one failed login; a PIN wardend declined to offer
        // again is not a C_Login call and is not counted.
        let refusals = hsm.pin_refusals();
        for _ in refusals_seen..refusals {
            core.metrics
                .hsm_op("login", started.elapsed().as_secs_f64(), false);
        }
        refusals_seen = refusals;
        match relogged {
            Ok(()) => {
                core.metrics
                    .hsm_op("login", started.elapsed().as_secs_f64(), true);
                login_error = None;
                outage_cause = None;
                core.set_hsm_health(Ok(()));
                backoff = every;
                next_login = Instant::now();
            }
            Err(le) => {
                if login_error.as_ref() != Some(&le) {
                    tracing::warn!(error = %le, "logging in to the HSM again failed; retrying with backoff");
                }
                login_error = Some(le);
                core.set_hsm_health(Err(health(&login_error)));
                backoff = (backoff * 2).min(MAX_BACKOFF);
                next_login = Instant::now() + backoff;
            }
        }
    }
}
