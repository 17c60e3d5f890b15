//! The sync engine end to end on moto + the TikTok sandbox, driven through the runner's handler with real
//! event JSON.

mod faulty;
mod fixture;
mod flows;
mod guards;
mod regressions;
mod reliability;
mod security;
