//! The event store against a real PostgreSQL, one fresh database per test.

mod append;
mod feed;
mod support;
