//! Wiring: configuration and clients built once per process, composed into what the handlers call.

pub mod api;
pub mod runner;

/// JSON logs to stderr-free stdout as Lambda expects, level from `RUST_LOG` (default info). Never used to
/// log tokens or raw identifiers: those do not reach any log call.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .try_init();
}
