pub mod classify;
pub mod config;
