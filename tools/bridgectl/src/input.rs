//! The export `bridgectl` reads: three JSON Lines files, one record a line,
//! in the shapes the API takes (blank lines are skipped):
//!
//! - users: `{"user_id", "display_name"?, "avatar_url"?}` (`PUT /v1/users`);
//! - conversations: the body of `POST /v1/conversations`, members included
//!   (at most 200 each);
//! - memberships (optional): `{"conversation_id", "user_id" | "matrix_user_id",
//!   "role", "display_name"?}` (`PUT .../members/{user_id}`), for members
//!   beyond a conversation's line.
//!
//! A line that cannot be read, or repeats an id, is a failure with its
//! line number; the others are provisioned.

use std::collections::HashSet;
use std::path::Path;

use bridge::handlers::provision::plan::{CreateConversation, MemberRef, PutMember, PutUser};
use bridge::ids::{AppUserId, ConversationId};
use bridge::model::Role;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::report::{Failure, Kind};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLine {
    pub user_id: AppUserId,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
}

impl UserLine {
    pub fn profile(&self) -> PutUser {
        PutUser {
            display_name: self.display_name.clone(),
            avatar_url: self.avatar_url.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipLine {
    pub conversation_id: ConversationId,
    pub user_id: Option<AppUserId>,
    pub matrix_user_id: Option<String>,
    pub role: Role,
    pub display_name: Option<String>,
}

impl MembershipLine {
    /// Who the line is about, and the change it asks for.
    pub fn change(&self) -> Result<(MemberRef, PutMember), String> {
        let who = match (&self.user_id, &self.matrix_user_id) {
            (Some(user), None) => MemberRef::App(user.clone()),
            (None, Some(matrix_user)) => matrix_user
                .parse()
                .map_err(|err| format!("matrix_user_id: {err}"))?,
            _ => return Err("needs exactly one of user_id and matrix_user_id".into()),
        };
        let put = PutMember {
            role: self.role,
            display_name: self.display_name.clone(),
            // A member a Matrix moderator removed since is not put back by
            // a cutover: it is reported as a failure with the reason.
            rejoin: false,
        };
        Ok((who, put))
    }

    /// The member's id as a report names it.
    pub fn member_label(&self) -> String {
        match (&self.user_id, &self.matrix_user_id) {
            (Some(user), _) => user.to_string(),
            (None, Some(matrix_user)) => matrix_user.clone(),
            (None, None) => "?".into(),
        }
    }
}

/// A record and the line it was on (from 1).
#[derive(Clone, Debug)]
pub struct Line<T> {
    pub number: usize,
    pub value: T,
}

/// The whole export, as read, with the lines that could not be.
#[derive(Clone, Debug, Default)]
pub struct Export {
    pub users: Vec<Line<UserLine>>,
    pub conversations: Vec<Line<CreateConversation>>,
    pub memberships: Vec<Line<MembershipLine>>,
    pub unreadable: Vec<Failure>,
}

/// Where the export is.
#[derive(Clone, Debug)]
pub struct Files<'a> {
    pub users: &'a Path,
    pub conversations: &'a Path,
    pub memberships: Option<&'a Path>,
}

impl Export {
    pub fn read(files: &Files<'_>) -> std::io::Result<Self> {
        let mut export = Self::default();
        export.users = read_lines(files.users, Kind::User, &mut export.unreadable)?;
        export.conversations = read_lines(
            files.conversations,
            Kind::Conversation,
            &mut export.unreadable,
        )?;
        if let Some(path) = files.memberships {
            export.memberships = read_lines(path, Kind::Membership, &mut export.unreadable)?;
        }
        export.drop_repeats();
        Ok(export)
    }

    /// A user or conversation listed twice is provisioned from its first
    /// line; the others are failures.
    fn drop_repeats(&mut self) {
        let mut seen = HashSet::new();
        let unreadable = &mut self.unreadable;
        self.users.retain(|line| {
            let first = seen.insert(line.value.user_id.to_string());
            if !first {
                unreadable.push(repeat(Kind::User, line.value.user_id.as_str(), line.number));
            }
            first
        });
        let mut seen = HashSet::new();
        self.conversations.retain(|line| {
            let first = seen.insert(line.value.id.to_string());
            if !first {
                unreadable.push(repeat(
                    Kind::Conversation,
                    line.value.id.as_str(),
                    line.number,
                ));
            }
            first
        });
    }

    /// How many records there are to provision.
    pub fn len(&self) -> usize {
        self.users.len() + self.conversations.len() + self.memberships.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn repeat(kind: Kind, id: &str, line: usize) -> Failure {
    Failure {
        kind,
        id: Some(id.to_owned()),
        line: Some(line),
        reason: "listed again: only its first line is provisioned".into(),
    }
}

/// The records of a JSON Lines file; lines that do not parse become failures.
pub fn read_lines<T: DeserializeOwned>(
    path: &Path,
    kind: Kind,
    unreadable: &mut Vec<Failure>,
) -> std::io::Result<Vec<Line<T>>> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| std::io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    let mut records = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<T>(raw) {
            Ok(value) => records.push(Line { number, value }),
            Err(err) => unreadable.push(Failure {
                kind,
                id: None,
                line: Some(number),
                reason: format!("{}: {err}", path.display()),
            }),
        }
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_that_do_not_parse_or_repeat_are_failures_with_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.jsonl");
        std::fs::write(
            &users,
            "{\"user_id\": \"ann\"}\n\n{\"user_id\": \"bad id\"}\n{\"user_id\": \"ann\", \"display_name\": \"Again\"}\n{\"user_id\": \"bo\", \"nick\": \"x\"}\n",
        )
        .unwrap();
        let conversations = dir.path().join("conversations.jsonl");
        std::fs::write(&conversations, "{\"id\": \"c1\", \"kind\": \"group\"}\n").unwrap();
        let memberships = dir.path().join("members.jsonl");
        std::fs::write(
            &memberships,
            "{\"conversation_id\": \"c1\", \"user_id\": \"bo\", \"role\": \"member\"}\n",
        )
        .unwrap();
        let export = Export::read(&Files {
            users: &users,
            conversations: &conversations,
            memberships: Some(&memberships),
        })
        .unwrap();
        assert_eq!(export.users.len(), 1);
        assert_eq!(export.users[0].number, 1);
        assert_eq!(export.conversations.len(), 1);
        assert_eq!(export.memberships.len(), 1);
        let lines: Vec<Option<usize>> = export.unreadable.iter().map(|f| f.line).collect();
        assert_eq!(lines, [Some(3), Some(5), Some(4)]);
        assert!(export.unreadable[1].reason.contains("unknown field `nick`"));
        assert!(export.unreadable[2].reason.contains("listed again"));
        let (who, put) = export.memberships[0].value.change().unwrap();
        assert_eq!(who, MemberRef::App(AppUserId::parse("bo").unwrap()));
        assert_eq!(put.role, Role::Member);
    }
}
