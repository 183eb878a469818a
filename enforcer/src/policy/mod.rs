pub mod api;
pub mod selector;
