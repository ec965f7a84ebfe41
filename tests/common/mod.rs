//! A real SoftHSM2 token per test, in its own temporary directory.
//!
//! SoftHSM reads its configuration (SOFTHSM2_CONF) once, at C_Initialize, and keeps process-wide
//! state, so two tests in one process cannot use two token directories through one loaded
//! library. Each test therefore loads its own copy of the library file from its temp dir: the
//! dynamic loader treats it as a different library with its own state. The environment variable
//! is set under a lock only for the moment of C_Initialize.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use warden::hsm::{Hsm, HsmConfig, HsmError, PinSource, DEFAULT_MODULE};

pub static INIT_LOCK: Mutex<()> = Mutex::new(());

pub const USER_PIN: &str = "4242-user";
pub const SO_PIN: &str = "9999-so";

pub struct TestToken {
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub module: PathBuf,
    pub label: String,
    pub pin_file: PathBuf,
    pub data_dir: PathBuf,
    /// The state backend's settings for every command of this token (empty: sled in data_dir).
    pub store_env: Vec<(String, String)>,
}

impl TestToken {
    /// A fresh token labelled `label` with [`USER_PIN`], in a new temp dir.
    pub fn new(label: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        let module = dir.path().join("libsofthsm2.so");
        std::fs::copy(
            std::fs::canonicalize(DEFAULT_MODULE).expect("softhsm2 installed (scripts/setup.sh)"),
            &module,
        )
        .unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                USER_PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let data_dir = dir.path().join("data");
        TestToken {
            conf,
            module,
            label: label.to_string(),
            pin_file,
            data_dir,
            dir,
            // The sled leg of the test matrix: every wardend and wardenctl of the run keeps its
            // state in sled (a PostgreSQL leg replaces this below); otherwise the default, the log.
            store_env: if pg::matrix_is_sled() {
                vec![("WARDEN_STORE_BACKEND".into(), "sled".into())]
            } else {
                Vec::new()
            },
        }
    }

    pub fn hsm_config(&self) -> HsmConfig {
        HsmConfig {
            module: self.module.clone(),
            token_label: self.label.clone(),
            pin: PinSource::File(self.pin_file.clone()),
            max_sessions: 4,
        }
    }

    /// Open with this token's SoftHSM configuration in force.
    pub fn open_with(&self, config: &HsmConfig) -> Result<Hsm, HsmError> {
        let _g = INIT_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
        Hsm::open(config)
    }

    pub fn open(&self) -> Hsm {
        self.open_with(&self.hsm_config()).expect("open test token")
    }

    /// A wardend/wardenctl command with this token's environment.
    pub fn command(&self, bin: &str) -> Command {
        self.command_via(&[], bin)
    }

    /// [`TestToken::command`] run under `wrapper` (a program and its arguments), when not empty.
    pub fn command_via(&self, wrapper: &[String], bin: &str) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin_path(bin));
                c
            }
            None => Command::new(bin_path(bin)),
        };
        c.env("SOFTHSM2_CONF", &self.conf)
            .env_remove("WARDEN_CONFIG")
            .env("WARDEN_DATA_DIR", &self.data_dir)
            .env("WARDEN_HSM_MODULE", DEFAULT_MODULE)
            .env("WARDEN_HSM_TOKEN", &self.label)
            .env("WARDEN_HSM_PIN_FILE", &self.pin_file)
            .env("WARDEN_NETWORK", "regtest")
            .env("WARDEN_METRICS_LISTEN", "127.0.0.1:0")
            .envs(self.store_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // wardend's first start records a policy file as the first policy in force and refuses
        // to start without one; tests that do not bring their own get the example policy.
        let policy = self.dir.path().join("example-policy.toml");
        if !policy.exists() {
            std::fs::write(&policy, warden::policy::DEFAULT_POLICY).unwrap();
        }
        c.env("WARDEN_POLICY", &policy);
        c
    }

    /// `wardenctl init` on this token, which must succeed; returns the node id it printed.
    pub fn init(&self) -> String {
        let out = self.command("wardenctl").arg("init").output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "wardenctl init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("node id:"))
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("no node id in: {stdout}"))
            .to_string()
    }

    /// Remove the HSM's audit key behind wardend's back, as a fault or an operator would.
    pub fn delete_audit_key(&self) {
        self.pkcs11_tool(&[
            "--login",
            "--pin",
            USER_PIN,
            "--delete-object",
            "--type",
            "privkey",
            "--label",
            warden::hsm::AUDIT_KEY_LABEL,
        ]);
    }

    /// OpenSC's pkcs11-tool on this token, as an operator uses it; it must succeed.
    fn pkcs11_tool(&self, args: &[&str]) {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", DEFAULT_MODULE, "--token-label", &self.label])
            .args(args)
            .output()
            .expect("pkcs11-tool (opensc) is installed by scripts/setup.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Close every session this process has on the token (C_CloseAllSessions through the
    /// module's raw function list; cryptoki does not wrap it), as an HSM that restarts would.
    pub fn close_all_sessions(&self) {
        let ctx = cryptoki::context::Pkcs11::new(&self.module).unwrap();
        // Loading the same file again gives the same, already initialized, library.
        let _ = ctx.initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ));
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .is_ok_and(|i| i.label() == self.label)
            })
            .expect("the test token's slot");
        // SAFETY: FFI into the PKCS#11 module; C_CloseAllSessions takes a slot id only.
        let rv = unsafe {
            let raw = cryptoki_sys::Pkcs11::new(&self.module).unwrap();
            raw.C_CloseAllSessions(slot.id())
        };
        assert_eq!(rv, cryptoki_sys::CKR_OK, "C_CloseAllSessions");
    }

    /// Change the user PIN from outside, as an operator with the HSM's admin tool would.
    pub fn change_pin(&self, old: &str, new: &str) {
        self.pkcs11_tool(&["--login", "--pin", old, "--change-pin", "--new-pin", new]);
    }

    /// A copy of this token's directory (the token's objects, the sealed seed, every file a
    /// test put there) as a token of its own: what a second HSM of a cluster holds.
    pub fn copy(&self, label: &str) -> TestToken {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{label}-"))
            .tempdir()
            .expect("temp dir");
        copy_tree(self.dir.path(), dir.path());
        let moved = |p: &Path| dir.path().join(p.strip_prefix(self.dir.path()).unwrap());
        let conf = moved(&self.conf);
        std::fs::write(
            &conf,
            std::fs::read_to_string(&self.conf).unwrap().replace(
                &self.dir.path().display().to_string(),
                &dir.path().display().to_string(),
            ),
        )
        .unwrap();
        TestToken {
            conf,
            module: moved(&self.module),
            label: self.label.clone(),
            pin_file: moved(&self.pin_file),
            data_dir: moved(&self.data_dir),
            store_env: self.store_env.clone(),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn bin_path(name: &str) -> PathBuf {
    match name {
        "wardend" => PathBuf::from(env!("CARGO_BIN_EXE_wardend")),
        "wardenctl" => PathBuf::from(env!("CARGO_BIN_EXE_wardenctl")),
        other => panic!("unknown binary {other}"),
    }
}

/// Copy `from` into `to`, recursively, keeping file modes.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

pub mod api;
pub mod cln;
pub mod daemon;
pub mod hook;
pub mod ldk_hub;
pub mod ldk_net;
pub mod pg;
pub mod stack;
