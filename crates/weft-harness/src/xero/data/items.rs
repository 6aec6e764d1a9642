//! Items: the seeded items and the item writes.

use super::*;

impl Org {
    pub(super) fn seeded_item(&self, i: usize) -> Value {
        let (code, name, sale, buy) = ITEMS[i];
        let purchased = buy != "0";
        let mut v = json!({
            "ItemID": self.seeded_id(Kind::Item, i),
            "Code": code,
            "Name": name,
            "Description": name,
            "UpdatedDateUTC": ms_date(self.coll(Kind::Item).updated(i)),
            "IsSold": true,
            "IsPurchased": purchased,
            "IsTrackedAsInventory": false,
            "SalesDetails": {"UnitPrice": money(sale.parse().unwrap_or_default()), "AccountCode": "200", "TaxType": "OUTPUT"},
            "PurchaseDetails": {},
        });
        if purchased {
            v["PurchaseDescription"] = json!(name);
            v["PurchaseDetails"] = json!({"UnitPrice": money(buy.parse().unwrap_or_default()), "AccountCode": "310", "TaxType": "INPUT"});
        }
        v
    }

    pub(super) fn write_item(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::Item, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(
            || json!({"IsSold": true, "IsPurchased": true, "IsTrackedAsInventory": false}),
        );
        let code = get_ci(el, "Code")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| str_of(&record, "Code").map(str::to_owned))
            .unwrap_or_default();
        if code.is_empty() {
            return Err(vec!["Item code must be specified".to_owned()]);
        }
        let own = existing
            .as_ref()
            .and_then(|v| str_of(v, "ItemID"))
            .map(str::to_ascii_lowercase);
        if let Some(other) = self.find(Kind::Item, &code)
            && str_of(&other, "ItemID").map(str::to_ascii_lowercase) != own
        {
            return Err(vec![format!(
                "Price List Item with Code '{code}' already exists"
            )]);
        }
        for (k, v) in el {
            if !["ItemID", "UpdatedDateUTC"]
                .iter()
                .any(|s| s.eq_ignore_ascii_case(k))
            {
                let key = canonical_key(&record, k);
                record[key] = v.clone();
            }
        }
        let id = match &existing {
            Some(v) => str_of(v, "ItemID").unwrap_or_default().to_owned(),
            None => self.new_id(),
        };
        record["ItemID"] = json!(id);
        record["Code"] = json!(code);
        record["UpdatedDateUTC"] = json!(ms_date(now));
        self.store(Kind::Item, record.clone(), created);
        Ok((record, vec![]))
    }
}
