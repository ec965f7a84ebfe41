//! Keys in a PKCS#11 HSM, through `cryptoki`.
//!
//! Warden keeps two keys on its token, both sensitive and non-extractable:
//! - an AES-256 key ([`SEAL_KEY_LABEL`]) that seals the node seed with AES-GCM, so the seed
//!   never rests in plaintext on disk;
//! - a secp256k1 key pair ([`AUDIT_KEY_LABEL`]) that signs audit checkpoints and approval
//!   receipts, so a copy of the database alone cannot forge Warden's history.
//!
//! PKCS#11 logs a whole application in once per token, not per session: [`Hsm`] keeps one
//! session open for the login and hands out the others from a small pool, so tokio tasks can
//! share it (call it from `spawn_blocking`; PKCS#11 calls block).

mod anchor;
mod ecdsa;
mod error;
mod pin;
pub mod sealed;

pub use anchor::{AuditAnchor, PolicyAnchor, AUDIT_ANCHOR_LABEL, POLICY_ANCHOR_LABEL};
pub use ecdsa::{public_key_from_ec_point, signature_from_raw, SECP256K1_EC_PARAMS};
pub use error::HsmError;
pub use pin::PinSource;
pub use sealed::{NodeSeed, SealedSeed, SeedBinding};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use lightning_signer::bitcoin::secp256k1::{ecdsa::Signature, PublicKey};
use lightning_signer::bitcoin::Network;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use zeroize::Zeroizing;

/// Label of the AES-256 key that seals the node seed.
pub const SEAL_KEY_LABEL: &str = "warden-seed-seal";
/// Label of the secp256k1 key pair that signs audit checkpoints.
pub const AUDIT_KEY_LABEL: &str = "warden-audit-ecdsa";
/// File name of the sealed seed inside the data directory.
pub const SEALED_SEED_FILE: &str = "node-seed.sealed";
/// Debian's SoftHSM2 module: the default, because the demo and tests run on it.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// How to reach the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// Path of the vendor's PKCS#11 library.
    pub module: PathBuf,
    /// Label of the token holding Warden's keys.
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Most sessions open at once besides the login session.
    pub max_sessions: usize,
}

/// One key on the token, as `hsm status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's CKA_LABEL.
    pub label: String,
    /// "AES-256" or "secp256k1".
    pub kind: &'static str,
    /// Compressed public key in hex, for the EC key.
    pub public_key: Option<String>,
    /// Whether CKA_SENSITIVE is true and CKA_EXTRACTABLE is false.
    pub protected: bool,
}

/// What the token says about itself; nothing secret.
#[derive(Clone, Debug, Serialize)]
pub struct HsmStatus {
    /// The module path in use.
    pub module: PathBuf,
    /// The library's own description and version.
    pub library: String,
    /// The token label.
    pub token_label: String,
    /// Manufacturer, model and serial number.
    pub token_model: String,
    /// Warden's keys found on the token.
    pub keys: Vec<KeyInfo>,
}

/// A logged-in handle on Warden's token. Cheap to clone; share it across threads.
#[derive(Clone)]
pub struct Hsm {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    config: HsmConfig,
    // Keeps the token logged in for as long as `Hsm` lives; replaced by `relogin`.
    login: Mutex<Option<Session>>,
    pin: Mutex<PinState>,
    pool: Mutex<PoolState>,
    returned: Condvar,
    pin_refusals: std::sync::atomic::AtomicU64,
    // Every call into the library holds this for reading; re-initializing it holds it for
    // writing, so C_Finalize never runs while another thread is inside the library (undefined
    // in PKCS#11, and a handle kept across it could name another object afterwards).
    library: std::sync::RwLock<()>,
}

