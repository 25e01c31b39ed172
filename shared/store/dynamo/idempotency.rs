//! Idempotency records on the table. There is no idempotency capability to
//! implement: a record is only ever written inside a message insert's
//! transaction and read inside the send context's batch (see
//! [`MessageStore`](crate::store::MessageStore)), so this module only holds
//! how a record is written: once per key.

use super::table::{Write, item};
use crate::model::IdempotencyRecord;
use crate::store::StoreError;
use crate::store::keys;

/// Writes `record` unless its key was used before.
pub fn remember_once(record: &IdempotencyRecord) -> Result<Write, StoreError> {
    Ok(Write::put(item(keys::idempotency(&record.scope), record)?).if_new())
}
