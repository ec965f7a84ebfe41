//! The HSM module's one error type. Every message says what went wrong and what to do,
//! because an operator reads these at 3 a.m. with a node down.

use std::path::PathBuf;

/// Everything that can go wrong between Warden and its PKCS#11 token.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what each message names
pub enum HsmError {
    /// The PKCS#11 library file could not be loaded.
    #[error("cannot load the PKCS#11 module at {path}: {detail}. Install softhsm2 (scripts/setup.sh) or set hsm.module to your HSM vendor's PKCS#11 library")]
    ModuleLoad { path: PathBuf, detail: String },

    /// The library loaded but refused to initialize.
    #[error("the PKCS#11 module at {path} failed to initialize: {detail}. Check its configuration (for SoftHSM: SOFTHSM2_CONF and its tokendir)")]
    ModuleInit { path: PathBuf, detail: String },

    /// No token carries the configured label.
    #[error("no token labelled \"{label}\" in the PKCS#11 module {module} (tokens present: {present}). Create it (softhsm2-util --init-token --free --label {label}) or set hsm.token_label")]
    TokenNotFound {
        label: String,
        module: PathBuf,
        present: String,
    },

    /// The PIN source named in the configuration could not be read.
    #[error("cannot read the HSM PIN from {source_desc}: {detail}")]
    PinUnavailable { source_desc: String, detail: String },

    /// The token rejected the PIN.
    #[error("the HSM rejected the user PIN for token \"{label}\" (wrong PIN). Check the PIN source ({source_desc}); repeated failures lock the token")]
    WrongPin { label: String, source_desc: String },

    /// The token refused the PIN wardend held when it had to log in again.
    #[error("the HSM token \"{label}\" refused the PIN wardend logged in with (was the PIN changed under wardend?). wardend does not offer a refused PIN again, because repeated failures lock the token: {what_to_do}")]
    PinRefused { label: String, what_to_do: String },

    /// The token has locked the user PIN after too many failures.
    #[error("the user PIN of token \"{label}\" is locked after too many failures. The security officer must reset it (softhsm2-util or your HSM's admin tool)")]
    PinLocked { label: String },

    /// A key Warden needs is not on the token.
    #[error("the key \"{key_label}\" is missing from token \"{token}\". Run `wardenctl init` once to create Warden's keys, or point hsm.token_label at the token that holds them")]
    KeyMissing { key_label: String, token: String },

    /// The token answers but shows none of Warden's keys.
    #[error("token \"{token}\" shows none of Warden's keys: it was removed, replaced or reset under wardend. Put Warden's token back (wardend logs in again by itself); do not run `wardenctl init` on a node that has a sealed seed")]
    TokenEmpty { token: String },

    /// `init` found keys from an earlier run.
    #[error("token \"{token}\" already holds Warden keys ({labels}); refusing to overwrite them. `wardenctl init` runs once per token: keep the existing keys, or use a fresh token")]
    KeysAlreadyPresent { token: String, labels: String },

    /// `init` found an existing sealed seed file.
    #[error("a sealed node seed already exists at {path}; refusing to overwrite it (it may be the only copy of the node's keys). Move it away yourself if you really mean to start over")]
    SeedAlreadyPresent { path: PathBuf },

    /// The data directory cannot hold Warden's files.
    #[error("the data directory {path} is not writable: {detail}. Create it, or fix its owner and permissions, or set data_dir")]
    DataDirNotWritable { path: PathBuf, detail: String },

    /// The sealed seed file cannot be read.
    #[error("cannot read the sealed node seed at {path}: {detail}. Run `wardenctl init` if this is a new installation, or restore the file from backup")]
    SealedSeedUnreadable { path: PathBuf, detail: String },

    /// The sealed blob does not have the expected shape.
    #[error("the sealed node seed at {path} is malformed: {detail}. Restore it from backup; Warden will not guess")]
    SealedSeedMalformed { path: PathBuf, detail: String },

    /// The sealed blob failed authentication: it was changed, or sealed by another key.
    #[error("the sealed node seed at {path} failed authentication: it was altered, or it was sealed by a different HSM key. Restore the file from backup, or point Warden at the token that sealed it")]
    SealedSeedTampered { path: PathBuf },

    /// The blob is sealed for another Bitcoin network than the configuration names.
    #[error("the sealed node seed at {path} is sealed for the {sealed_for} network, but this configuration runs on {configured}. The same seed on two networks is the same keys on both: fix `network` in the configuration, or run `wardenctl init` with a fresh data directory and token for {configured}")]
    SealedSeedWrongNetwork {
        path: PathBuf,
        sealed_for: lightning_signer::bitcoin::Network,
        configured: lightning_signer::bitcoin::Network,
    },

    /// The HSM returned a public key or signature Warden cannot interpret.
    #[error("the HSM returned an unusable {what}: {detail}")]
    BadHsmOutput { what: &'static str, detail: String },

    /// A PKCS#11 call failed for another reason.
    #[error("HSM operation {op} failed: {detail}")]
    Operation { op: &'static str, detail: String },

    /// Writing a file failed.
    #[error("cannot write {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

impl HsmError {
    pub(crate) fn op(op: &'static str, e: impl std::fmt::Display) -> Self {
        HsmError::Operation {
            op,
            detail: e.to_string(),
        }
    }
}
