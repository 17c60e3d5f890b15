//! The sync engine: newest export → digests → diff against the committed snapshot → TikTok batches →
//! ledger. `engine` orchestrates a run in phases over the ports; the other modules are pure.

pub mod api;
pub mod batches;
pub mod engine;
pub mod guards;
pub mod input;
pub mod ledger;
pub mod reconnect;

pub use api::AudienceApi;
pub use engine::{COMMIT_ALLOWANCE, Deps, Engine, EngineSettings, TIKTOK_REQUEST_TIMEOUT};
pub use input::RunnerInput;
