//! AWS adapters against a real moto server (started by the harness unless `AWS_ENDPOINT_URL` is set).
//! Every test makes its own table/bucket/group/secret names, so they run in parallel against one server.

mod cohorts;
mod invoker;
mod moto_atomic;
mod notify;
mod rate;
mod schedules;
mod state;
mod tiktok_gate;
mod vault;
mod wiring;
