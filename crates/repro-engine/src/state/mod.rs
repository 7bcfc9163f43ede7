//! What the engine knows about the workspace between runs: content hashes behind a stat cache
//! (`hashing`), a stage's inputs as one record (`fingerprint`), `repro.lock` (`lockfile`), the
//! crash-safe state database (`db`), the checked plan kept in it (`plan_cache`), what a run
//! that changed nothing rested on (`up_to_date`), and the
//! [`workspace::Workspace`] that owns them and assesses a stage against its lock entry.

pub mod db;
pub mod fingerprint;
pub mod hashing;
pub mod lockfile;
pub mod plan_cache;
pub mod up_to_date;
pub mod workspace;
