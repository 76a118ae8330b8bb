//! `/metrics`: what the recorder collected (traffic, calls, traps), followed by what is read
//! at scrape time — the build, the version of each loaded component, and the process — so a
//! scraper sees them from its first scrape, and a deployed version's old label set is gone at
//! once rather than left behind at some value.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::PrometheusHandle;

use super::process;
use crate::runtime::Runtime;

/// What a scrape reads: the recorder, and the runtime (none on a gateway, which loads no
/// components).
pub struct Scrape {
    pub handle: PrometheusHandle,
    pub runtime: Option<Arc<Runtime>>,
}

/// Set with `TRUEVALUE_COMMIT=<hash>` at build time (`just build` does); no build script, so
/// a build outside a git checkout works and merely leaves the label out.
const COMMIT: Option<&str> = option_env!("TRUEVALUE_COMMIT");

/// Prometheus text exposition.
pub async fn metrics(State(scrape): State<Arc<Scrape>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&scrape),
    )
}

fn render(scrape: &Scrape) -> String {
    let mut text = scrape.handle.render();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    family(
        &mut text,
        "truevalue_build_info",
        "gauge",
        "The running build: always 1.",
    );
    let mut labels = vec![("version", env!("CARGO_PKG_VERSION"))];
    if let Some(commit) = COMMIT.filter(|c| !c.is_empty()) {
        labels.push(("commit", commit));
    }
    sample(&mut text, "truevalue_build_info", &labels, 1.0);
    if let Some(runtime) = &scrape.runtime {
        text.push('\n');
        family(
            &mut text,
            "truevalue_component_info",
            "gauge",
            "The version each component runs: always 1, one series per component.",
        );
        // A component that failed to load runs no version: it has no series.
        for component in runtime.components() {
            let (Some(version), Some(digest)) = (&component.version, &component.digest) else {
                continue;
            };
            let labels = [
                ("component", component.name.as_str()),
                ("version", version.as_str()),
                ("digest", digest.as_str()),
            ];
            sample(&mut text, "truevalue_component_info", &labels, 1.0);
        }
    }
    if let Some(process) = process::read() {
        let families = [
            (
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent in seconds.",
                process.cpu_seconds,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                process.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                process.virtual_bytes,
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                process.open_fds,
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch in seconds.",
                process.start_time_seconds,
            ),
        ];
        for (name, kind, help, value) in families {
            text.push('\n');
            family(&mut text, name, kind, help);
            sample(&mut text, name, &[], value);
        }
    }
    text
}

fn family(text: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

fn sample(text: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    text.push_str(name);
    if !labels.is_empty() {
        text.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let _ = write!(text, "{key}=\"{}\"", escape(value));
        }
        text.push('}');
    }
    let _ = writeln!(text, " {value}");
}

/// A label value as the text format wants it: a component's version comes from its manifest,
/// so it may hold anything.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("1.0\"\\\n"), "1.0\\\"\\\\\\n");
    }
}
