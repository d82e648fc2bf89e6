//! The reliability suite's support: the whole system as real processes
//! ([`system`]), the faults ([`proxy`], kills through [`services`],
//! [`postgres`] and [`nats_cluster`]), the mixed load ([`load`]) and the
//! invariants ([`check`]). The scenarios are the integration tests in
//! `tests/`; `run.sh` runs them; `RELIABILITY.md` at the repository root
//! reports what they measured.

pub mod check;
pub mod load;
pub mod nats_cluster;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod services;
pub mod smtp;
pub mod system;
