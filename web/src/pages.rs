//! The pages (askama templates in `web/templates/`), their JSON helpers under `/api/lessons` and
//! `/api/exercises`, and the embedded scripts and styles under `/static/`. Everything the page
//! needs is in the binary; a Content-Security-Policy of `'self'` makes sure nothing else loads.

use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};

use crate::{
    SharedBackend,
    api::ApiError,
    content::{Exercise, Lesson, Library, Step},
    runner::{CheckRun, Runner, StepRun},
};

mod bench;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Static;

#[derive(Clone)]
pub struct AppState {
    pub backend: SharedBackend,
    pub library: Library,
    pub runner: Arc<Runner>,
}

/// The pages and their helpers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(cluster_page))
        .route("/lessons", get(lessons_page))
        .route("/lessons/{id}", get(lesson_page))
        .route("/exercises", get(exercises_page))
        .route("/exercises/{id}", get(exercise_page))
        .route("/policies", get(policies_page))
        .route("/bench", get(bench::bench_page))
        .route("/bench/plots/{run}/{file}", get(bench::plot))
        .route("/static/{*path}", get(asset))
        .route("/favicon.ico", get(favicon))
        .route("/api/lessons", get(catalog_json))
        .route("/api/lessons/{id}", get(lesson_json))
        .route("/api/lessons/{id}/steps/{n}", post(run_step))
        .route("/api/exercises/{id}", get(exercise_json))
        .route("/api/exercises/{id}/check", post(check))
        .route("/api/policy-examples", get(policy_examples))
        .fallback(fallback)
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Escapes text for HTML.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A short hash of all embedded assets: asset URLs carry it, so browsers may cache them forever
/// and still get the new ones after a rebuild.
fn asset_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut names: Vec<_> = Static::iter().collect();
        names.sort();
        for name in names {
            if let Some(f) = Static::get(&name) {
                for b in name.bytes().chain(f.metadata.sha256_hash()) {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
            }
        }
        format!("{h:016x}")[..10].to_owned()
    })
}

/// What every page shows around its content.
pub struct Chrome {
    pub nav: &'static str,
    pub v: &'static str,
    pub instance: String,
}

impl Chrome {
    fn new(state: &AppState, nav: &'static str) -> Self {
        Self {
            nav,
            v: asset_version(),
            instance: state.backend.instance(),
        }
    }
}

fn page(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => (
            [
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Html(html),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "cluster.html")]
struct ClusterPage {
    chrome: Chrome,
}

async fn cluster_page(State(s): State<AppState>) -> Response {
    page(&ClusterPage {
        chrome: Chrome::new(&s, "cluster"),
    })
}

#[derive(Template)]
#[template(path = "lessons.html")]
struct LessonsPage {
    chrome: Chrome,
    lessons: Vec<Lesson>,
    problems: Vec<String>,
    dir: Option<String>,
}

async fn lessons_page(State(s): State<AppState>) -> Response {
    let cat = s.library.catalog();
    page(&LessonsPage {
        chrome: Chrome::new(&s, "lessons"),
        lessons: cat.lessons,
        problems: cat.problems.iter().map(ToString::to_string).collect(),
        dir: s.library.dir.as_ref().map(|d| d.display().to_string()),
    })
}

#[derive(Template)]
#[template(path = "step.html")]
struct StepCard<'a> {
    step: &'a Step,
}

impl StepCard<'_> {
    fn policy_yaml(&self) -> Option<&str> {
        match &self.step.spec {
            Ok(s) => match &s.action {
                crate::content::Action::Apply { yaml, .. } => Some(yaml),
                crate::content::Action::Audit { files } => files.first().map(|f| f.text.as_str()),
                _ => None,
            },
            Err(_) => None,
        }
    }
}

#[derive(Template)]
#[template(path = "lesson.html")]
struct LessonPage {
    chrome: Chrome,
    lesson: Lesson,
    body: String,
    prev: Option<(String, String)>,
    next: Option<(String, String)>,
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFound {
    chrome: Chrome,
    what: String,
    back: &'static str,
}

fn not_found(s: &AppState, nav: &'static str, what: String, back: &'static str) -> Response {
    let mut r = page(&NotFound {
        chrome: Chrome::new(s, nav),
        what,
        back,
    });
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

async fn fallback(State(s): State<AppState>, uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::not_found(format!("no API route {}", uri.path())).into_response();
    }
    not_found(&s, "", format!("There is no page at {}.", uri.path()), "/")
}

async fn lesson_page(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let cat = s.library.catalog();
    let Some(i) = cat.lessons.iter().position(|l| l.id == id) else {
        return not_found(
            &s,
            "lessons",
            format!("There is no lesson {id:?}."),
            "/lessons",
        );
    };
    let link = |l: &Lesson| (l.id.clone(), l.title.clone());
    let prev = i.checked_sub(1).map(|j| link(&cat.lessons[j]));
    let next = cat.lessons.get(i + 1).map(link);
    let lesson = cat.lessons[i].clone();
    let mut body = lesson.html.clone();
    for step in &lesson.steps {
        let card = StepCard { step }
            .render()
            .unwrap_or_else(|e| format!("<p>step {}: {e}</p>", step.n));
        body = body.replace(&format!("<!--step:{}-->", step.n), &card);
    }
    page(&LessonPage {
        chrome: Chrome::new(&s, "lessons"),
        lesson,
        body,
        prev,
        next,
    })
}

#[derive(Template)]
#[template(path = "exercises.html")]
struct ExercisesPage {
    chrome: Chrome,
    exercises: Vec<Exercise>,
}

async fn exercises_page(State(s): State<AppState>) -> Response {
    page(&ExercisesPage {
        chrome: Chrome::new(&s, "exercises"),
        exercises: s.library.catalog().exercises,
    })
}

#[derive(Template)]
#[template(path = "expectations.html")]
struct Expectations<'a> {
    ex: &'a Exercise,
}

