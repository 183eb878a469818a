//! The lab's policy enforcer in user space.
pub mod datapath;
pub mod proxy;
pub mod policy;
pub mod yaml;
