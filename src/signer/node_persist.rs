//! VLS's `Persist` for Warden: VLS's own key-version-value persister for everything, except the
//! node state, which is written entry by entry.
//!
//! VLS hands `update_node` the whole node state, and its stock persister serializes every live
//! invoice into one value on each call (412,811 bytes of JSON at 1,000 invoices), so an approval
//! costs more the more invoices are live. Here the node state's scalars (velocity controls,
//! dbid high-water mark) stay in VLS's own `node/state/<id>` record, with its invoice lists
//! empty, and every invoice, issued invoice and preimage has a key of its own:
//! `warden/inv/<hash>`, `warden/iss/<hash>`, `warden/pre/<hash>`.
//!
//! Which entries to write:
//! - on the approval path, Warden's approver says which invoice or keysend `add_invoice` /
//!   `add_keysend` is about to add ([`WardenPersister::expect_payment_added`]); those VLS calls
//!   change exactly that entry and the velocity control, so only they are written, provided the
//!   entry counts confirm it (one more invoice, nothing else changed in number);
//! - every other update, and every 1,000th hinted one, compares each entry with what was last
//!   written (a fingerprint per entry) and writes the differences, so nothing VLS changes
//!   elsewhere is ever lost.
//!
//! All writes go through VLS's transactional store and land in the request's transaction at commit.

use super::persist::VlsKvvStore;
use lightning_signer::bitcoin::hashes::{sha256, Hash};
use lightning_signer::bitcoin::secp256k1::PublicKey;
use lightning_signer::chain::tracker::ChainTracker;
use lightning_signer::channel::{Channel, ChannelId, ChannelStub};
use lightning_signer::lightning::types::payment::{PaymentHash, PaymentPreimage};
use lightning_signer::monitor::ChainMonitor;
use lightning_signer::node::{NodeConfig, NodeState, PaymentState, PaymentType, RoutedPayment};
use lightning_signer::persist::{model, ChainTrackerListenerEntry, Error, Mutations, Persist};
use lightning_signer::policy::validator::ValidatorFactory;
use lightning_signer::SendSync;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::{Arc, Mutex};
use vls_persist::kvv::transactional::TransactionalKVVStore;
use vls_persist::kvv::{JsonFormat, KVVPersister, KVVStore, ValueFormat};
use vls_persist::model::NodeStateEntry;

type Inner = KVVPersister<TransactionalKVVStore<VlsKvvStore>, JsonFormat>;

const INV: &str = "warden/inv/";
const ISS: &str = "warden/iss/";
const PRE: &str = "warden/pre/";
/// Hinted updates between full reconciliations.
const RECONCILE_EVERY: u32 = 1_000;

#[derive(Default)]
struct Shadow {
    invoices: HashMap<[u8; 32], u64>,
    issued: HashMap<[u8; 32], u64>,
    preimages: HashMap<[u8; 32], u64>,
    scalars: Option<Vec<u8>>,
    hinted_since_full: u32,
}

/// Warden's VLS persister.
pub struct WardenPersister {
    inner: Inner,
    shadow: Mutex<Shadow>,
    hint: Mutex<Option<[u8; 32]>>,
}

impl SendSync for WardenPersister {}

fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// What is persisted of an invoice, hashed from its fields rather than its JSON (a full
/// reconciliation at 100,000 live invoices would otherwise serialize every one). Every field is
/// named: a field VLS adds fails to compile here instead of going unnoticed by the diff.
fn payment_fingerprint(ps: &PaymentState) -> u64 {
    let PaymentState {
        invoice_hash,
        amount_msat,
        payee,
        duration_since_epoch,
        expiry_duration,
        is_fulfilled,
        payment_type,
    } = ps;
    let mut h = DefaultHasher::new();
    h.write(invoice_hash);
    h.write_u64(*amount_msat);
    h.write(&payee.serialize());
    h.write_u128(duration_since_epoch.as_nanos());
    h.write_u128(expiry_duration.as_nanos());
    h.write_u8(u8::from(*is_fulfilled));
    h.write_u8(match payment_type {
        PaymentType::Invoice => 0,
        PaymentType::Keysend => 1,
    });
    h.finish()
}

fn ser<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    JsonFormat::ser_value(v)
}