#[derive(Template)]
#[template(path = "exercise.html")]
struct ExercisePage {
    chrome: Chrome,
    ex: Exercise,
    body: String,
}

async fn exercise_page(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(ex) = s.library.exercise(&id) else {
        return not_found(
            &s,
            "exercises",
            format!("There is no exercise {id:?}."),
            "/exercises",
        );
    };
    let table = Expectations { ex: &ex }
        .render()
        .unwrap_or_else(|e| format!("<p>{e}</p>"));
    let body = ex.html.replace("<!--expectations-->", &table);
    page(&ExercisePage {
        chrome: Chrome::new(&s, "exercises"),
        ex,
        body,
    })
}

#[derive(Template)]
#[template(path = "policies.html")]
struct PoliciesPage {
    chrome: Chrome,
}

async fn policies_page(State(s): State<AppState>) -> Response {
    page(&PoliciesPage {
        chrome: Chrome::new(&s, "policies"),
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

async fn asset(Path(path): Path<String>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let Some(file) = Static::get(&path) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = if q.is_some_and(|q| q.starts_with("v=")) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut r = file.data.into_owned().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(&path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    r
}

async fn favicon() -> Response {
    match Static::get("favicon.svg") {
        Some(f) => (
            [(header::CONTENT_TYPE, "image/svg+xml")],
            f.data.into_owned(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /api/lessons`: what there is to learn, and the problems found in the files.
#[derive(Serialize)]
struct CatalogView {
    lessons: Vec<Entry>,
    exercises: Vec<Entry>,
    problems: Vec<crate::content::Problem>,
    /// The teacher's directory, if any.
    dir: Option<String>,
}

#[derive(Serialize)]
struct Entry {
    id: String,
    title: String,
    summary: String,
    file: String,
    /// Steps of a lesson.
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<usize>,
    /// Expectations of an exercise.
    #[serde(skip_serializing_if = "Option::is_none")]
    expectations: Option<usize>,
}

async fn catalog_json(State(s): State<AppState>) -> Json<CatalogView> {
    let cat = s.library.catalog();
    Json(CatalogView {
        lessons: cat
            .lessons
            .iter()
            .map(|l| Entry {
                id: l.id.clone(),
                title: l.title.clone(),
                summary: l.summary.clone(),
                file: l.file.clone(),
                steps: Some(l.steps.len()),
                expectations: None,
            })
            .collect(),
        exercises: cat
            .exercises
            .iter()
            .map(|e| Entry {
                id: e.id.clone(),
                title: e.title.clone(),
                summary: e.summary.clone(),
                file: e.file.clone(),
                steps: None,
                expectations: Some(e.probes.len()),
            })
            .collect(),
        problems: cat.problems,
        dir: s.library.dir.as_ref().map(|d| d.display().to_string()),
    })
}

async fn policy_examples(State(s): State<AppState>) -> Json<Vec<crate::content::PolicyExample>> {
    Json(s.library.policy_examples())
}

async fn lesson_json(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Lesson>, ApiError> {
    s.library
        .lesson(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no lesson {id:?}")))
}

/// Runs a step; `?wait` instead waits for the step started in the background and returns its
/// result.
async fn run_step(
    State(s): State<AppState>,
    Path((id, n)): Path<(String, usize)>,
    RawQuery(q): RawQuery,
) -> Result<Json<StepRun>, ApiError> {
    let key = format!("{id}/{n}");
    if q.is_some_and(|q| q.split('&').any(|p| p == "wait" || p.starts_with("wait="))) {
        return Ok(Json(s.runner.background_result(&key).await?));
    }
    let lesson = s
        .library
        .lesson(&id)
        .ok_or_else(|| ApiError::not_found(format!("no lesson {id:?}")))?;
    let step = lesson
        .steps
        .iter()
        .find(|st| st.n == n)
        .ok_or_else(|| ApiError::not_found(format!("lesson {id:?} has no step {n}")))?;
    let spec = step
        .spec
        .as_ref()
        .map_err(|e| ApiError::new(422, format!("step {n} cannot run: {e}")))?;
    Ok(Json(s.runner.run(&key, spec).await?))
}

async fn exercise_json(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Exercise>, ApiError> {
    s.library
        .exercise(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no exercise {id:?}")))
}

#[derive(Deserialize)]
struct CheckBody {
    #[serde(default)]
    policy: String,
}

async fn check(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(body): Json<CheckBody>,
) -> Result<Json<CheckRun>, ApiError> {
    let ex = s
        .library
        .exercise(&id)
        .ok_or_else(|| ApiError::not_found(format!("no exercise {id:?}")))?;
    Ok(Json(s.runner.check(&ex, &body.policy).await?))
}
