//! The lab's policy enforcer in user space.
//!
//! - [`yaml`] and [`policy::api`]: what users write, parsed with located errors.
//! - [`policy::normalize`] and [`policy::resolve`]: from policies to the distilled map state.
//! - [`identity`]: security identities for label sets, reserved peers and CIDRs.
//! - [`engine`]: endpoints, identities and rules, synchronised into the kernel.
//! - [`datapath`]: the kernel programs and their maps (the only module touching BPF).
//! - [`proxy`]: the L7 HTTP proxy; [`l7`]: the proxy wired to the datapath and the engine.
//! - [`flow`]: Hubble-shaped flow records.
pub mod datapath;
pub mod engine;
pub mod flow;
pub mod identity;
pub mod l7;
pub mod policy;
pub mod proxy;
pub mod yaml;
