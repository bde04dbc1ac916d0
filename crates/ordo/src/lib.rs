//! The Ordo application: configuration, the wiring of the services, the
//! command line, and the benchmark tools. `main.rs` only parses and calls.

pub mod app;
pub mod assets;
pub mod audit;
pub mod bench;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod ops;
pub mod reference;
pub mod stores;
pub mod stuck;
pub mod telemetry;

pub use app::{App, AppBuilder};
pub use config::Config;
