//! CiliumNetworkPolicy: the API types ([`api`]), label selectors ([`selector`]), normalisation
//! ([`normalize`]) and resolution into map state ([`resolve`]); [`accept`], the one decision
//! whether the lab takes a document.
pub mod accept;
pub mod api;
pub mod limits;
pub mod normalize;
pub mod resolve;
pub mod selector;