/// The PIN held (zeroizing) to log in again after the token or its sessions were lost: a PIN
/// from the environment is removed from it once read, so it cannot be read twice.
struct PinState {
    pin: cryptoki::types::AuthPin,
    // SHA-256 of every PIN the token refused: none is offered again, because real HSMs lock
    // the user PIN after a few failures. A PIN file is re-read instead, so an operator who
    // changed the PIN writes the new one there and wardend logs in by itself.
    refused: Vec<[u8; 32]>,
}

fn pin_hash(pin: &cryptoki::types::AuthPin) -> [u8; 32] {
    use lightning_signer::bitcoin::hashes::Hash;
    use secrecy::ExposeSecret;
    lightning_signer::bitcoin::hashes::sha256::Hash::hash(pin.expose_secret().as_bytes())
        .to_byte_array()
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
    // `None` after re-initializing the library did not find the token: every operation fails
    // until it is found again.
    slot: Option<Slot>,
    // Bumped when the library is re-initialized: sessions of an older generation died with it,
    // and their handles may now name someone else's session, so they are never closed.
    generation: u64,
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.inner.config.module)
            .field("token_label", &self.inner.config.token_label)
            .finish_non_exhaustive()
    }
}

impl Hsm {
    /// Load the module, find the token, and log in with the configured PIN.
    pub fn open(config: &HsmConfig) -> Result<Self, HsmError> {
        if !config.module.exists() {
            return Err(HsmError::ModuleLoad {
                path: config.module.clone(),
                detail: "no such file".into(),
            });
        }
        let ctx = Pkcs11::new(&config.module).map_err(|e| HsmError::ModuleLoad {
            path: config.module.clone(),
            detail: e.to_string(),
        })?;
        ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| HsmError::ModuleInit {
                path: config.module.clone(),
                detail: e.to_string(),
            })?;
        let slot = find_token(&ctx, config)?;
        // Read the PIN only once the token is known to exist.
        let pin = config.pin.read()?;
        if let PinSource::Env(var) = &config.pin {
            // Nothing started by wardend needs it, and a child process would inherit it.
            std::env::remove_var(var);
        }
        let login = ctx
            .open_rw_session(slot)
            .map_err(|e| HsmError::op("C_OpenSession", e))?;
        match login.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                return Err(HsmError::WrongPin {
                    label: config.token_label.clone(),
                    source_desc: config.pin.describe(),
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                return Err(HsmError::PinLocked {
                    label: config.token_label.clone(),
                })
            }
            Err(e) => return Err(HsmError::op("C_Login", e)),
        }
        tracing::info!(module = %config.module.display(), token = %config.token_label, "logged in to HSM token");
        Ok(Hsm {
            inner: Arc::new(Inner {
                ctx,
                config: config.clone(),
                login: Mutex::new(Some(login)),
                pin: Mutex::new(PinState {
                    pin,
                    refused: Vec::new(),
                }),
                pool: Mutex::new(PoolState {
                    idle: Vec::new(),
                    open: 0,
                    slot: Some(slot),
                    generation: 0,
                }),
                returned: Condvar::new(),
                pin_refusals: std::sync::atomic::AtomicU64::new(0),
                library: std::sync::RwLock::new(()),
            }),
        })
    }

    /// Run `f` with a pooled session, waiting if all `max_sessions` are busy.
    fn with_session<T>(
        &self,
        f: impl FnOnce(&Session) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let _library = self.inner.library.read().unwrap_or_else(|p| p.into_inner());
        let (session, generation) = {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                let generation = pool.generation;
                if let Some(s) = pool.idle.pop() {
                    break (s, generation);
                }
                if pool.open < self.inner.config.max_sessions.max(1) {
                    let Some(slot) = pool.slot else {
                        return Err(self.token_gone());
                    };
                    pool.open += 1;
                    drop(pool);
                    match self.inner.ctx.open_rw_session(slot) {
                        Ok(s) => break (s, generation),
                        Err(e) => {
                            let mut pool =
                                self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
                            if pool.generation == generation {
                                pool.open -= 1;
                            }
                            self.inner.returned.notify_one();
                            return Err(HsmError::op("C_OpenSession", e));
                        }
                    }
                }
                pool = self
                    .inner
                    .returned
                    .wait(pool)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = f(&session);
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.generation != generation {
            // The library was re-initialized while this session was in use.
            std::mem::forget(session);
        } else if result.is_ok() {
            pool.idle.push(session);
        } else {
            // A session that failed may be dead (token removed, session closed, logged out):
            // close it, and let the next operation open a fresh one.
            pool.open -= 1;
            drop(session);
        }
        self.inner.returned.notify_one();
        result
    }

    /// Whether the token can still sign audit checkpoints: a live session, and the audit key
    /// on the token. Cheap enough to run every second.
    pub fn probe(&self) -> Result<(), HsmError> {
        let token = self.inner.config.token_label.clone();
        self.with_session(|s| {
            s.get_session_info()
                .map_err(|e| HsmError::op("C_GetSessionInfo", e))?;
            match Self::find_key(s, AUDIT_KEY_LABEL, ObjectClass::PRIVATE_KEY, &token) {
                Ok(_) => Ok(()),
                // Neither key: not a deleted key but a token that went away or was reset.
                Err(HsmError::KeyMissing { .. })
                    if Self::find_key(s, SEAL_KEY_LABEL, ObjectClass::SECRET_KEY, &token)
                        .is_err() =>
                {
                    Err(HsmError::TokenEmpty { token })
                }
                Err(e) => Err(e),
            }
        })
    }

    /// Get a token that stopped answering back to one that can sign: first a fresh session and
    /// login on the same library (enough after sessions were closed under wardend); if the
    /// token still cannot sign, the whole library is finalized and initialized again, the
    /// token found again by its label (its slot may have changed), and logged in to. A token
    /// directory that was removed and put back, or an HSM that restarted, is only seen again
    /// after a new `C_Initialize`.
    pub fn relogin(&self) -> Result<(), HsmError> {
        if self.pool_slot().is_some() {
            match self.login_fresh() {
                Ok(()) => match self.probe() {
                    Ok(()) => return Ok(()),
                    // The token answers and still holds the seal key (`probe` says
                    // `TokenEmpty` otherwise): only the audit key is gone, and starting the
                    // library over would not bring it back.
                    Err(e @ HsmError::KeyMissing { .. }) => return Err(e),
                    Err(_) => {}
                },
                Err(
                    e @ (HsmError::WrongPin { .. }
                    | HsmError::PinRefused { .. }
                    | HsmError::PinLocked { .. }),
                ) => return Err(e),
                Err(_) => {}
            }
        }
        self.reinitialize()?;
        self.probe()
    }

    fn pool_slot(&self) -> Option<Slot> {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slot
    }

    fn token_gone(&self) -> HsmError {
        HsmError::Operation {
            op: "token lookup",
            detail: format!(
                "token \"{}\" is not present in the PKCS#11 module; wardend looks for it again with backoff",
                self.inner.config.token_label
            ),
        }
    }

    fn login_fresh(&self) -> Result<(), HsmError> {
        let _library = self.inner.library.read().unwrap_or_else(|p| p.into_inner());
        let slot = {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
            let n = pool.idle.len();
            pool.idle.clear();
            pool.open -= n;
            self.inner.returned.notify_all();
            pool.slot.ok_or_else(|| self.token_gone())?
        };
        self.log_in_on_new_session(slot)
    }

    /// Open a session on `slot`, log it in, and keep it as the login session. The caller holds
    /// the library lock.
    fn log_in_on_new_session(&self, slot: Slot) -> Result<(), HsmError> {
        let session = self
            .inner
            .ctx
            .open_rw_session(slot)
            .map_err(|e| HsmError::op("C_OpenSession", e))?;
        self.login_session(&session)?;
        *self.inner.login.lock().unwrap_or_else(|p| p.into_inner()) = Some(session);
        Ok(())
    }

    fn reinitialize(&self) -> Result<(), HsmError> {
        // Waits for every call in progress to leave the library.
        let _library = self
            .inner
            .library
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        pool.generation += 1;
        for dead in pool.idle.drain(..) {
            std::mem::forget(dead);
        }
        pool.open = 0;
        pool.slot = None;
        self.inner.returned.notify_all();
        if let Some(dead) = self
            .inner
            .login
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            std::mem::forget(dead);
        }
        // "Not initialized" is fine: the point is a fresh start.
        let _ = self.inner.ctx.clone().finalize();
        let config = &self.inner.config;
        self.inner
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .map_err(|e| HsmError::ModuleInit {
                path: config.module.clone(),
                detail: e.to_string(),
            })?;
        let slot = find_token(&self.inner.ctx, config)?;
        pool.slot = Some(slot);
        drop(pool);
        self.log_in_on_new_session(slot)?;
        tracing::warn!(token = %config.token_label, "HSM library initialized again and logged in");
        Ok(())
    }

    /// Log `session` in with the PIN held; never with a PIN the token already refused.
    fn login_session(&self, session: &Session) -> Result<(), HsmError> {
        let config = &self.inner.config;
        let mut state = self.inner.pin.lock().unwrap_or_else(|p| p.into_inner());
        if state.refused.contains(&pin_hash(&state.pin)) {
            if let PinSource::File(_) = &config.pin {
                if let Ok(fresh) = config.pin.read() {
                    if !state.refused.contains(&pin_hash(&fresh)) {
                        state.pin = fresh;
                    }
                }
            }
        }
        let refused = || {
            HsmError::PinRefused {
            label: config.token_label.clone(),
            what_to_do: match &config.pin {
                PinSource::File(p) => format!(
                    "write the token's current PIN to {}; wardend reads it there and logs in again by itself",
                    p.display()
                ),
                PinSource::Env(v) => format!(
                    "restart wardend with the token's current PIN in the environment variable {v}"
                ),
            },
        }
        };
        if state.refused.contains(&pin_hash(&state.pin)) {
            return Err(refused());
        }
        match session.login(UserType::User, Some(&state.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                let h = pin_hash(&state.pin);
                state.refused.push(h);
                self.inner
                    .pin_refusals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(refused())
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked {
                label: config.token_label.clone(),
            }),
            Err(e) => Err(HsmError::op("C_Login", e)),
        }
    }

    /// How many times the token refused the PIN wardend offered when logging in again.
    pub fn pin_refusals(&self) -> u64 {
        self.inner
            .pin_refusals
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sessions the pool has open (busy or idle); never more than `max_sessions`.
    pub fn open_sessions(&self) -> usize {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .open
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &HsmConfig {
        &self.inner.config
    }

    /// Create the sealing key and the audit key pair. Refuses if either exists already, so a
    /// second `init` can never replace the key that sealed an existing seed.
    pub fn create_keys(&self) -> Result<PublicKey, HsmError> {
        let present = self.present_key_labels()?;
        if !present.is_empty() {
            return Err(HsmError::KeysAlreadyPresent {
                token: self.inner.config.token_label.clone(),
                labels: present.join(", "),
            });
        }
        self.with_session(|s| {
            let aes = s
                .generate_key(
                    &Mechanism::AesKeyGen,
                    &[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Wrap(false),
                        Attribute::Unwrap(false),
                        Attribute::Label(SEAL_KEY_LABEL.into()),
                    ],
                )
                .map_err(|e| HsmError::op("C_GenerateKey (AES-256)", e))?;
            let ec = s.generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(false),
                    Attribute::EcParams(SECP256K1_EC_PARAMS.to_vec()),
                    Attribute::Verify(true),
                    Attribute::Label(AUDIT_KEY_LABEL.into()),
                ],
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Sign(true),
                    Attribute::Label(AUDIT_KEY_LABEL.into()),
                ],
            );
            if let Err(e) = ec {
                // Leave the token as it was: no half-initialized key set.
                let _ = s.destroy_object(aes);
                return Err(HsmError::op("C_GenerateKeyPair (secp256k1)", e));
            }
            Ok(())
        })?;
        self.audit_public_key()
    }

    /// Remove Warden's keys. Only `init` uses this, to roll back keys it has just created
    /// when a later step fails; it is not exposed in the CLI.
    pub(crate) fn destroy_keys(&self) -> Result<(), HsmError> {
        self.with_session(|s| {
            for label in [SEAL_KEY_LABEL, AUDIT_KEY_LABEL] {
                for h in s
                    .find_objects(&[Attribute::Label(label.into())])
                    .map_err(|e| HsmError::op("C_FindObjects", e))?
                {
                    s.destroy_object(h)
                        .map_err(|e| HsmError::op("C_DestroyObject", e))?;
                }
            }
            Ok(())
        })
    }

    fn present_key_labels(&self) -> Result<Vec<String>, HsmError> {
        self.with_session(|s| {
            let mut labels = Vec::new();
            for label in [SEAL_KEY_LABEL, AUDIT_KEY_LABEL] {
                let found = s
                    .find_objects(&[Attribute::Label(label.into())])
                    .map_err(|e| HsmError::op("C_FindObjects", e))?;
                if !found.is_empty() {
                    labels.push(label.to_string());
                }
            }
            Ok(labels)
        })
    }

    fn find_key(
        s: &Session,
        label: &str,
        class: ObjectClass,
        token: &str,
    ) -> Result<ObjectHandle, HsmError> {
        let found = s
            .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
            .map_err(|e| HsmError::op("C_FindObjects", e))?;
        match found.as_slice() {
            [h] => Ok(*h),
            [] => Err(HsmError::KeyMissing {
                key_label: label.into(),
                token: token.into(),
            }),
            many => Err(HsmError::Operation {
                op: "key lookup",
                detail: format!(
                    "{} objects labelled \"{label}\" on token \"{token}\"; Warden needs exactly one. Remove the duplicates with your HSM's admin tool",
                    many.len()
                ),
            }),
        }
    }

    /// Seal a seed under the HSM's AES key with a fresh random IV, bound to `binding`.
    pub fn seal_seed(
        &self,
        seed: &NodeSeed,
        binding: &SeedBinding,
    ) -> Result<SealedSeed, HsmError> {
        self.seal_with(seed, Some(binding))
    }

    /// Seal in format 1, as builds before format 2 did, to test the upgrade path.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn seal_seed_v1(&self, seed: &NodeSeed) -> Result<SealedSeed, HsmError> {
        self.seal_with(seed, None)
    }

    fn seal_with(
        &self,
        seed: &NodeSeed,
        binding: Option<&SeedBinding>,
    ) -> Result<SealedSeed, HsmError> {
        let token = self.inner.config.token_label.clone();
        self.with_session(|s| {
            let key = Self::find_key(s, SEAL_KEY_LABEL, ObjectClass::SECRET_KEY, &token)?;
            let mut iv = [0u8; sealed::IV_LEN];
            getrandom::getrandom(&mut iv).map_err(|e| HsmError::op("OS RNG", e))?;
            let aad = sealed::associated_data(binding);
            let mut iv_param = iv;
            let params = GcmParams::new(&mut iv_param, &aad, (sealed::TAG_LEN as u64 * 8).into())
                .map_err(|e| HsmError::op("AES-GCM parameters", e))?;
            let ciphertext_and_tag = s
                .encrypt(&Mechanism::AesGcm(params), key, seed.as_slice())
                .map_err(|e| HsmError::op("C_Encrypt (AES-GCM)", e))?;
            Ok(SealedSeed {
                binding: binding.copied(),
                iv,
                ciphertext_and_tag,
            })
        })
    }

    /// Open a sealed seed into zeroizing memory. `path` is only for the error message.
    pub fn unseal_seed(&self, sealed: &SealedSeed, path: &Path) -> Result<NodeSeed, HsmError> {
        let token = self.inner.config.token_label.clone();
        self.with_session(|s| {
            let key = Self::find_key(s, SEAL_KEY_LABEL, ObjectClass::SECRET_KEY, &token)?;
            let aad = sealed::associated_data(sealed.binding.as_ref());
            let mut iv = sealed.iv;
            let params = GcmParams::new(&mut iv, &aad, (sealed::TAG_LEN as u64 * 8).into())
                .map_err(|e| HsmError::op("AES-GCM parameters", e))?;
            let plain = s
                .decrypt(&Mechanism::AesGcm(params), key, &sealed.ciphertext_and_tag)
                .map_err(|e| match e {
                    CkError::Pkcs11(
                        RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::GeneralError,
                        _,
                    ) => HsmError::SealedSeedTampered {
                        path: path.to_path_buf(),
                    },
                    other => HsmError::op("C_Decrypt (AES-GCM)", other),
                })?;
            let plain = Zeroizing::new(plain);
            if plain.len() != sealed::SEED_LEN {
                return Err(HsmError::SealedSeedMalformed {
                    path: path.to_path_buf(),
                    detail: format!(
                        "it opened to {} bytes instead of {}",
                        plain.len(),
                        sealed::SEED_LEN
                    ),
                });
            }
            let mut seed = NodeSeed::zeroed();
            seed.as_mut_slice().copy_from_slice(&plain);
            Ok(seed)
        })
    }

    /// Read and unseal the seed file in `data_dir` for a node on `network`.
    ///
    /// A blob sealed for another network is refused before the HSM is asked (the same seed on
    /// two networks is one set of keys on both). A version-1 blob, which binds neither, opens
    /// as bound to `network` and the seed's own id, and is marked `legacy`: wardend rewrites it
    /// with [`Hsm::upgrade_seed`] once it holds the state database's lock and the state has
    /// accepted that id.
    pub fn load_seed(&self, data_dir: &Path, network: Network) -> Result<LoadedSeed, HsmError> {
        let path = data_dir.join(SEALED_SEED_FILE);
        let bytes = std::fs::read(&path).map_err(|e| HsmError::SealedSeedUnreadable {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let sealed =
            SealedSeed::from_bytes(&bytes).map_err(|detail| HsmError::SealedSeedMalformed {
                path: path.clone(),
                detail,
            })?;
        if let Some(b) = &sealed.binding {
            if b.network != network {
                return Err(HsmError::SealedSeedWrongNetwork {
                    path,
                    sealed_for: b.network,
                    configured: network,
                });
            }
        }
        let seed = self.unseal_seed(&sealed, &path)?;
        let legacy = sealed.binding.is_none();
        let binding = sealed
            .binding
            .unwrap_or_else(|| SeedBinding::for_seed(network, &seed));
        Ok(LoadedSeed {
            seed,
            binding,
            legacy,
        })
    }

    /// Rewrite a format-1 seed file as format 2 with `loaded`'s binding, atomically (the seed
    /// inside is unchanged). Nothing to do for a format-2 file.
    pub fn upgrade_seed(&self, data_dir: &Path, loaded: &LoadedSeed) -> Result<bool, HsmError> {
        if !loaded.legacy {
            return Ok(false);
        }
        let path = data_dir.join(SEALED_SEED_FILE);
        self.write_sealed(&loaded.seed, &loaded.binding, &path, true)?;
        tracing::warn!(
            path = %path.display(),
            network = %loaded.binding.network,
            seed_id = %loaded.binding.seed_id_hex(),
            "sealed seed rewritten in format 2: now bound to its network and its seed id"
        );
        Ok(true)
    }

    /// Seal, prove the blob opens to the same seed, then write it atomically: the file may
    /// be the only copy of the node's keys.
    fn write_sealed(
        &self,
        seed: &NodeSeed,
        binding: &SeedBinding,
        path: &Path,
        overwrite: bool,
    ) -> Result<(), HsmError> {
        let sealed = self.seal_seed(seed, binding)?;
        let reopened = self.unseal_seed(&sealed, path)?;
        if reopened.as_slice() != seed.as_slice() {
            return Err(HsmError::Operation {
                op: "seal check",
                detail: "the sealed seed did not open to the seed that was sealed".into(),
            });
        }
        crate::fsutil::write_atomic(path, &sealed.to_bytes(), overwrite).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                HsmError::SeedAlreadyPresent {
                    path: path.to_path_buf(),
                }
            } else {
                HsmError::Io {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }
            }
        })
    }

    /// Sign a 32-byte digest with the audit key; the result is low-S.
    pub fn sign_digest(&self, digest: &[u8; 32]) -> Result<Signature, HsmError> {
        let token = self.inner.config.token_label.clone();
        let raw = self.with_session(|s| {
            let key = Self::find_key(s, AUDIT_KEY_LABEL, ObjectClass::PRIVATE_KEY, &token)?;
            s.sign(&Mechanism::Ecdsa, key, digest)
                .map_err(|e| HsmError::op("C_Sign (ECDSA)", e))
        })?;
        signature_from_raw(&raw)
    }

    /// The audit key's public key, read from CKA_EC_POINT.
    pub fn audit_public_key(&self) -> Result<PublicKey, HsmError> {
        let token = self.inner.config.token_label.clone();
        self.with_session(|s| {
            let key = Self::find_key(s, AUDIT_KEY_LABEL, ObjectClass::PUBLIC_KEY, &token)?;
            read_ec_point(s, key)
        })
    }

    /// What is on the token, for `wardenctl hsm status`.
    pub fn status(&self) -> Result<HsmStatus, HsmError> {
        let (info, token) = {
            let _library = self.inner.library.read().unwrap_or_else(|p| p.into_inner());
            let info = self
                .inner
                .ctx
                .get_library_info()
                .map_err(|e| HsmError::op("C_GetInfo", e))?;
            let slot = self.pool_slot().ok_or_else(|| self.token_gone())?;
            let token = self
                .inner
                .ctx
                .get_token_info(slot)
                .map_err(|e| HsmError::op("C_GetTokenInfo", e))?;
            (info, token)
        };
        let keys = self.with_session(|s| {
            let mut keys = Vec::new();
            for (label, class, kind) in [
                (SEAL_KEY_LABEL, ObjectClass::SECRET_KEY, "AES-256"),
                (AUDIT_KEY_LABEL, ObjectClass::PRIVATE_KEY, "secp256k1"),
            ] {
                let found = s
                    .find_objects(&[Attribute::Class(class), Attribute::Label(label.into())])
                    .map_err(|e| HsmError::op("C_FindObjects", e))?;
                for h in found {
                    let attrs = s
                        .get_attributes(h, &[AttributeType::Sensitive, AttributeType::Extractable])
                        .map_err(|e| HsmError::op("C_GetAttributeValue", e))?;
                    let protected = attrs.contains(&Attribute::Sensitive(true))
                        && attrs.contains(&Attribute::Extractable(false));
                    let public_key = if class == ObjectClass::PRIVATE_KEY {
                        let pubh = Self::find_key(s, label, ObjectClass::PUBLIC_KEY, "")?;
                        Some(hex::encode(read_ec_point(s, pubh)?.serialize()))
                    } else {
                        None
                    };
                    keys.push(KeyInfo {
                        label: label.into(),
                        kind,
                        public_key,
                        protected,
                    });
                }
            }
            Ok(keys)
        })?;
        Ok(HsmStatus {
            module: self.inner.config.module.clone(),
            library: format!(
                "{} {} {}.{}",
                info.manufacturer_id().trim(),
                info.library_description().trim(),
                info.library_version().major(),
                info.library_version().minor()
            ),
            token_label: token.label().trim().to_string(),
            token_model: format!(
                "{} {} (serial {})",
                token.manufacturer_id().trim(),
                token.model().trim(),
                token.serial_number().trim()
            ),
            keys,
        })
    }
}

