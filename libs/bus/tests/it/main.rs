//! Integration tests of the bus against real nats-servers (one private
//! server per test, from `skileez_testkit::nats`) and, for the inbox, real
//! PostgreSQL databases. One test binary: every file here is a module.

mod cards;
mod consumer;
mod inbox;
mod outage;
mod publish;
mod security;
mod support;
mod topology;
