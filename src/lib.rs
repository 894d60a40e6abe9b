//! tickerlake: hourly Binance spot prices into a Parquet lake with per-symbol indicators.
//!
//! The modules follow the data: `source` (Binance → raw snapshot) → `lake` (where everything is
//! stored) → `process` + `indicators` (raw → processed partitions) → `query` (SQL over the lake);
//! `serve` answers PostgreSQL clients (Grafana) over the lake, `service` runs the hourly loop, `simulator` stands in for Binance offline.

pub mod aws;
pub mod blocking;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod faults;
pub mod indicators;
pub mod lake;
pub mod process;
pub mod query;
pub mod report;
pub mod serve;
pub mod service;
pub mod simulator;
pub mod source;
pub mod sql;
