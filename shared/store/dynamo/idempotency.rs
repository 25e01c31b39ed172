//! Idempotency records on the table. There is no idempotency capability to
//! implement: a record is only ever written inside a message insert's
//! transaction and read inside the send context's batch (see
//! [`MessageStore`](crate::store::MessageStore)), so this module only holds
//! how a record is written: once per key.

use time::OffsetDateTime;

use super::table::{Write, item, n};
use crate::model::IdempotencyRecord;
use crate::store::StoreError;
use crate::store::keys;

/// Writes `record` unless its key was used before and is still remembered
/// (TTL deletes expired records days late: an expired one counts as absent).
pub fn remember_once(record: &IdempotencyRecord) -> Result<Write, StoreError> {
    Ok(Write::put(item(keys::idempotency(&record.scope), record)?)
        .when("attribute_not_exists(pk) OR #expires_at <= :now")
        .name("#expires_at", "expires_at")
        .value(":now", n(OffsetDateTime::now_utc().unix_timestamp())))
}
