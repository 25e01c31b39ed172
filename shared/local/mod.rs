//! Local development: the front door that stands in for API Gateway, the
//! poller that stands in for the SQS event source mapping, dev tokens, and
//! creating the table and queues on the emulator.

pub mod gateway;
pub mod retry_poller;
pub mod setup;
pub mod token;
