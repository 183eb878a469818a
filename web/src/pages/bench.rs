//! The Benchmark page: the latest `lab bench` results (table, goals, datapath figures, plots)
//! and a quick run started from the page with a progress bar. Everything it shows comes from the
//! lab through `/api/x/bench/...` (see the lab's `bench::web`); this module renders the page and
//! serves the plots as images.

use axum::{
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{AppState, Chrome, page};

#[derive(askama::Template)]
#[template(path = "bench.html")]
struct BenchPage {
    chrome: Chrome,
}

pub async fn bench_page(State(s): State<AppState>) -> Response {
    page(&BenchPage {
        chrome: Chrome::new(&s, "bench"),
    })
}

/// A run id or plot file name as the lab writes them: letters, digits, `-`, `_`, `.`, never a
/// path (the lab looks runs up by id and plots by fixed name; this is a second fence).
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The headers of a plot: SVG that can run nothing, even opened on its own.
const PLOT_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// `/bench/plots/{run}/{file}`: one of a run's SVG plots, as an image.
pub async fn plot(
    State(s): State<AppState>,
    Path((run, file)): Path<(String, String)>,
) -> Response {
    if !plain_name(&run) || !plain_name(&file) || !file.ends_with(".svg") {
        return (StatusCode::NOT_FOUND, "no such plot").into_response();
    }
    match s.backend.bench_plot(&run, &file).await {
        Ok(svg) => {
            let mut r = svg.into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("image/svg+xml"),
            );
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PLOT_CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_never_paths() {
        assert!(plain_name("20261121-231500"));
        assert!(plain_name("latency-l3-l4.svg"));
        for bad in [
            "", "..", ".", "../x.svg", "a/b.svg", "%2e%2e", ".svg", "a\\b",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
