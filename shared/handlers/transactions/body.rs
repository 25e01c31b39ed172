//! A transaction as the homeserver pushed it, read with ruma's server-side
//! type (`push_events::v1::Request`): its persistent events and its
//! ephemeral ones (the stable `ephemeral` key, else MSC2409's unstable
//! `de.sorunome.msc2409.ephemeral`), each kept raw and read on its own, so
//! one malformed event cannot sink the others, and its fingerprints.
//!
//! <https://spec.matrix.org/v1.16/application-service-api/#put_matrixappv1transactionstxnid>

use ruma::api::IncomingRequestExt;
use ruma::api::appservice::event::push_events::v1::{self as push_events, EphemeralData};
use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::api::appservice::{AppserviceRequest, MatrixApiError};

/// The longest transaction id kept (Synapse's are counters).
const MAX_TXN_ID: usize = 255;

/// A transaction's content.
pub struct Transaction {
    pub id: String,
    pub events: Vec<Raw<AnyTimelineEvent>>,
    pub ephemeral: Vec<Raw<EphemeralData>>,
    /// Of the persistent events' ids, in order: what a retry repeats.
    pub fingerprint: String,
    /// Of the ephemeral events (which a retry leaves out).
    pub ephemeral_fingerprint: String,
}

/// MSC2409's key, which ruma does not read.
#[derive(Deserialize)]
struct Unstable {
    #[serde(rename = "de.sorunome.msc2409.ephemeral", default)]
    ephemeral: Vec<Raw<EphemeralData>>,
}

impl Transaction {
    /// Reads the transaction of `request` (`PUT .../transactions/{txnId}`).
    pub fn read(request: &AppserviceRequest) -> Result<Self, MatrixApiError> {
        Self::parse(request.path_param("txnId")?, &request.body)
    }

    /// Reads transaction `id` from its body, as the homeserver sent it.
    pub fn parse(id: &str, body: &[u8]) -> Result<Self, MatrixApiError> {
        if id.is_empty() || id.len() > MAX_TXN_ID {
            return Err(MatrixApiError::BadJson {
                errcode: "M_INVALID_PARAM",
                message: format!("the transaction id must be 1 to {MAX_TXN_ID} bytes long"),
            });
        }
        let request = http::Request::builder()
            .method(http::Method::PUT)
            .uri("/")
            .body(body)
            .map_err(MatrixApiError::internal)?;
        let pushed = push_events::Request::try_from_http_request(request, &[id])
            .map_err(MatrixApiError::unreadable)?;
        let ephemeral = if pushed.ephemeral.is_empty() {
            serde_json::from_slice::<Unstable>(body)
                .map(|unstable| unstable.ephemeral)
                .unwrap_or_default()
        } else {
            pushed.ephemeral
        };
        Ok(Self::new(id.to_owned(), pushed.events, ephemeral))
    }

    pub fn new(
        id: String,
        events: Vec<Raw<AnyTimelineEvent>>,
        ephemeral: Vec<Raw<EphemeralData>>,
    ) -> Self {
        let events_fingerprint = fingerprint(events.iter().map(|event| {
            event
                .get_field::<String>("event_id")
                .ok()
                .flatten()
                .unwrap_or_else(|| event.json().get().to_owned())
        }));
        let ephemeral_fingerprint =
            fingerprint(ephemeral.iter().map(|data| data.json().get().to_owned()));
        Self {
            id,
            events,
            ephemeral,
            fingerprint: events_fingerprint,
            ephemeral_fingerprint,
        }
    }

    /// The ephemeral fingerprint, when there are ephemeral events: a retry
    /// without them repeats the transaction all the same.
    pub fn ephemeral_fingerprint(&self) -> Option<&str> {
        (!self.ephemeral.is_empty()).then_some(self.ephemeral_fingerprint.as_str())
    }
}

/// SHA-256 of the parts, each length-prefixed, in hex.
fn fingerprint(parts: impl Iterator<Item = String>) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw<T>(value: serde_json::Value) -> Raw<T> {
        Raw::from_json(serde_json::value::to_raw_value(&value).unwrap())
    }

    fn event(id: &str, age: u64) -> Raw<AnyTimelineEvent> {
        raw(json!({
            "type": "m.room.message", "event_id": id, "room_id": "!r:localhost",
            "sender": "@a:localhost", "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "hi"}, "unsigned": {"age": age},
        }))
    }

    #[test]
    fn a_retry_is_the_same_events_however_they_are_serialised() {
        let typing = raw(
            json!({"type": "m.typing", "room_id": "!r:localhost", "content": {"user_ids": []}}),
        );
        let first = Transaction::new("1".into(), vec![event("$a", 10)], vec![typing]);
        let retry = Transaction::new("1".into(), vec![event("$a", 9000)], vec![]);
        assert_eq!(first.fingerprint, retry.fingerprint);
        assert!(first.ephemeral_fingerprint().is_some());
        assert_eq!(retry.ephemeral_fingerprint(), None);
        let other = Transaction::new("1".into(), vec![event("$b", 10)], vec![]);
        assert_ne!(first.fingerprint, other.fingerprint);
        let both = Transaction::new("1".into(), vec![event("$a", 1), event("$b", 1)], vec![]);
        assert_ne!(both.fingerprint, first.fingerprint);
    }
}
