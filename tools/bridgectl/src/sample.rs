//! `bridgectl sample`: a synthetic export for trials of the cutover (the
//! long run in the README, the test): users with display names, and
//! conversations of every kind (spaces with conversations in them, groups,
//! events, public ones, direct ones) with 2 to 10 members each, some with
//! per-conversation names, and extra memberships in their own file. The
//! same arguments give the same export.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

/// The size and the id prefix of a sample export.
#[derive(Clone, Debug)]
pub struct Sample {
    pub users: usize,
    pub conversations: usize,
    /// Ids start with it, so samples do not meet.
    pub prefix: String,
}

/// A small deterministic generator (xorshift), enough to vary a sample.
struct Dice(u64);

impl Dice {
    fn new(seed: &str) -> Self {
        let seed = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
        });
        Self(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

impl Sample {
    fn user(&self, index: usize) -> String {
        format!("{}-u{index}", self.prefix)
    }

    /// `count` different users.
    fn pick(&self, dice: &mut Dice, count: usize, not: &[usize]) -> Vec<usize> {
        let mut picked: Vec<usize> = Vec::with_capacity(count);
        while picked.len() < count.min(self.users.saturating_sub(not.len())) {
            let user = dice.below(self.users);
            if !picked.contains(&user) && !not.contains(&user) {
                picked.push(user);
            }
        }
        picked
    }

    /// The three files' lines: users, conversations, memberships.
    pub fn lines(&self) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
        let mut dice = Dice::new(&self.prefix);
        let users = (0..self.users)
            .map(|i| json!({"user_id": self.user(i), "display_name": format!("User {i} of {}", self.prefix)}))
            .collect();
        let mut conversations = Vec::new();
        let mut memberships = Vec::new();
        let mut space: Option<String> = None;
        for i in 0..self.conversations {
            let kind = match i {
                _ if i % 20 == 0 => "space",
                _ if i % 10 == 3 => "direct",
                _ if i % 2 == 0 => "event",
                _ => "group",
            };
            let id = format!("{}-c{i}", self.prefix);
            let count = if kind == "direct" {
                2
            } else {
                2 + dice.below(9)
            };
            let chosen = self.pick(&mut dice, count, &[]);
            let members: Vec<Value> = chosen
                .iter()
                .enumerate()
                .map(|(n, user)| {
                    let role = match (n, dice.below(5)) {
                        (0, _) => "owner",
                        (_, 0) => "moderator",
                        _ => "member",
                    };
                    let mut member = json!({"user_id": self.user(*user), "role": role});
                    if dice.below(6) == 0 {
                        member["display_name"] = json!(format!("User {user} in {i}"));
                    }
                    member
                })
                .collect();
            let mut line = json!({"id": id, "kind": kind, "name": format!("Conversation {i}"), "members": members});
            if kind == "event" && i % 7 == 4 {
                line["visibility"] = json!("public");
            }
            if dice.below(3) == 0 {
                line["topic"] = json!(format!("Topic of conversation {i}"));
            }
            if let Some(space) = space
                .as_ref()
                .filter(|_| kind != "space" && kind != "direct" && dice.below(3) == 0)
            {
                line["parent_id"] = json!(space);
            }
            if kind == "group" && i % 4 == 1 {
                for (n, user) in self.pick(&mut dice, 2, &chosen).into_iter().enumerate() {
                    let mut member = json!({"conversation_id": id, "user_id": self.user(user),
                        "role": if n == 0 { "moderator" } else { "member" }});
                    if n == 1 {
                        member["display_name"] = json!(format!("Late user {user}"));
                    }
                    memberships.push(member);
                }
            }
            if kind == "space" {
                space = Some(id);
            }
            conversations.push(line);
        }
        (users, conversations, memberships)
    }

    /// Writes `users.jsonl`, `conversations.jsonl` and `members.jsonl` in `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let (users, conversations, memberships) = self.lines();
        for (name, lines) in [
            ("users.jsonl", users),
            ("conversations.jsonl", conversations),
            ("members.jsonl", memberships),
        ] {
            let mut text = String::new();
            for line in lines {
                let _ = writeln!(text, "{line}");
            }
            std::fs::write(dir.join(name), text)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bridge::handlers::provision::plan::{CreateConversation, Plan};
    use bridge::ids::PuppetNamer;

    use super::*;

    #[test]
    fn a_sample_is_a_valid_export_of_every_kind() {
        let sample = Sample {
            users: 60,
            conversations: 40,
            prefix: "t1".into(),
        };
        let (users, conversations, memberships) = sample.lines();
        assert_eq!((users.len(), conversations.len()), (60, 40));
        assert!(!memberships.is_empty());
        let namer = PuppetNamer::new("app_", ruma::server_name!("localhost"));
        let mut kinds = std::collections::BTreeSet::new();
        for line in &conversations {
            let request: CreateConversation = serde_json::from_value(line.clone()).unwrap();
            kinds.insert(line["kind"].as_str().unwrap().to_owned());
            let parent = request
                .parent_id
                .clone()
                .map(|id| (id, ruma::owned_room_id!("!space:localhost")));
            Plan::from_request(
                &namer,
                ruma::user_id!("@bridgebot:localhost"),
                request,
                parent,
            )
            .unwrap();
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(conversations.iter().any(|c| c["visibility"] == "public"));
        assert!(conversations.iter().any(|c| c.get("parent_id").is_some()));
        assert_eq!(
            sample.lines().1,
            conversations,
            "the same arguments, the same sample"
        );
    }
}
