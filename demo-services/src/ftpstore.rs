//! The FTP log stores of the paper: one secure (login, each user kept in its own directory) and
//! one vulnerable ("scheduled for maintenance": anyone may log in, read and write).
//!
//! Built on libunftp with its filesystem back end. The passive port range is fixed and small
//! (default 30000–30009) so that an L4 policy with `endPort` can allow the data connections, and
//! the passive address advertised is the local address of the control connection (the pod's own
//! IP), never 127.0.0.1.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use libunftp::options::PassiveHost;
use libunftp::{Server, ServerBuilder};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use unftp_core::auth::{
    AuthenticationError, Authenticator, Credentials, Principal, UserDetail, UserDetailError,
    UserDetailProvider,
};
use unftp_sbe_fs::Filesystem;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the files live; kept by the orchestrator for the life of the lab.
    pub root: PathBuf,
    /// The store's name, shown in the greeting banner.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_passive_port_min")]
    pub passive_port_min: u16,
    #[serde(default = "default_passive_port_max")]
    pub passive_port_max: u16,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Mode {
    /// Login required; anonymous refused; each user sees only `<root>/<user>`.
    Secure { users: Vec<User> },
    /// Any user name and password (anonymous included) gets read and write access to `<root>`.
    Vulnerable,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Passwords end up in logs otherwise.
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 21))
}
fn default_name() -> String {
    "log-store".to_string()
}
fn default_passive_port_min() -> u16 {
    30000
}
fn default_passive_port_max() -> u16 {
    30009
}

/// Binds `cfg.listen` and serves until the process dies.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let listener = crate::listen::bind(cfg.listen).await?;
    serve(listener, cfg).await
}

/// Serves on an already bound listener (tests bind port 0).
pub async fn serve(listener: TcpListener, cfg: Config) -> anyhow::Result<()> {
    let store = Arc::new(Store::new(&cfg)?);
    tracing::info!(
        addr = %listener.local_addr()?,
        name = %cfg.name,
        root = %store.root.display(),
        mode = if store.users.is_some() { "secure" } else { "vulnerable" },
        passive_ports = ?store.passive_ports,
        "FTP store ready"
    );
    loop {
        let (stream, peer) = crate::listen::accept(&listener).await;
        tracing::info!(%peer, "FTP connection");
        // libunftp serves one control connection per Server value, so each gets its own.
        let server = store.server()?;
        tokio::spawn(async move {
            if let Err(e) = server.service(stream).await {
                tracing::warn!(%peer, error = ?e, "FTP session failed");
            }
        });
    }
}

/// What every connection's server is built from.
struct Store {
    root: PathBuf,
    /// `None` in vulnerable mode: anyone gets in.
    users: Option<Arc<Vec<User>>>,
    greeting: &'static str,
    passive_ports: std::ops::RangeInclusive<u16>,
}

