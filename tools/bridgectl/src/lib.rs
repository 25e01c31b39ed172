//! `bridgectl`, the bulk cutover: provisions an application's existing
//! users, conversations and memberships from JSON Lines files through the
//! bridge's own provisioning service (built from `runtime::Adapters`, as
//! the provision function is), and verifies Matrix against them. Its own
//! package, never linked into a Lambda function.
//!
//! - [`input`]: the export's files and records;
//! - [`run`]: the provisioning run (bounded concurrency, resumable, dry run);
//! - [`verify`]: what differs between the export and Matrix;
//! - [`progress`], [`report`]: a progress bar or lines, the summary and
//!   the failures file;
//! - [`sample`]: a synthetic export for trials.

pub mod input;
pub mod progress;
pub mod report;
pub mod run;
pub mod sample;
pub mod verify;
