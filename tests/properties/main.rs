//! Property-based tests: random interleavings checked against small reference models.
//!
//! - [`store_model`]: the store contract, operation by operation, against every store.
//! - [`engine_model`]: the engine through real HTTP (concurrent duplicates, mismatches,
//!   failures and panics, two tenants), against every store.
//!
//! Redis and PostgreSQL run when their features are on and their servers answer (at
//! 127.0.0.1:6379 and postgres://postgres@127.0.0.1:5432/postgres); a missing server is a skip
//! notice, except under `CI=true`, where it fails. `PROPTEST_CASES` overrides every case count.

mod engine_model;
mod servers;
mod store_model;
