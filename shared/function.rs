//! What a Lambda function of the bridge is: a name, how it is triggered,
//! and how its handler is built from the [`Ports`]. `handlers::registry`
//! lists them all; a binary in `functions/` runs one.

use std::future::Future;
use std::pin::Pin;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::{Body, Response};

use crate::ports::{InitError, Ports};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A function invoked through the HTTP API (API Gateway, payload 2.0).
pub trait HttpFunction: Send + Sync {
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>>;
}

/// A function fed by an SQS event source mapping, reporting partial batch
/// failures.
pub trait QueueFunction: Send + Sync {
    fn call(&self, event: SqsEvent) -> BoxFuture<'_, SqsBatchResponse>;
}

/// A function run on a schedule (an EventBridge rule); what it did, as
/// JSON, is its result. An error fails the invocation (an alarm counts it).
pub trait ScheduledFunction: Send + Sync {
    fn call(&self) -> BoxFuture<'_, Result<serde_json::Value, crate::ports::BoxError>>;
}

/// A built function, ready for its events.
pub enum Handler {
    Http(Box<dyn HttpFunction>),
    Queue(Box<dyn QueueFunction>),
    Scheduled(Box<dyn ScheduledFunction>),
}

impl Handler {
    pub fn trigger(&self) -> Trigger {
        match self {
            Self::Http(_) => Trigger::Http,
            Self::Queue(_) => Trigger::Queue,
            Self::Scheduled(_) => Trigger::Schedule,
        }
    }
}

/// How a function is invoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Routes of the HTTP API (`api::routes`).
    Http,
    /// An SQS queue.
    Queue,
    /// A schedule.
    Schedule,
}

/// Builds a function's handler from the ports.
pub type Build<P> = for<'a> fn(&'a P) -> BoxFuture<'a, Result<Handler, InitError>>;

/// One function of the bridge: its name (the binary, the `Function` metric
/// dimension, the route table's and `template.yaml`'s name for it), how it
/// is invoked, and how it is built.
pub struct Function<P> {
    pub name: &'static str,
    pub trigger: Trigger,
    pub build: Build<P>,
}

impl<P: Ports> Function<P> {
    /// A function of the HTTP API.
    pub fn http(name: &'static str, build: Build<P>) -> Self {
        Self {
            name,
            trigger: Trigger::Http,
            build,
        }
    }

    /// A function fed by an SQS queue.
    pub fn queue(name: &'static str, build: Build<P>) -> Self {
        Self {
            name,
            trigger: Trigger::Queue,
            build,
        }
    }

    /// A function run on a schedule.
    pub fn scheduled(name: &'static str, build: Build<P>) -> Self {
        Self {
            name,
            trigger: Trigger::Schedule,
            build,
        }
    }

    /// Builds the handler.
    pub async fn handler(&self, ports: &P) -> Result<Handler, InitError> {
        (self.build)(ports).await
    }
}
