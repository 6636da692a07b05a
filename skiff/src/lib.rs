//! Skiff in one command: `skiff server` runs a whole cluster on this machine, and
//! `skiff check` says what the machine lacks for it.

pub mod preflight;
pub mod server;
pub mod supervisor;
