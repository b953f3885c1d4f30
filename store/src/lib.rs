//! `store`: where validated readings are kept after the rules have seen them.
pub mod config;
pub mod embedded;
pub mod error;
pub mod metrics;

pub use config::{InfluxConfig, SpoolFullPolicy, StoreConfig};
pub use embedded::{Bucket, History, Point, ReadingStore, Samples, StoreStats};
pub use error::StoreError;
