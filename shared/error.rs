//! The bridge's domain error: what goes wrong in the code that is not HTTP
//! (outbound delivery, puppets, retries) and in its ports (store, Matrix,
//! queue). The edges translate it once each: `api::ApiError` for the JSON
//! API, `api::appservice::MatrixApiError` for the appservice routes.

use crate::inbound::InboundError;
use crate::matrix::MatrixError;
use crate::model::Removal;
use crate::queue::QueueError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// A Matrix moderator removed the sender's puppet from the room: the
    /// bridge does not put it back (see `handlers::outbound::join_room`).
    #[error("the sender was {0}")]
    Removed(Removal),
    /// The Matrix event for a message would be larger than Matrix allows.
    #[error("the Matrix event would be {size} bytes; at most {max} fit in an event")]
    EventTooLarge { size: usize, max: usize },
    /// A message this one relates to (its thread's root) has not reached
    /// Matrix yet: it is on its way, try again after it.
    #[error("waiting for {0}")]
    Waiting(String),
    /// A message this one relates to (its thread's root) never reached
    /// Matrix: this one cannot be sent either.
    #[error("{0}")]
    Unrelatable(String),
    /// A record the bridge wrote does not say what it must (a bug, or data
    /// changed by hand).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// A request that cannot succeed as it is (bad input), in the bridge's
    /// words: the API answers it with `400`.
    #[error("{0}")]
    Invalid(String),
    /// A request that the current state does not allow (an archived
    /// conversation, another kind under the same id): `409`.
    #[error("{0}")]
    Conflict(String),
    /// What a request names does not exist: `404`.
    #[error("{0}")]
    NotFound(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Store(err) => !matches!(err, StoreError::Corrupt(_)),
            Self::Matrix(err) => err.is_transient(),
            Self::Queue(_) | Self::Inbound(_) | Self::Waiting(_) => true,
            Self::EventTooLarge { .. }
            | Self::Inconsistent(_)
            | Self::Removed(_)
            | Self::Unrelatable(_) => false,
            Self::Invalid(_) | Self::Conflict(_) | Self::NotFound(_) => false,
        }
    }

    /// Whether a delivery that failed so may have reached Matrix all the
    /// same: anything but a homeserver's refusal or a request that never
    /// reached it.
    pub fn may_have_landed(&self) -> bool {
        match self {
            Self::Matrix(err) => err.may_have_landed(),
            _ => true,
        }
    }

    /// Why an operation failed, in the bridge's words, for the record the
    /// application reads: never a homeserver's or AWS's text.
    pub fn reason(&self) -> String {
        match self {
            Self::Matrix(err) => err.reason(),
            Self::Store(_) => "the bridge's table could not be used".into(),
            Self::Queue(_) => "the bridge's retry queue could not be used".into(),
            Self::Inbound(_) => "the bridge's inbound queue could not be used".into(),
            Self::Removed(removal) => {
                let how = if removal.banned { "banned" } else { "kicked" };
                format!("the sender was {how} from the room by a Matrix moderator")
            }
            Self::EventTooLarge { max, .. } => {
                format!("the message is too large for a Matrix event (at most {max} bytes)")
            }
            Self::Waiting(what) => format!("waiting for {what}"),
            Self::Unrelatable(why) => why.clone(),
            Self::Inconsistent(_) => "the bridge's records are inconsistent".into(),
            Self::Invalid(reason) | Self::Conflict(reason) | Self::NotFound(reason) => {
                reason.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_not() {
        let down = Error::from(MatrixError::from_status(503, b"", None));
        assert!(down.is_transient());
        assert_eq!(down.reason(), "the homeserver failed (503)");
        let refused = Error::from(MatrixError::from_status(
            400,
            br#"{"errcode":"M_BAD_JSON","error":"x"}"#,
            None,
        ));
        assert!(!refused.is_transient());
        let too_large = Error::EventTooLarge {
            size: 70_000,
            max: 61_440,
        };
        assert!(!too_large.is_transient());
        assert_eq!(
            too_large.reason(),
            "the message is too large for a Matrix event (at most 61440 bytes)"
        );
        assert!(Error::from(StoreError::Rejected).is_transient());
    }
}
