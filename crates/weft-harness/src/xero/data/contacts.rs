//! Contacts: the seeded contacts and the contact writes (names unique among active contacts).

use super::*;

impl Org {
    pub(super) fn seeded_contact(&self, i: usize) -> Value {
        let name = contact_name(i);
        let (first, last) = PEOPLE[i % PEOPLE.len()];
        let domain: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_lowercase();
        let status = if contact_archived(i) {
            "ARCHIVED"
        } else {
            "ACTIVE"
        };
        let mut v = blank_contact();
        let fields = json!({
            "ContactID": self.seeded_id(Kind::Contact, i),
            "ContactStatus": status,
            "Name": name,
            "FirstName": first,
            "LastName": last,
            "EmailAddress": format!("{}@{}.example", first.to_lowercase(), domain),
            "BankAccountDetails": "",
            "UpdatedDateUTC": ms_date(self.coll(Kind::Contact).updated(i)),
            "IsSupplier": i % 3 == 2,
            "IsCustomer": i % 3 != 2,
            "DefaultCurrency": self.region().currency,
        });
        merge(&mut v, &fields);
        if let Some(addr) = v.get_mut("Addresses").and_then(|a| a.get_mut(1)) {
            merge(
                addr,
                &json!({"AddressLine1": format!("{} {} Street", 1 + i % 200, SECOND[i % SECOND.len()]), "City": "Wellington", "PostalCode": format!("{:04}", 6000 + i % 100), "Country": self.region().country}),
            );
        }
        if let Some(phone) = v.get_mut("Phones").and_then(|a| a.get_mut(0)) {
            merge(
                phone,
                &json!({"PhoneNumber": format!("{:07}", 4_000_000 + i), "PhoneAreaCode": "04", "PhoneCountryCode": "64"}),
            );
        }
        v
    }

    pub(super) fn write_contact(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::Contact, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| {
            let mut v = blank_contact();
            v["ContactStatus"] = json!("ACTIVE");
            v
        });
        let name = get_ci(el, "Name")
            .and_then(Value::as_str)
            .map(str::trim)
            .map(str::to_owned)
            .or_else(|| str_of(&record, "Name").map(str::to_owned))
            .unwrap_or_default();
        let mut errors = Vec::new();
        if name.is_empty() {
            errors.push("The contact name must be specified.".to_owned());
        }
        if name.chars().count() > 255 {
            errors.push("The contact name must not be longer than 255 characters.".to_owned());
        }
        let status = get_ci(el, "ContactStatus")
            .and_then(Value::as_str)
            .map(str::to_ascii_uppercase)
            .or_else(|| str_of(&record, "ContactStatus").map(str::to_owned))
            .unwrap_or_else(|| "ACTIVE".to_owned());
        if !["ACTIVE", "ARCHIVED", "GDPRREQUEST"].contains(&status.as_str()) {
            errors.push(format!("'{status}' is not a valid contact status."));
        }
        let own_id = existing
            .as_ref()
            .and_then(|v| str_of(v, "ContactID"))
            .map(str::to_ascii_lowercase);
        if status == "ACTIVE"
            && !name.is_empty()
            && let Some(other) = self.contacts_by_name.get(&name.to_lowercase())
            && Some(other.to_ascii_lowercase()) != own_id
        {
            errors.push(format!(
                        "The contact name {name} is already assigned to another contact. The contact name must be unique across all active contacts."
                    ));
        }
        if let Some(number) = get_ci(el, "ContactNumber")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            && let Some(other) = self.find(Kind::Contact, number)
            && str_of(&other, "ContactID").map(str::to_ascii_lowercase) != own_id
        {
            errors.push(format!(
                "The contact number {number} is already assigned to another contact."
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (k, v) in el {
            const READ_ONLY: [&str; 8] = [
                "ContactID",
                "UpdatedDateUTC",
                "IsSupplier",
                "IsCustomer",
                "HasValidationErrors",
                "ValidationErrors",
                "StatusAttributeString",
                "Balances",
            ];
            if READ_ONLY.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                continue;
            }
            let key = canonical_key(&record, k);
            record[key] = v.clone();
        }
        record["Name"] = json!(name);
        record["ContactStatus"] = json!(status);
        let id = match &existing {
            Some(v) => str_of(v, "ContactID").unwrap_or_default().to_owned(),
            None => self.new_id(),
        };
        record["ContactID"] = json!(id);
        record["UpdatedDateUTC"] = json!(ms_date(now));
        if let Some(old) = existing.as_ref().and_then(|v| str_of(v, "Name")) {
            let old = old.to_lowercase();
            if self
                .contacts_by_name
                .get(&old)
                .is_some_and(|x| x.eq_ignore_ascii_case(&id))
            {
                self.contacts_by_name.remove(&old);
            }
        }
        if status == "ACTIVE" {
            self.contacts_by_name.insert(name.to_lowercase(), id);
        }
        self.store(Kind::Contact, record.clone(), created);
        Ok((record, vec![]))
    }

    /// Resolves an invoice's Contact: by ContactID, then ContactNumber, then Name (creating a new
    /// contact for an unknown name, as Xero does).
    pub(super) fn resolve_contact(&mut self, c: &Value, now: u64) -> Result<Value, String> {
        let Some(obj) = c.as_object() else {
            return Err("A Contact must be specified for this type of transaction".to_owned());
        };
        if let Some(id) = get_ci(obj, "ContactID")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return self
                .find(Kind::Contact, id)
                .ok_or_else(|| format!("Contact {id} could not be found"));
        }
        if let Some(n) = get_ci(obj, "ContactNumber")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            && let Some(v) = self.find(Kind::Contact, n)
        {
            return Ok(v);
        }
        let name = get_ci(obj, "Name")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if name.is_empty() {
            return Err("A Contact must be specified for this type of transaction".to_owned());
        }
        if let Some(id) = self.contacts_by_name.get(&name.to_lowercase()).cloned()
            && let Some(v) = self.find(Kind::Contact, &id)
        {
            return Ok(v);
        }
        let mut new = Map::new();
        new.insert("Name".to_owned(), json!(name));
        if let Some(n) = get_ci(obj, "ContactNumber") {
            new.insert("ContactNumber".to_owned(), n.clone());
        }
        self.write_contact(Verb::Put, &new, None, now)
            .map(|(v, _)| v)
            .map_err(|e| e.join(" "))
    }
}
