//! Application identifiers and their Matrix puppets.
//!
//! Application user ids and conversation ids are validated newtypes: once a
//! value has one of these types it is known to be well formed. A puppet's
//! Matrix ID is `@<prefix><encoded user id>:<server>`, with the reversible
//! encoding from the Matrix spec appendix, "Mapping from other character sets"
//! (<https://spec.matrix.org/v1.16/appendices/#mapping-from-other-character-sets>):
//! `_` becomes `__`, an upper-case letter becomes `_` and its lower case, and any
//! other byte outside `[a-z0-9.-/]` (`=` included) becomes `=xx`.

use std::fmt;

use ruma::{OwnedRoomAliasId, OwnedUserId, RoomAliasId, ServerName, UserId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} must be 1 to {max} characters long")]
    Length { kind: &'static str, max: usize },
    #[error("{kind} may contain only {allowed}")]
    Characters {
        kind: &'static str,
        allowed: &'static str,
    },
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $allowed:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                if value.is_empty() || value.len() > $max {
                    return Err(IdError::Length { kind: $kind, max: $max });
                }
                let extra: &[u8] = $extra;
                if !value.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b)) {
                    return Err(IdError::Characters { kind: $kind, allowed: $allowed });
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// An application user id: 1–64 characters of `[A-Za-z0-9._=-]`.
    AppUserId, "a user id", 64, "letters, digits, '.', '_', '=' and '-'", b"._=-"
);

validated_id!(
    /// An application conversation id: 1–128 characters of `[A-Za-z0-9._:-]`.
    ConversationId, "a conversation id", 128, "letters, digits, '.', '_', ':' and '-'", b"._:-"
);

/// Maps application users to their Matrix puppets and back.
#[derive(Clone, Debug)]
pub struct PuppetNamer {
    prefix: String,
    server_name: ruma::OwnedServerName,
}

impl PuppetNamer {
    pub fn new(prefix: impl Into<String>, server_name: &ServerName) -> Self {
        Self {
            prefix: prefix.into(),
            server_name: server_name.to_owned(),
        }
    }

    /// The localpart used to register the puppet.
    pub fn localpart(&self, user: &AppUserId) -> String {
        format!("{}{}", self.prefix, encode_localpart(user.as_str()))
    }

    /// The puppet's full Matrix ID.
    pub fn user_id(&self, user: &AppUserId) -> OwnedUserId {
        // The encoding only emits characters valid in a localpart, the prefix is
        // validated by the config, and the server name is a valid `ServerName`.
        UserId::parse(format!("@{}:{}", self.localpart(user), self.server_name))
            .unwrap_or_else(|_| unreachable!("puppet ids are valid by construction"))
    }

    /// The room alias of a conversation's room: `#<prefix><encoded id>:<server>`,
    /// in the appservice's exclusive alias namespace, so nobody else can take
    /// it. Room creation claims it, which is what makes creation idempotent:
    /// a second `createRoom` for the same conversation is refused with
    /// `M_ROOM_IN_USE` and the alias leads to the first room. An id whose
    /// encoding would make the alias longer than Matrix allows (255 bytes)
    /// is named by its SHA-256 instead, after `=h`, which no encoding
    /// produces.
    pub fn room_alias(&self, id: &ConversationId) -> OwnedRoomAliasId {
        let encoded = encode_localpart(id.as_str());
        let fits =
            |localpart: &str| 1 + localpart.len() + 1 + self.server_name.as_str().len() <= 255;
        let mut localpart = format!("{}{encoded}", self.prefix);
        if !fits(&localpart) {
            let digest: String = Sha256::digest(id.as_str().as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            localpart = format!("{}=h{digest}", self.prefix);
        }
        RoomAliasId::parse(format!("#{localpart}:{}", self.server_name))
            .unwrap_or_else(|_| unreachable!("room aliases are valid by construction"))
    }

    /// The application user behind a Matrix ID, if it is one of our puppets.
    pub fn app_user(&self, user_id: &UserId) -> Option<AppUserId> {
        if user_id.server_name() != self.server_name {
            return None;
        }
        let encoded = user_id.localpart().strip_prefix(&self.prefix)?;
        AppUserId::parse(decode_localpart(encoded)?).ok()
    }
}

/// The longest a puppet localpart's encoding of an application user id can
/// be: every byte of a 64-byte id written as `=xx`.
pub const MAX_ENCODED_USER: usize = 64 * 3;

/// Matrix's limit on a user id, in bytes.
pub const MAX_MATRIX_USER_ID: usize = 255;

/// Encodes arbitrary text into the characters a Matrix localpart allows.
pub fn encode_localpart(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'_' => out.push_str("__"),
            b'A'..=b'Z' => {
                out.push('_');
                out.push(char::from(byte.to_ascii_lowercase()));
            }
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => out.push(char::from(byte)),
            other => out.push_str(&format!("={other:02x}")),
        }
    }
    out
}

