//! The web lab and the control API. `router` gives the whole HTTP surface: the JSON API used by
//! the CLI and the page, and the pages themselves.
pub mod api;

pub use api::{ApiError, Backend, SharedBackend};

/// The whole HTTP surface for a backend.
pub fn router(backend: SharedBackend) -> axum::Router {
    api::routes().with_state(backend)
}