impl Store {
    fn new(cfg: &Config) -> anyhow::Result<Store> {
        if cfg.passive_port_min > cfg.passive_port_max {
            anyhow::bail!(
                "passive port range {}..={} is empty",
                cfg.passive_port_min,
                cfg.passive_port_max
            );
        }
        std::fs::create_dir_all(&cfg.root)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.root.display()))?;
        // The filesystem back end checks that a user's home lies under its root by comparing
        // paths, so both must be spelled the same way: canonical.
        let root = cfg.root.canonicalize()?;
        let (users, greeting) = match &cfg.mode {
            Mode::Secure { users } => {
                for u in users {
                    if !is_plain_name(&u.name) {
                        anyhow::bail!("user name {:?} cannot be a directory name", u.name);
                    }
                }
                (
                    Some(Arc::new(users.clone())),
                    format!("Imperial log store {}: authorised personnel only", cfg.name),
                )
            }
            Mode::Vulnerable => (
                None,
                format!(
                    "Imperial log store {}: scheduled for maintenance, anonymous access enabled",
                    cfg.name
                ),
            ),
        };
        Ok(Store {
            root,
            users,
            // libunftp wants a 'static banner; one small string per started store is fine.
            greeting: Box::leak(greeting.into_boxed_str()),
            passive_ports: cfg.passive_port_min..=cfg.passive_port_max,
        })
    }

    fn server(&self) -> anyhow::Result<Server<Filesystem, StoreUser>> {
        let root = self.root.clone();
        let storage = Box::new(move || {
            // Only fails if the directory was removed under us; nothing sensible to do then.
            Filesystem::new(root.clone()).expect("the FTP root directory must exist")
        });
        let provider: Arc<dyn UserDetailProvider<User = StoreUser> + Send + Sync> =
            Arc::new(StoreUsers {
                root: self.root.clone(),
                chroot: self.users.is_some(),
            });
        let server =
            ServerBuilder::<Filesystem, StoreUser>::with_user_detail_provider(storage, provider)
                .authenticator(Arc::new(StoreAuth {
                    users: self.users.clone(),
                }))
                .greeting(self.greeting)
                .passive_ports(self.passive_ports.clone())
                // The address the client reached us on: the pod's IP inside the lab.
                .passive_host(PassiveHost::FromConnection)
                .build()?;
        Ok(server)
    }
}

/// A user name that is a single, ordinary path component.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks name and password against the configured users; with none configured, admits all.
#[derive(Debug)]
struct StoreAuth {
    users: Option<Arc<Vec<User>>>,
}

#[async_trait]
impl Authenticator for StoreAuth {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        let principal = Principal {
            username: username.to_string(),
        };
        let Some(users) = &self.users else {
            return Ok(principal);
        };
        let Some(user) = users.iter().find(|u| u.name == username) else {
            return Err(AuthenticationError::BadUser);
        };
        if creds.password.as_deref() == Some(user.password.as_str()) {
            Ok(principal)
        } else {
            Err(AuthenticationError::BadPassword)
        }
    }
}

/// A logged-in user; `home` is where the file system back end confines it.
#[derive(Debug)]
struct StoreUser {
    name: String,
    home: Option<PathBuf>,
}

impl fmt::Display for StoreUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl UserDetail for StoreUser {
    fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }
}

/// Gives secure-store users the home `<root>/<name>`, creating it on first login.
#[derive(Debug)]
struct StoreUsers {
    root: PathBuf,
    chroot: bool,
}

#[async_trait]
impl UserDetailProvider for StoreUsers {
    type User = StoreUser;

    async fn provide_user_detail(
        &self,
        principal: &Principal,
    ) -> Result<StoreUser, UserDetailError> {
        let name = principal.username.clone();
        if !self.chroot {
            return Ok(StoreUser { name, home: None });
        }
        // Only configured (and checked) names get here: the authenticator ran first.
        let home = self.root.join(&name);
        tokio::fs::create_dir_all(&home)
            .await
            .map_err(|e| UserDetailError::with_source("cannot create home directory", e))?;
        Ok(StoreUser {
            name,
            home: Some(home),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(is_plain_name("deathstar"));
        assert!(is_plain_name("log.writer-1"));
        assert!(!is_plain_name(".."));
        assert!(!is_plain_name("a/b"));
        assert!(!is_plain_name(""));
    }

    #[test]
    fn config_json_shape() {
        let cfg: Config = serde_json::from_str(
            r#"{"root": "/tmp/x", "mode": {"kind": "secure", "users": [{"name": "a", "password": "b"}]}}"#,
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 21);
        assert_eq!((cfg.passive_port_min, cfg.passive_port_max), (30000, 30009));
        let vuln: Config =
            serde_json::from_str(r#"{"root": "/tmp/x", "mode": {"kind": "vulnerable"}}"#).unwrap();
        assert_eq!(vuln.mode, Mode::Vulnerable);
    }

    #[test]
    fn passwords_stay_out_of_debug_output() {
        let u = User {
            name: "n".into(),
            password: "secret".into(),
        };
        assert!(!format!("{u:?}").contains("secret"));
    }
}
