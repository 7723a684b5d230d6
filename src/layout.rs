//! The host's paths under `--root` (SPEC §2): where the stack links, the
//! releases, the journals, the verified store, the history and the
//! backups live. The ground floor: every module that touches the host's
//! files names them through [`Layout`], and it imports nothing.

use std::path::PathBuf;

/// Where everything lives under `--root` (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// `<root>/stacks`, the directory of the stack symlinks.
    pub fn stacks_dir(&self) -> PathBuf {
        self.root.join("stacks")
    }

    /// `<root>/stacks/<stack>`, the symlink `docker compose` is run in.
    pub fn stack_link(&self, stack: &str) -> PathBuf {
        self.stacks_dir().join(stack)
    }

    /// `<root>/releases/stacks/<stack>`.
    pub fn releases_dir(&self, stack: &str) -> PathBuf {
        self.root.join("releases/stacks").join(stack)
    }

    pub fn release_dir(&self, stack: &str, id: &str) -> PathBuf {
        self.releases_dir(stack).join(id)
    }

    /// `<root>/releases/current/<stack>.json`.
    pub fn current_json(&self, stack: &str) -> PathBuf {
        self.root
            .join("releases/current")
            .join(format!("{stack}.json"))
    }

    /// `<root>/releases/verified/<stack>.txt`: the newest verified version.
    pub fn verified_txt(&self, stack: &str) -> PathBuf {
        self.root
            .join("releases/verified")
            .join(format!("{stack}.txt"))
    }

    /// `<root>/releases/verified/<stack>.yaml`: this host's verified store.
    pub fn verified_store(&self, stack: &str) -> PathBuf {
        self.root
            .join("releases/verified")
            .join(format!("{stack}.yaml"))
    }

    /// `<root>/releases/quarantined/<stack>.yaml`: the releases of the stack
    /// that failed here, as this host publishes them.
    pub fn quarantined_store(&self, stack: &str) -> PathBuf {
        self.root
            .join("releases/quarantined")
            .join(format!("{stack}.yaml"))
    }

    /// `<root>/deploy-history.log`.
    pub fn history(&self) -> PathBuf {
        self.root.join("deploy-history.log")
    }

    /// `<root>/releases/.stackpin`: journals, quarantine, locks.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("releases/.stackpin")
    }

    /// `<root>/backups/<stack>`: pre-deploy backups.
    pub fn backups_dir(&self, stack: &str) -> PathBuf {
        self.root.join("backups").join(stack)
    }
}
