//! The `transactions` function: the appservice webhook, how Matrix reaches
//! the application (docs/API.md, "Routes" and "Events to the
//! application"; docs/DESIGN.md, decisions 6, 8 and 9).
//!
//! Its routes (auth kind `HsToken`, checked in constant time by
//! [`appservice::serve`]) are the Application Service API's, read with
//! ruma's server-side types:
//! - `PUT /_matrix/app/v1/transactions/{txnId}`: the homeserver's events;
//! - `GET /_matrix/app/v1/users/{userId}`: `200` for the puppet of a user the
//!   application knows (registered first), `404` otherwise;
//! - `GET /_matrix/app/v1/rooms/{roomAlias}`: `404` (the bridge provides no
//!   aliases);
//! - `POST /_matrix/app/v1/ping`: `200 {}`.
//!
//! A transaction is answered `200 {}` only once its effects are durable:
//! 1. its events are sorted ([`classify`]): a Matrix user's messages, edits,
//!    redactions, joins and leaves, typing and receipts are passed on; the
//!    echoes of our own sends confirm delivery; the rest is ignored, and what
//!    cannot be read is recorded with why and skipped;
//! 2. the table is read in one or two rounds ([`reads`]); a transaction
//!    recorded before with the same events is answered at once;
//! 3. the effects are worked out in memory ([`effects`]) and written at
//!    once ([`writes`]);
//! 4. the events are published to the inbound queue, in order per
//!    conversation;
//! 5. the transaction is recorded (unless it changed nothing: a transaction
//!    of presence or of echoes of delivered messages needs no record, since
//!    doing it again does nothing again).
//!
//! A failure of the table or the queue is `503` (the homeserver retries the
//! same transaction; every step is idempotent: messages from Matrix have
//! ids derived from their events, updates are conditional, publications
//! are deduplicated by SQS). On the critical path that is 3 sequential
//! table round trips for a warm container (4 cold, when a room's
//! conversation is not cached yet, or to find the messages edits and
//! redactions refer to), plus one `SendMessageBatch` per ten events of the
//! busiest conversation, one after the other so they keep their order.

mod body;
mod classify;
mod content;
mod effects;
mod reads;
mod writes;

use lambda_http::{Body, Response};
use ruma::OwnedRoomId;
use ruma::api::appservice::event::push_events;
use ruma::api::appservice::ping::send_ping;
use ruma::api::appservice::query::{query_room_alias, query_user_id};
use time::OffsetDateTime;

pub use body::Transaction;
use classify::{Ours, Sorted};

use super::cache::Settled;
use crate::api::Route;
use crate::api::appservice::{self, AppserviceRequest, MatrixApiError, respond};
use crate::error::Error;
use crate::function::{BoxFuture, Function, Handler, HttpFunction};
use crate::ids::{ConversationId, PuppetNamer};
use crate::inbound::{InboundQueue, MAX_BODY};
use crate::matrix::Matrix;
use crate::metrics::{Counter, Metrics};
use crate::model::{SkippedEvent, TransactionRecord};
use crate::ports::{InitError, Ports};
use crate::secrets::CachedSecret;
use crate::store::Store;

pub const NAME: &str = "transactions";

/// The function, for the registry.
pub fn function<P: Ports>() -> Function<P> {
    Function::http(NAME, |ports| Box::pin(build(ports)))
}

async fn build<P: Ports>(ports: &P) -> Result<Handler, InitError> {
    let namer = ports.namer()?;
    // Two secrets at a cold start: read at once.
    let (hs_token, matrix) = futures::try_join!(ports.hs_token(), ports.matrix())?;
    Ok(Handler::Http(Box::new(TransactionsService {
        store: ports.store().await?,
        matrix,
        inbound: ports.inbound().await?,
        namer,
        hs_token,
        metrics: ports.metrics(NAME),
        rooms: Settled::default(),
    })))
}

