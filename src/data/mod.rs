//! Datasets: getting them (`download`), turning them into training-ready files (`preprocess`),
//! and reading them back for training (the loader, which needs libtorch, lives in the
//! `repro-torch` crate).
//!
//! The modules follow the data: [`recipe`] describes a dataset (sources, checksums, archive
//! layout, the split sizes of the paper's Table IV); [`fetch`] brings one file over HTTP(S) or
//! from a local path, resuming and retrying, and [`checksum`] verifies it before [`extract`]
//! unpacks it safely; [`prepare`] turns the download into the training-ready form, with
//! [`idx`] (Fashion-MNIST) and [`layouts`] + [`shards`] (JPEG image sets); [`augment`] holds the image transforms the loader applies.
//! Nothing here knows about the engine: the stage kinds in `crate::kinds::{download,
//! preprocess}` are thin wrappers around these functions.

pub mod atomic;
pub mod augment;
pub mod checksum;
pub mod extract;
pub mod fetch;
pub mod idx;
pub mod imagenet;
pub mod layouts;
pub mod mat;
pub mod prepare;
pub mod recipe;
pub mod shards;
