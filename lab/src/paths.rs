//! Where one lab instance keeps its state. Everything an instance creates on the filesystem is
//! under `/run/lab/<instance>/`; its network namespaces are `<instance>-...` in /run/netns.

use std::path::PathBuf;

/// The running lab's own program, for what it starts in pods. Unlike `current_exe()`, this
/// stays valid when a rebuild replaces the file on disk, and it keeps workloads on the same
/// version as the lab that supervises them. Started with argv[0] `lab` (see [`LAB_ARG0`]).
pub const SELF_EXE: &str = "/proc/self/exe";
/// What `ps` shows for processes started from [`SELF_EXE`].
pub const LAB_ARG0: &str = "lab";

/// The default instance name. Tests use their own unique names so labs can run side by side.
pub const DEFAULT_INSTANCE: &str = "lab";

#[derive(Clone, Debug)]
pub struct Paths {
    pub instance: String,
    pub root: PathBuf,
}

impl Paths {
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            root: PathBuf::from("/run/lab").join(instance),
        }
    }
    /// The record of everything this instance created (for exact cleanup).
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }
    /// The control API socket used by the CLI.
    pub fn api_socket(&self) -> PathBuf {
        self.root.join("api.sock")
    }
    pub fn bpffs(&self) -> PathBuf {
        self.root.join("bpf")
    }
    pub fn cgroup_mount(&self) -> PathBuf {
        self.root.join("cgroup")
    }
    /// The instance's own cgroup inside the cgroup2 mount.
    pub fn cgroup_root(&self) -> PathBuf {
        self.cgroup_mount().join(format!("lab-{}", self.instance))
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
    /// Persistent data of pods (FTP stores' files), kept for the life of the lab.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }
    pub fn dns_records(&self) -> PathBuf {
        self.root.join("dns/records.json")
    }
    /// Applied policies, kept so a restarted lab restores them.
    pub fn policies(&self) -> PathBuf {
        self.root.join("policies")
    }
    pub fn node_netns(&self) -> String {
        format!("{}-node", self.instance)
    }
    /// Namespaces of the lab's own machinery (`world`, `attacker`, `monitor`).
    pub fn netns_named(&self, name: &str) -> String {
        format!("{}-{name}", self.instance)
    }
    pub fn pod_netns(&self, namespace: &str, pod: &str) -> String {
        format!("{}-{namespace}-{pod}", self.instance)
    }
}