/// The function's state, built once per container.
pub struct TransactionsService<S, M, Q> {
    store: S,
    matrix: M,
    inbound: Q,
    namer: PuppetNamer,
    hs_token: CachedSecret,
    metrics: Metrics,
    /// Room -> conversation, which never changes once set.
    rooms: Settled<OwnedRoomId, ConversationId>,
}

impl<S, M, Q> HttpFunction for TransactionsService<S, M, Q>
where
    S: Store + 'static,
    M: Matrix + 'static,
    Q: InboundQueue + 'static,
{
    fn call(&self, request: lambda_http::Request) -> BoxFuture<'_, Response<Body>> {
        Box::pin(self.handle(request))
    }
}

/// What became of a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Processed {
    /// Recorded before: nothing done again.
    Repeated,
    Done {
        published: u32,
        skipped: Vec<SkippedEvent>,
    },
}

impl<S: Store, M: Matrix, Q: InboundQueue> TransactionsService<S, M, Q> {
    pub async fn handle(&self, request: lambda_http::Request) -> Response<Body> {
        appservice::serve(
            &self.metrics,
            &self.hs_token,
            request,
            |request| async move {
                match request.route {
                    Route::AppTransaction => self.transaction(request).await,
                    Route::AppUser => self.user(request).await,
                    Route::AppRoomAlias => self.room_alias(request).await,
                    Route::AppPing => {
                        let _: send_ping::v1::Request = request.parse(&[])?;
                        respond(send_ping::v1::Response::new())
                    }
                    _ => Err(MatrixApiError::Unrecognized {
                        method_not_allowed: false,
                    }),
                }
            },
        )
        .await
    }

    async fn transaction(
        &self,
        request: AppserviceRequest,
    ) -> Result<Response<Body>, MatrixApiError> {
        let transaction = Transaction::read(&request)?;
        self.process(&transaction).await?;
        respond(push_events::v1::Response::new())
    }

    /// `200` for the puppet of a user the application knows, registered
    /// first (the homeserver asks when it has no such user: it may have
    /// lost it); `404` for anyone else.
    async fn user(&self, request: AppserviceRequest) -> Result<Response<Body>, MatrixApiError> {
        let query: query_user_id::v1::Request = request.parse(&[request.path_param("userId")?])?;
        let not_found = || MatrixApiError::NotFound("no such user".into());
        let user = self.namer.app_user(&query.user_id).ok_or_else(not_found)?;
        let known = self
            .store
            .puppets(std::slice::from_ref(&user))
            .await
            .map_err(Error::from)?;
        let mut puppet = known.into_iter().next().ok_or_else(not_found)?;
        self.matrix
            .register_puppet(&self.namer.localpart(&user))
            .await
            .map_err(Error::from)?;
        if !puppet.registered {
            puppet.registered = true;
            self.store.put_puppet(&puppet).await.map_err(Error::from)?;
            self.metrics.count(Counter::PuppetsRegistered);
        }
        respond(query_user_id::v1::Response::new())
    }

    async fn room_alias(
        &self,
        request: AppserviceRequest,
    ) -> Result<Response<Body>, MatrixApiError> {
        let _: query_room_alias::v1::Request =
            request.parse(&[request.path_param("roomAlias")?])?;
        Err(MatrixApiError::NotFound(
            "the bridge provides no room aliases".into(),
        ))
    }

