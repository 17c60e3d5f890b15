//! The sync engine end to end on moto + the TikTok sandbox, driven through the runner's handler with real
//! event JSON.

mod fixture;
mod flows;
mod guards;
mod reliability;
mod security;
