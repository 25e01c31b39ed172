//! The API functions' logic: plain async code over the ports, one module per
//! Lambda function, testable without a network.

pub mod history;
pub mod outbound;
pub mod provision;
mod puppets;
pub mod retry;
pub mod send;
mod views;

use crate::api::ApiError;
use crate::matrix::MatrixError;
use crate::queue::QueueError;
use crate::store::StoreError;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Corrupt(_) => ApiError::internal(err),
            _ => ApiError::unavailable(err),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(err: QueueError) -> Self {
        ApiError::unavailable(err)
    }
}

impl From<MatrixError> for ApiError {
    fn from(err: MatrixError) -> Self {
        match err {
            MatrixError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            other => ApiError::unavailable(other),
        }
    }
}