fn read_ec_point(s: &Session, key: ObjectHandle) -> Result<PublicKey, HsmError> {
    let attrs = s
        .get_attributes(key, &[AttributeType::EcPoint])
        .map_err(|e| HsmError::op("C_GetAttributeValue (CKA_EC_POINT)", e))?;
    match attrs.first() {
        Some(Attribute::EcPoint(p)) => public_key_from_ec_point(p),
        _ => Err(HsmError::BadHsmOutput {
            what: "EC public key (CKA_EC_POINT)",
            detail: "the attribute is absent".into(),
        }),
    }
}

fn find_token(ctx: &Pkcs11, config: &HsmConfig) -> Result<Slot, HsmError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| HsmError::op("C_GetSlotList", e))?;
    let mut present = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| HsmError::op("C_GetTokenInfo", e))?;
        let label = info.label().trim().to_string();
        if label == config.token_label {
            return Ok(slot);
        }
        present.push(format!("\"{label}\""));
    }
    Err(HsmError::TokenNotFound {
        label: config.token_label.clone(),
        module: config.module.clone(),
        present: if present.is_empty() {
            "none".into()
        } else {
            present.join(", ")
        },
    })
}

/// What `wardenctl init` created.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// Where the sealed seed was written.
    pub sealed_seed_path: PathBuf,
    /// The audit key's public key.
    pub audit_public_key: PublicKey,
    /// The network and seed id the seed is sealed for.
    pub binding: SeedBinding,
}