impl WardenPersister {
    /// Over Warden's store.
    pub fn new(store: VlsKvvStore) -> Self {
        WardenPersister {
            inner: KVVPersister(TransactionalKVVStore::new(store), JsonFormat),
            shadow: Mutex::new(Shadow::default()),
            hint: Mutex::new(None),
        }
    }

    /// The approver is about to call `add_invoice`/`add_keysend` for `payment_hash`.
    pub fn expect_payment_added(&self, payment_hash: [u8; 32]) {
        *self.hint.lock().unwrap_or_else(|p| p.into_inner()) = Some(payment_hash);
    }

    /// Forget a hint that was not used (the VLS call returned early).
    pub fn clear_hint(&self) {
        self.hint.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn store(&self) -> &TransactionalKVVStore<VlsKvvStore> {
        &self.inner.0
    }

    fn put_entry(&self, prefix: &str, hash: &[u8; 32], bytes: Vec<u8>) -> Result<(), Error> {
        self.store()
            .put(&format!("{prefix}{}", hex::encode(hash)), bytes)
    }

    fn delete_entry(&self, prefix: &str, hash: &[u8; 32]) -> Result<(), Error> {
        self.store()
            .delete(&format!("{prefix}{}", hex::encode(hash)))
    }

    /// Write the entries whose fingerprint differs from the shadow's and delete the ones gone,
    /// serializing only what is written: a heartbeat that prunes a few invoices out of 70,000
    /// fingerprints them all but serializes none. The shadow is updated in place, one lookup
    /// per entry; the keys gone (`present` says no) are looked for only when the shadow holds
    /// more keys than `entries` gave.
    fn sync_map<'a, V: 'a>(
        &self,
        prefix: &str,
        shadow: &mut HashMap<[u8; 32], u64>,
        entries: impl Iterator<Item = ([u8; 32], &'a V)>,
        present: impl Fn(&[u8; 32]) -> bool,
        fp: impl Fn(&V) -> u64,
        ser: impl Fn(&V) -> Result<Vec<u8>, Error>,
    ) -> Result<(), Error> {
        use std::collections::hash_map::Entry;
        let mut given = 0usize;
        for (hash, v) in entries {
            given += 1;
            let f = fp(v);
            match shadow.entry(hash) {
                Entry::Occupied(mut o) => {
                    if *o.get() != f {
                        self.put_entry(prefix, &hash, ser(v)?)?;
                        o.insert(f);
                    }
                }
                Entry::Vacant(e) => {
                    self.put_entry(prefix, &hash, ser(v)?)?;
                    e.insert(f);
                }
            }
        }
        // Every key given is in the shadow now, so any excess is a key gone.
        if shadow.len() > given {
            let gone: Vec<[u8; 32]> = shadow.keys().filter(|h| !present(h)).copied().collect();
            for hash in gone {
                self.delete_entry(prefix, &hash)?;
                shadow.remove(&hash);
            }
        }
        Ok(())
    }

    fn write_scalars(
        &self,
        node_id: &PublicKey,
        state: &NodeState,
        shadow: &mut Shadow,
    ) -> Result<(), Error> {
        let entry = NodeStateEntry {
            invoices: vec![],
            issued_invoices: vec![],
            velocity_control: state.velocity_control.clone().into(),
            fee_velocity_control: state.fee_velocity_control.clone().into(),
            preimages: vec![],
            dbid_high_water_mark: state.dbid_high_water_mark,
        };
        let bytes = ser(&entry)?;
        if shadow.scalars.as_ref() != Some(&bytes) {
            self.store().put(
                &format!("node/state/{}", hex::encode(node_id.serialize())),
                bytes.clone(),
            )?;
            shadow.scalars = Some(bytes);
        }
        Ok(())
    }

    fn load_entries<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<([u8; 32], T)>, Error> {
        let mut out = Vec::new();
        for kvv in self.store().get_prefix(prefix)? {
            let (key, (_version, value)) = kvv.into_inner();
            if value.is_empty() {
                continue; // deleted
            }
            let hash: [u8; 32] = hex::decode(&key[prefix.len()..])
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::SerdeError(format!("bad key {key}")))?;
            let v: T = JsonFormat::de_value(&value)?;
            out.push((hash, v));
        }
        Ok(out)
    }
}

impl Persist for WardenPersister {
    fn enter(&self) -> Result<(), Error> {
        self.inner.enter()
    }

