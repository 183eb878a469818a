//! CiliumNetworkPolicy: the API types ([`api`]), label selectors ([`selector`]), normalisation
//! ([`normalize`]) and resolution into map state ([`resolve`]); [`accept`], the one decision
//! whether the lab takes a document; the kinds policies work with: [`cidrgroup`]
//! (CiliumCIDRGroup) and [`limits`] (the lab's ConnectionLimit).
pub mod accept;
pub mod api;
pub mod cidrgroup;
pub mod limits;
pub mod normalize;
pub mod resolve;
pub mod selector;
