//! The web lab and the control API. `router` gives the whole HTTP surface: the JSON API used by
//! the CLI and the page, and the pages themselves (cluster view with live flows, lessons, policy
//! editor, graded exercises), with every script and style embedded in the binary.
pub mod actions;
pub mod api;
pub mod content;
pub mod pages;
pub mod runner;

use std::{path::PathBuf, sync::Arc};

pub use api::{ApiError, Backend, SharedBackend};

/// How the pages are served.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A teacher's lessons directory (`lab up --lessons DIR`), read at every request; its files
    /// add to the built-in lessons and replace those with the same name.
    pub lessons_dir: Option<PathBuf>,
}

/// The whole HTTP surface for a backend, with the built-in lessons only.
pub fn router(backend: SharedBackend) -> axum::Router {
    router_with(backend, Options::default())
}

/// The whole HTTP surface for a backend.
pub fn router_with(backend: SharedBackend, opts: Options) -> axum::Router {
    let state = pages::AppState {
        runner: Arc::new(runner::Runner::new(backend.clone())),
        library: content::Library::new(opts.lessons_dir),
        backend: backend.clone(),
    };
    api::routes()
        .with_state(backend)
        .merge(pages::routes().with_state(state))
}
