//! Users: the people with a login to the organisation (`/Users`), read-only through the API.
//! Every organisation is seeded with the same few, each with a role Xero documents.

use super::*;

/// (first name, last name, role, subscriber) of each seeded user.
pub(super) const USERS: [(&str, &str, &str, bool); 4] = [
    ("Aroha", "Ngata", "FINANCIALADVISER", true),
    ("Ben", "Okafor", "STANDARD", false),
    ("Chloe", "Marsh", "INVOICEONLY", false),
    ("Dev", "Patel", "READONLY", false),
];

impl Org {
    pub(super) fn seeded_user(&self, i: usize) -> Value {
        let (first, last, role, subscriber) = USERS[i];
        json!({
            "UserID": self.seeded_id(Kind::User, i),
            "EmailAddress": format!(
                "{}.{}@{}.example",
                first.to_ascii_lowercase(),
                last.to_ascii_lowercase(),
                self.short_code.trim_start_matches('!').to_ascii_lowercase()
            ),
            "FirstName": first,
            "LastName": last,
            "UpdatedDateUTC": ms_date(self.coll(Kind::User).updated(i)),
            "IsSubscriber": subscriber,
            "OrganisationRole": role,
        })
    }

    /// Invites a person to the organisation (Xero's settings; no API route adds users).
    pub(crate) fn add_user(&mut self, first: &str, last: &str, email: &str, now: u64) -> Value {
        let user = json!({
            "UserID": self.new_id(),
            "EmailAddress": email,
            "FirstName": first,
            "LastName": last,
            "UpdatedDateUTC": ms_date(now),
            "IsSubscriber": false,
            "OrganisationRole": "STANDARD",
        });
        self.store(Kind::User, user.clone(), true);
        user
    }

    /// The user `UserID` names, for the documents that belong to one (receipts, claims).
    pub(super) fn user(&self, el: Option<&Value>) -> Result<Value, String> {
        let id = el
            .and_then(Value::as_object)
            .and_then(|u| get_ci(u, "UserID"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| "A User with a UserID must be specified".to_owned())?;
        self.find(Kind::User, id)
            .ok_or_else(|| format!("User with UserID {id} could not be found"))
    }
}
