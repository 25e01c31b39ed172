//! The shared library of the Matrix bridge: everything the Lambda functions in
//! `functions/` have in common.
//!
//! Layout, from the inside out:
//! - domain: [`ids`] (validated application ids and the puppet mapping),
//!   [`model`] (the records the bridge keeps), [`markdown`] (message
//!   rendering), [`error`] (what goes wrong, in the bridge's words);
//! - ports: [`store`], [`matrix::Matrix`], [`queue::RetryQueue`],
//!   [`inbound::InboundQueue`], gathered as [`ports::Ports`]; adapters:
//!   DynamoDB, the appservice client on ruma, SQS ([`runtime::Adapters`]),
//!   and in-memory fakes ([`fakes::Fakes`]);
//! - [`api`]: the HTTP edge: routes with their auth kinds, the caller,
//!   views, and the error mappings;
//! - [`handlers`]: one module per function, and the registry of functions;
//!   [`function`] says what a function is, [`runtime`] runs one in Lambda;
//! - [`tls`] and [`aws_http`]: one TLS configuration and one HTTP stack for
//!   every client of a function, the AWS SDK's included.

pub mod api;
pub mod aws_http;
pub mod config;
pub mod error;
pub mod fakes;
pub mod fetch;
pub mod fifo;
pub mod function;
pub mod handlers;
pub mod ids;
pub mod inbound;
pub mod markdown;
pub mod matrix;
pub mod media;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod queue;
pub mod runtime;
pub mod secrets;
pub mod store;
pub mod tls;
