//! The lab's policy enforcer in user space.
pub mod datapath;
pub mod proxy;