/// Reverses [`encode_localpart`]; `None` if the text is not such an encoding.
pub fn decode_localpart(encoded: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut input = encoded.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'_' => match input.next()? {
                b'_' => bytes.push(b'_'),
                lower @ b'a'..=b'z' => bytes.push(lower.to_ascii_uppercase()),
                _ => return None,
            },
            b'=' => {
                let hex = [input.next()?, input.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                if hex.bytes().any(|b| b.is_ascii_uppercase()) {
                    return None;
                }
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
            }
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => bytes.push(byte),
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn namer() -> PuppetNamer {
        PuppetNamer::new("app_", ruma::server_name!("localhost"))
    }

    #[test]
    fn encodes_as_the_spec_appendix_does() {
        assert_eq!(encode_localpart("alice"), "alice");
        assert_eq!(encode_localpart("Alice_B"), "_alice___b");
        assert_eq!(encode_localpart("a=b"), "a=3db");
        assert_eq!(encode_localpart("#é"), "=23=c3=a9");
    }

    #[test]
    fn puppet_ids_use_prefix_and_server() {
        let user = AppUserId::parse("Bob.Smith").unwrap();
        let id = namer().user_id(&user);
        assert_eq!(id.as_str(), "@app__bob._smith:localhost");
        assert_eq!(namer().app_user(&id), Some(user));
    }

    #[test]
    fn conversations_have_one_alias_in_the_namespace() {
        let namer = namer();
        let alias = namer.room_alias(&ConversationId::parse("Event:42").unwrap());
        assert_eq!(alias.as_str(), "#app__event=3a42:localhost");
        assert_ne!(
            alias,
            namer.room_alias(&ConversationId::parse("event:42").unwrap())
        );
        let long = ConversationId::parse(":".repeat(128)).unwrap();
        let hashed = namer.room_alias(&long);
        assert!(hashed.as_str().starts_with("#app_=h"), "{hashed}");
        assert!(hashed.as_str().len() <= 255);
        assert_eq!(hashed, namer.room_alias(&long), "deterministic");
    }

    #[test]
    fn foreign_users_are_not_puppets() {
        let namer = namer();
        for id in [
            "@alice:localhost",
            "@app_alice:other.org",
            "@app__:localhost",
            "@app_a=zz:localhost",
        ] {
            let id = UserId::parse(id).unwrap();
            assert_eq!(namer.app_user(&id), None, "{id}");
        }
    }

    #[test]
    fn ids_are_validated() {
        assert!(AppUserId::parse("u-1.x=y_z").is_ok());
        assert_eq!(
            AppUserId::parse("").unwrap_err(),
            IdError::Length {
                kind: "a user id",
                max: 64
            }
        );
        assert!(AppUserId::parse("a".repeat(65)).is_err());
        assert!(AppUserId::parse("a b").is_err());
        assert!(AppUserId::parse("a:b").is_err());
        assert!(ConversationId::parse("event:42").is_ok());
        assert!(ConversationId::parse("x".repeat(129)).is_err());
        assert!(ConversationId::parse("a/b").is_err());
        let parsed: Result<AppUserId, _> = serde_json::from_str("\"bad id\"");
        assert!(parsed.is_err());
    }

    proptest! {
        #[test]
        fn puppet_mapping_round_trips(raw in "[A-Za-z0-9._=-]{1,64}") {
            let user = AppUserId::parse(raw).unwrap();
            let id = namer().user_id(&user);
            prop_assert_eq!(namer().app_user(&id), Some(user));
        }

        #[test]
        fn puppet_ids_are_fully_valid_matrix_ids(raw in "[A-Za-z0-9._=-]{1,64}") {
            let user = AppUserId::parse(raw).unwrap();
            let id = namer().user_id(&user);
            let reparsed = UserId::parse(id.as_str()).unwrap();
            prop_assert!(!reparsed.is_historical());
            prop_assert!(id.as_str().len() <= 255);
            prop_assert!(id.localpart().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._=-/".contains(&b)));
        }

        #[test]
        fn encoding_round_trips_any_text(raw in "\\PC{0,40}") {
            prop_assert_eq!(decode_localpart(&encode_localpart(&raw)), Some(raw));
        }
    }
}