    fn prepare(&self) -> Mutations {
        self.inner.prepare()
    }

    fn commit(&self) -> Result<(), Error> {
        self.inner.commit()
    }

    fn put_batch_unlogged(&self, m: Mutations) -> Result<(), Error> {
        self.inner.put_batch_unlogged(m)
    }

    fn new_node(
        &self,
        node_id: &PublicKey,
        config: &NodeConfig,
        state: &NodeState,
    ) -> Result<(), Error> {
        // VLS's new_node writes the node entry and the state; write the state our way first,
        // then let VLS write its node entry (it rewrites the state record identically: empty lists).
        self.update_node(node_id, state)?;
        let entry = vls_persist::model::NodeEntry {
            key_derivation_style: config.key_derivation_style as u8,
            network: config.network.to_string(),
        };
        self.store().put(
            &format!("node/entry/{}", hex::encode(node_id.serialize())),
            ser(&entry)?,
        )
    }

    fn update_node(&self, node_id: &PublicKey, state: &NodeState) -> Result<(), Error> {
        let hint = self.hint.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        self.write_scalars(node_id, state, &mut shadow)?;
        let fast = match hint {
            Some(hash) => {
                shadow.hinted_since_full < RECONCILE_EVERY
                    && state.issued_invoices.len() == shadow.issued.len()
                    && state.invoices.len()
                        == shadow.invoices.len() + usize::from(!shadow.invoices.contains_key(&hash))
                    && state.invoices.contains_key(&PaymentHash(hash))
            }
            None => false,
        };
        if let (true, Some(hash)) = (fast, hint) {
            let ps = state
                .invoices
                .get(&PaymentHash(hash))
                .expect("checked above");
            let fp = payment_fingerprint(ps);
            if shadow.invoices.get(&hash) != Some(&fp) {
                self.put_entry(INV, &hash, ser(ps)?)?;
                shadow.invoices.insert(hash, fp);
            }
            shadow.hinted_since_full += 1;
            return Ok(());
        }
        let mut inv = std::mem::take(&mut shadow.invoices);
        self.sync_map(
            INV,
            &mut inv,
            state.invoices.iter().map(|(h, p)| (h.0, p)),
            |h| state.invoices.contains_key(&PaymentHash(*h)),
            payment_fingerprint,
            ser,
        )?;
        shadow.invoices = inv;
        let mut iss = std::mem::take(&mut shadow.issued);
        self.sync_map(
            ISS,
            &mut iss,
            state.issued_invoices.iter().map(|(h, p)| (h.0, p)),
            |h| state.issued_invoices.contains_key(&PaymentHash(*h)),
            payment_fingerprint,
            ser,
        )?;
        shadow.issued = iss;
        let mut pre = std::mem::take(&mut shadow.preimages);
        self.sync_map(
            PRE,
            &mut pre,
            state
                .payments
                .iter()
                .filter_map(|(h, p)| p.preimage.as_ref().map(|pi| (h.0, &pi.0))),
            |h| {
                state
                    .payments
                    .get(&PaymentHash(*h))
                    .is_some_and(|p| p.preimage.is_some())
            },
            |pi: &[u8; 32]| fingerprint(pi),
            |pi: &[u8; 32]| ser(&pi.to_vec()),
        )?;
        shadow.preimages = pre;
        shadow.hinted_since_full = 0;
        Ok(())
    }

    fn delete_node(&self, node_id: &PublicKey) -> Result<(), Error> {
        self.inner.delete_node(node_id)
    }

    fn new_channel(&self, node_id: &PublicKey, stub: &ChannelStub) -> Result<(), Error> {
        self.inner.new_channel(node_id, stub)
    }

    fn delete_channel(&self, node_id: &PublicKey, channel: &ChannelId) -> Result<(), Error> {
        self.inner.delete_channel(node_id, channel)
    }

    fn new_tracker(
        &self,
        node_id: &PublicKey,
        tracker: &ChainTracker<ChainMonitor>,
    ) -> Result<(), Error> {
        self.inner.new_tracker(node_id, tracker)
    }

    fn update_tracker(
        &self,
        node_id: &PublicKey,
        tracker: &ChainTracker<ChainMonitor>,
    ) -> Result<(), Error> {
        self.inner.update_tracker(node_id, tracker)
    }

