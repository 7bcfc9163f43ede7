//! What the engine knows about the workspace between runs: content hashes behind a stat cache
//! (`hashing`), a stage's inputs as one record (`fingerprint`), `repro.lock` (`lockfile`), the
//! crash-safe state database (`db`), the checked plan kept in it (`plan_cache`), what a run
//! that changed nothing rested on (`up_to_date`), and the
//! [`workspace::Workspace`] that owns them and assesses a stage against its lock entry.

pub(crate) mod db;
pub(crate) mod fingerprint;
pub(crate) mod hashing;
pub(crate) mod lockfile;
pub(crate) mod plan_cache;
pub(crate) mod up_to_date;
pub(crate) mod workspace;
