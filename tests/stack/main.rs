//! Integration tests against the real local stack (`scripts/stack up`):
//! Synapse on SQLite, DynamoDB and SQS on moto, the functions behind the
//! local front door, all on loopback, through real HTTP and the real SDKs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod changes;
mod client;
mod dead_letters;
mod flows;
mod guards;
mod matrix_ops;
mod media_activity;
mod openapi;
#[path = "../support/openapi.rs"]
mod openapi_spec;
mod provisioning;
mod retry_queue;
mod round_trips;
mod secrets;
mod threads;
mod webhook;
