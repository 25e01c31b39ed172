//! Local development tooling for the bridge, kept out of the Lambda functions:
//! the front door that stands in for API Gateway, the poller that stands in
//! for the SQS event source mapping, dev tokens, creating the table and queues
//! on the emulator, the appservice registration, the webhook benchmark, and
//! the supervisor of the local stack. The `bridge-dev`
//! binary (`src/main.rs`) is its command line; the integration tests of
//! `matrix-bridge` use the library.

pub mod bench;
pub mod fault;
pub mod gateway;
pub mod registration;
pub mod retry_poller;
pub mod setup;
pub mod stack;
pub mod token;
pub mod wire;