/// An unsealed seed with what its blob binds it to.
#[derive(Debug)]
pub struct LoadedSeed {
    /// The seed, in zeroizing memory.
    pub seed: NodeSeed,
    /// Its network and seed id.
    pub binding: SeedBinding,
    /// Whether the file is still in format 1 (see [`Hsm::upgrade_seed`]).
    pub legacy: bool,
}

impl Hsm {
    /// First-time set-up: create the HSM keys, generate a node seed, seal it, and write the
    /// sealed blob atomically into `data_dir`.
    ///
    /// All checks that can fail cheaply run before any key is created; if a later step fails,
    /// the keys just created are destroyed again, so a failed `init` leaves neither a key on
    /// the token nor a file in the data directory.
    pub fn init(&self, data_dir: &Path, network: Network) -> Result<InitReport, HsmError> {
        let not_writable = |e: std::io::Error| HsmError::DataDirNotWritable {
            path: data_dir.to_path_buf(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(data_dir).map_err(not_writable)?;
        crate::fsutil::check_dir_writable(data_dir).map_err(not_writable)?;
        let path = data_dir.join(SEALED_SEED_FILE);
        if path.exists() {
            return Err(HsmError::SeedAlreadyPresent { path });
        }
        let audit_public_key = self.create_keys()?;
        let sealed = (|| {
            let mut seed = NodeSeed::zeroed();
            getrandom::getrandom(seed.as_mut_slice()).map_err(|e| HsmError::op("OS RNG", e))?;
            let binding = SeedBinding::for_seed(network, &seed);
            self.write_sealed(&seed, &binding, &path, false)?;
            Ok(binding)
        })();
        let binding = match sealed {
            Ok(b) => b,
            Err(e) => {
                if let Err(rollback) = self.destroy_keys() {
                    tracing::error!(error = %rollback, "could not remove the keys of a failed init; remove them before retrying");
                }
                return Err(e);
            }
        };
        tracing::info!(path = %path.display(), %network, seed_id = %binding.seed_id_hex(), "node seed generated and sealed");
        Ok(InitReport {
            sealed_seed_path: path,
            audit_public_key,
            binding,
        })
    }
}
