//! The reliability scenarios of issue #10, one test each, in one test
//! binary so that they share one link and run side by side (they mostly
//! wait; two at a time keep the small suite within a few minutes). Each
//! starts a whole system of its own on free loopback ports — a private
//! PostgreSQL, NATS, an SMTP server, the three services as `skileez serve`
//! processes — drives the mixed load, injects its faults, lets the system
//! settle and checks the invariants (`skileez_reliability::check`).
//!
//! `SKILEEZ_RELIABILITY_SIZE=small` (default) or `full`; `run.sh` beside
//! this crate runs them. Filter by scenario: `cargo test -p
//! skileez-reliability --test scenarios -- kills`.

mod fault_proxy;
mod kills;
mod nats_cluster;
mod nats_outage;
mod postgres_outage;
mod regressions;
mod soak;
mod two_instances;
