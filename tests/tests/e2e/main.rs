//! End-to-end tests: black box. Each test runs `audience-sync-local` (the binary) and uses only the HTTP API,
//! S3 uploads to the cohort bucket and the TikTok sandbox's `/_sandbox/` routes.

mod cadences;
mod flows;
mod integration;
mod notify;
mod restart;
mod support;
mod unmatched;
