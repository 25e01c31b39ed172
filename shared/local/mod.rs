//! Local development: the front door that stands in for API Gateway, dev
//! tokens, and creating the table and queues on the emulator.

pub mod gateway;
pub mod setup;
pub mod token;
