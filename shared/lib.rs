//! The shared library of the Matrix bridge: everything the Lambda functions in
//! `functions/` have in common.
//!
//! Layout, from the inside out:
//! - domain: [`ids`] (validated application ids and the puppet mapping),
//!   [`model`] (the records the bridge keeps), [`markdown`] (message rendering),
//!   [`auth`] (who may do what);
//! - ports: [`store::Store`], [`matrix::Matrix`], [`queue::RetryQueue`];
//! - adapters: DynamoDB, the appservice client on ruma, SQS, and in-memory fakes;
//! - [`api`]: HTTP plumbing for API Gateway events, errors mapped in one place;
//! - [`handlers`]: one module per function, plain async functions over the ports.

pub mod api;
pub mod auth;
pub mod config;
pub mod handlers;
pub mod ids;
pub mod markdown;
pub mod matrix;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod runtime;
pub mod store;