    /// Processes a transaction: see the module's documentation.
    pub async fn process(&self, transaction: &Transaction) -> Result<Processed, Error> {
        let ours = Ours {
            namer: &self.namer,
            bot: self.matrix.bot(),
        };
        let persistent = transaction.events.len();
        let sorted = transaction
            .events
            .iter()
            .enumerate()
            .map(|(i, raw)| ours.timeline(index(i), raw))
            .chain(
                transaction
                    .ephemeral
                    .iter()
                    .enumerate()
                    .map(|(i, raw)| ours.ephemeral(index(persistent + i), raw)),
            );
        let (mut incoming, mut skipped, mut ignored) = (Vec::new(), Vec::new(), 0);
        for event in sorted {
            match event {
                Sorted::Use(events) => incoming.extend(events),
                Sorted::Ignored(why) => {
                    tracing::debug!(why, "event not passed on");
                    ignored += 1;
                }
                Sorted::Skipped(event) => {
                    tracing::warn!(txn_id = transaction.id, index = event.index, event_id = ?event.event_id, event_type = ?event.event_type, reason = event.reason, "event skipped");
                    skipped.push(event);
                }
            }
        }

        if incoming.is_empty() && skipped.is_empty() {
            // Presence, our own room set-up: nothing to read, do or remember.
            self.metrics.counts(&[(Counter::InboundIgnored, ignored)]);
            return Ok(Processed::Done {
                published: 0,
                skipped,
            });
        }
        let started = std::time::Instant::now();
        let known = reads::read(&self.store, &self.rooms, transaction, &incoming).await?;
        let read_ms = started.elapsed().as_millis() as u64;
        if known.record.as_ref().is_some_and(|record| {
            record.is_repeated_by(
                &transaction.fingerprint,
                transaction.ephemeral_fingerprint(),
            )
        }) {
            tracing::info!(txn_id = transaction.id, "transaction repeated; done before");
            self.metrics.count(Counter::TransactionsRepeated);
            return Ok(Processed::Repeated);
        }
        let identity = format!("{}/{}", transaction.id, transaction.ephemeral_fingerprint);
        let effects = effects::work_out(&self.namer, &identity, &known, incoming);
        writes::write(&self.store, &effects).await?;
        let written_ms = started.elapsed().as_millis() as u64;

        let mut events = Vec::with_capacity(effects.events.len());
        for (index, event) in &effects.events {
            let size = event.to_json().len();
            if size > MAX_BODY {
                skipped.push(SkippedEvent {
                    index: *index,
                    event_id: event.event_id.as_ref().map(ToString::to_string),
                    event_type: None,
                    reason: format!("{size} bytes is more than the inbound queue takes"),
                });
            } else {
                events.push(event.clone());
            }
        }
        self.inbound.publish(&events).await?;
        let published_ms = started.elapsed().as_millis() as u64;

        let now = OffsetDateTime::now_utc();
        let published = u32::try_from(events.len()).unwrap_or(u32::MAX);
        // A transaction that changed nothing (echoes of delivered messages)
        // needs no record: doing it again does nothing again.
        let did_something = published > 0 || !skipped.is_empty() || effects.writes();
        if did_something {
            self.store
                .record_transaction(&TransactionRecord {
                    txn_id: transaction.id.clone(),
                    fingerprint: transaction.fingerprint.clone(),
                    ephemeral_fingerprint: transaction.ephemeral_fingerprint.clone(),
                    events: index(persistent),
                    ephemeral: index(transaction.ephemeral.len()),
                    published,
                    skipped: skipped.clone(),
                    processed_at: now,
                    expires_at: now + TransactionRecord::LIFETIME,
                })
                .await?;
        }
        self.metrics.counts(&[
            (Counter::InboundPublished, published),
            (Counter::InboundSkipped, index(skipped.len())),
            (Counter::InboundIgnored, ignored + effects.ignored),
            (Counter::InboundUnknownRoom, effects.unknown_rooms),
            (Counter::EchoesConfirmed, index(effects.echoes.len())),
            (Counter::PuppetsRemoved, effects.puppets_removed),
        ]);
        tracing::info!(
            txn_id = transaction.id,
            events = persistent,
            ephemeral = transaction.ephemeral.len(),
            published,
            skipped = skipped.len(),
            unknown_rooms = effects.unknown_rooms,
            read_ms,
            written_ms,
            published_ms,
            recorded_ms = started.elapsed().as_millis() as u64,
            "transaction processed"
        );
        Ok(Processed::Done { published, skipped })
    }
}

/// A count or position as the record keeps it.
fn index(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
