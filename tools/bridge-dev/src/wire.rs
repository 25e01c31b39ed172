//! Counting an AWS client's round trips on the wire, and how many of them
//! were sequential: an SDK interceptor that sees each request leave and its
//! attempt end. Requests in flight at the same time are one round of
//! latency; a round starts whenever a request leaves with none in flight.
//! For work made of phases of concurrent requests (the webhook's), the
//! rounds are the phases: the round trips on its critical path.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trips {
    /// Requests sent (retries included).
    pub requests: usize,
    /// Rounds: requests one after the other, however many went at once.
    pub sequential: usize,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    trips: Trips,
}

/// Clones share their counts: give one to several clients to count them
/// together.
#[derive(Clone, Default)]
pub struct Wire(Arc<Mutex<State>>);

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Wire").field(&self.trips()).finish()
    }
}

impl Wire {
    pub fn trips(&self) -> Trips {
        self.0.lock().map(|state| state.trips).unwrap_or_default()
    }

    /// Starts counting again.
    pub fn reset(&self) {
        if let Ok(mut state) = self.0.lock() {
            *state = State::default();
        }
    }

    fn sent(&self) {
        if let Ok(mut state) = self.0.lock() {
            if state.in_flight == 0 {
                state.trips.sequential += 1;
            }
            state.in_flight += 1;
            state.trips.requests += 1;
        }
    }

    fn ended(&self) {
        if let Ok(mut state) = self.0.lock() {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// A DynamoDB client counted here.
    pub fn dynamodb(&self, sdk: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
        self.dynamodb_with(sdk, self)
    }

    /// A DynamoDB client counted here and in `also`.
    pub fn dynamodb_with(
        &self,
        sdk: &aws_config::SdkConfig,
        also: &Wire,
    ) -> aws_sdk_dynamodb::Client {
        let mut config = aws_sdk_dynamodb::config::Builder::from(sdk).interceptor(self.clone());
        if !Arc::ptr_eq(&self.0, &also.0) {
            config = config.interceptor(also.clone());
        }
        aws_sdk_dynamodb::Client::from_conf(config.build())
    }

    /// An SQS client counted here and in `also`.
    pub fn sqs_with(&self, sdk: &aws_config::SdkConfig, also: &Wire) -> aws_sdk_sqs::Client {
        let mut config = aws_sdk_sqs::config::Builder::from(sdk).interceptor(self.clone());
        if !Arc::ptr_eq(&self.0, &also.0) {
            config = config.interceptor(also.clone());
        }
        aws_sdk_sqs::Client::from_conf(config.build())
    }
}

impl Intercept for Wire {
    fn name(&self) -> &'static str {
        "Wire"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.sent();
        Ok(())
    }

    fn read_after_attempt(
        &self,
        _context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _config: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.ended();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_requests_are_one_round() {
        let wire = Wire::default();
        wire.sent();
        wire.sent();
        wire.ended();
        wire.sent();
        wire.ended();
        wire.ended();
        wire.sent();
        wire.ended();
        assert_eq!(
            wire.trips(),
            Trips {
                requests: 4,
                sequential: 2
            }
        );
    }
}