    fn get_tracker(
        &self,
        node_id: PublicKey,
        validator_factory: Arc<dyn ValidatorFactory>,
    ) -> Result<(ChainTracker<ChainMonitor>, Vec<ChainTrackerListenerEntry>), Error> {
        self.inner.get_tracker(node_id, validator_factory)
    }

    fn update_channel(&self, node_id: &PublicKey, channel: &Channel) -> Result<(), Error> {
        self.inner.update_channel(node_id, channel)
    }

    fn get_channel(
        &self,
        node_id: &PublicKey,
        channel_id: &ChannelId,
    ) -> Result<model::ChannelEntry, Error> {
        self.inner.get_channel(node_id, channel_id)
    }

    fn get_node_channels(
        &self,
        node_id: &PublicKey,
    ) -> Result<Vec<(ChannelId, model::ChannelEntry)>, Error> {
        self.inner.get_node_channels(node_id)
    }

    fn update_node_allowlist(
        &self,
        node_id: &PublicKey,
        allowlist: Vec<String>,
    ) -> Result<(), Error> {
        self.inner.update_node_allowlist(node_id, allowlist)
    }

    fn get_node_allowlist(&self, node_id: &PublicKey) -> Result<Vec<String>, Error> {
        self.inner.get_node_allowlist(node_id)
    }

    fn get_nodes(&self) -> Result<Vec<(PublicKey, model::NodeEntry)>, Error> {
        let mut nodes = self.inner.get_nodes()?;
        let invoices: Vec<([u8; 32], PaymentState)> = self.load_entries(INV)?;
        let issued: Vec<([u8; 32], PaymentState)> = self.load_entries(ISS)?;
        let preimages: Vec<([u8; 32], Vec<u8>)> = self.load_entries(PRE)?;
        let mut shadow = self.shadow.lock().unwrap_or_else(|p| p.into_inner());
        for (_, entry) in nodes.iter_mut() {
            let state = &mut entry.state;
            for (h, ps) in &invoices {
                state.invoices.insert(PaymentHash(*h), ps.clone());
                shadow.invoices.insert(*h, payment_fingerprint(ps));
            }
            for (h, ps) in &issued {
                state.issued_invoices.insert(PaymentHash(*h), ps.clone());
                shadow.issued.insert(*h, payment_fingerprint(ps));
            }
            for (h, pre) in &preimages {
                let preimage: [u8; 32] = pre
                    .as_slice()
                    .try_into()
                    .map_err(|_| Error::SerdeError("bad preimage".into()))?;
                if sha256::Hash::hash(&preimage).to_byte_array() != *h {
                    return Err(Error::SerdeError(format!(
                        "preimage under {} does not hash to its key",
                        hex::encode(h)
                    )));
                }
                let mut payment = RoutedPayment::new();
                payment.preimage = Some(PaymentPreimage(preimage));
                state.payments.insert(PaymentHash(*h), payment);
                shadow.preimages.insert(*h, fingerprint(&preimage));
            }
        }
        Ok(nodes)
    }

    fn clear_database(&self) -> Result<(), Error> {
        *self.shadow.lock().unwrap_or_else(|p| p.into_inner()) = Shadow::default();
        self.inner.clear_database()
    }

    fn on_initial_restore(&self) -> bool {
        self.inner.on_initial_restore()
    }

    fn recovery_required(&self) -> bool {
        self.inner.recovery_required()
    }

    fn begin_replication(&self) -> Result<Mutations, Error> {
        self.inner.begin_replication()
    }

