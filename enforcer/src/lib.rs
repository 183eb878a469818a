//! The lab's policy enforcer in user space.
pub mod datapath;
pub mod identity;
pub mod netns;
pub mod policy;
pub mod engine;
pub mod flow;