    fn signer_id(&self) -> [u8; 16] {
        self.inner.signer_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightning_signer::bitcoin::secp256k1::{Secp256k1, SecretKey};
    use lightning_signer::util::velocity::{VelocityControl, VelocityControlSpec};
    use std::time::Duration;

    fn state() -> NodeState {
        NodeState::restore(
            vec![],
            vec![],
            vec![],
            0,
            VelocityControl::new(VelocityControlSpec::UNLIMITED),
            VelocityControl::new(VelocityControlSpec::UNLIMITED),
            0,
            vec![],
        )
    }

    fn payment(n: u64) -> PaymentState {
        PaymentState {
            invoice_hash: [n as u8; 32],
            amount_msat: n,
            payee: SecretKey::from_slice(&[1; 32])
                .unwrap()
                .public_key(&Secp256k1::new()),
            duration_since_epoch: Duration::from_secs(1_700_000_000),
            expiry_duration: Duration::from_secs(3_600),
            is_fulfilled: false,
            payment_type: PaymentType::Invoice,
        }
    }

    fn hash(n: u64) -> [u8; 32] {
        sha256::Hash::hash(&n.to_be_bytes()).to_byte_array()
    }

    #[test]
    fn the_state_record_stays_small_and_each_invoice_is_its_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Store::open(dir.path()).unwrap();
        let p = WardenPersister::new(VlsKvvStore::open(&db).unwrap());
        let node = SecretKey::from_slice(&[2; 32])
            .unwrap()
            .public_key(&Secp256k1::new());
        let mut st = state();
        let key = format!("node/state/{}", hex::encode(node.serialize()));
        let mut sizes = Vec::new();
        for n in 0..200u64 {
            p.enter().unwrap();
            st.invoices.insert(PaymentHash(hash(n)), payment(n));
            p.expect_payment_added(hash(n));
            p.update_node(&node, &st).unwrap();
            p.commit().unwrap();
            sizes.push(p.store().get(&key).unwrap().unwrap().1.len());
        }
        assert!(
            sizes.windows(2).all(|w| w[0] == w[1]),
            "the state record does not grow: {sizes:?}"
        );
        let stored = p.store().get_prefix(INV).unwrap().count();
        assert_eq!(stored, 200);

        // An unhinted change elsewhere (an invoice VLS marks fulfilled, one it prunes) is found.
        p.enter().unwrap();
        st.invoices
            .get_mut(&PaymentHash(hash(7)))
            .unwrap()
            .is_fulfilled = true;
        st.invoices.remove(&PaymentHash(hash(8)));
        p.update_node(&node, &st).unwrap();
        p.commit().unwrap();
        let fulfilled: PaymentState = JsonFormat::de_value(
            &p.store()
                .get(&format!("{INV}{}", hex::encode(hash(7))))
                .unwrap()
                .unwrap()
                .1,
        )
        .unwrap();
        assert!(fulfilled.is_fulfilled);
        assert_eq!(
            p.store()
                .get(&format!("{INV}{}", hex::encode(hash(8))))
                .unwrap(),
            None,
            "deleted, with nothing left on disk"
        );

        // A hint that does not match what changed falls back to the full comparison.
        p.enter().unwrap();
        st.issued_invoices
            .insert(PaymentHash(hash(999)), payment(999));
        st.invoices.insert(PaymentHash(hash(1000)), payment(1000));
        p.expect_payment_added(hash(1000));
        p.update_node(&node, &st).unwrap();
        p.commit().unwrap();
        assert!(
            p.store()
                .get(&format!("{ISS}{}", hex::encode(hash(999))))
                .unwrap()
                .is_some(),
            "issued invoice written"
        );

        // After a restart the fingerprints come from what was loaded: a full comparison of an
        // unchanged state writes nothing, and a changed field is still found.
        p.enter().unwrap();
        let entry = vls_persist::model::NodeEntry {
            key_derivation_style: 0,
            network: "regtest".into(),
        };
        p.store()
            .put(
                &format!("node/entry/{}", hex::encode(node.serialize())),
                ser(&entry).unwrap(),
            )
            .unwrap();
        p.update_node_allowlist(&node, vec![]).unwrap();
        p.commit().unwrap();
        drop(p);
        let p = WardenPersister::new(VlsKvvStore::open(&db).unwrap());
        assert_eq!(p.get_nodes().unwrap().len(), 1);
        let version = |n: u64| {
            p.store()
                .get_version(&format!("{INV}{}", hex::encode(hash(n))))
                .unwrap()
        };
        let before: Vec<_> = (0..20).map(version).collect();
        p.enter().unwrap();
        p.update_node(&node, &st).unwrap();
        p.commit().unwrap();
        assert_eq!((0..20).map(version).collect::<Vec<_>>(), before);
        p.enter().unwrap();
        st.invoices
            .get_mut(&PaymentHash(hash(9)))
            .unwrap()
            .expiry_duration = Duration::from_secs(7_200);
        p.update_node(&node, &st).unwrap();
        p.commit().unwrap();
        assert_eq!(version(9), before[9].map(|v| v + 1));
        assert_eq!(version(10), before[10]);
    }
}
