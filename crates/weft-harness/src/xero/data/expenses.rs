//! Classic expense claims: receipts (`/Receipts`) and the claims that gather them
//! (`/ExpenseClaims`). Xero retired them: only organisations that used them before July 2018
//! still can (the `classic_expenses` flag of [`Org`], off by default; the refusal the others get
//! is in `api.rs`), and it announced their end for February 2027.
//!
//! A receipt belongs to a user, needs a Date, a Contact and line items, and has no currency
//! (always the base currency). A claim gathers one user's receipts; its totals are theirs.

use super::*;

/// Receipt statuses a client may set.
const RECEIPT_STATUSES: [&str; 5] = ["DRAFT", "SUBMITTED", "AUTHORISED", "DECLINED", "VOIDED"];

/// Claim statuses a client may set (PAID comes from paying the claim in Xero).
const CLAIM_STATUSES: [&str; 4] = ["SUBMITTED", "AUTHORISED", "VOIDED", "DELETED"];

fn date_field(el: &Map<String, Value>, key: &str, errors: &mut Vec<String>) -> Option<u64> {
    let d = get_ci(el, key).and_then(Value::as_str)?;
    match parse_client_date(d) {
        Some(ms) => Some(ms.max(0) as u64),
        None => {
            errors.push(format!("'{d}' is not a valid date"));
            None
        }
    }
}

impl Org {
    pub(super) fn write_receipt(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
        unitdp4: bool,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::Receipt, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| json!({}));
        let mut errors = Vec::new();
        let field = |k: &str| get_ci(el, k).and_then(Value::as_str).map(str::to_owned);

        // Receipts have no CurrencyCode: they are in the base currency. Xero's answer to one
        // sent anyway is unverified; the simulator refuses it rather than book an amount in
        // another currency as base currency.
        if let Some(code) = field("CurrencyCode").filter(|c| !c.trim().is_empty())
            && !code.trim().eq_ignore_ascii_case(self.region().currency)
        {
            errors.push(format!(
                "Receipts are in the organisation's base currency ({}); {code} cannot be used",
                self.region().currency
            ));
        }
        let old_status = str_of(&record, "Status").unwrap_or_default().to_owned();
        let status = field("Status")
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_else(|| {
                if created {
                    "DRAFT".to_owned()
                } else {
                    old_status.clone()
                }
            });
        if !RECEIPT_STATUSES.contains(&status.as_str()) {
            errors.push(format!("'{status}' is not a valid receipt Status"));
        } else if !created && status != old_status {
            let allowed: &[&str] = match old_status.as_str() {
                "DRAFT" => &["SUBMITTED", "AUTHORISED", "VOIDED"],
                "SUBMITTED" => &["DRAFT", "AUTHORISED", "DECLINED", "VOIDED"],
                "AUTHORISED" => &["VOIDED"],
                "DECLINED" => &["DRAFT", "VOIDED"],
                _ => &[],
            };
            if !allowed.contains(&status.as_str()) {
                errors.push(format!(
                    "A receipt cannot move from {old_status} to {status}."
                ));
            }
        }
        let user = match (get_ci(el, "User"), created) {
            (Some(u), _) => match self.user(Some(u)) {
                Ok(u) => Some(u),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            (None, true) => {
                errors.push("A User with a UserID must be specified".to_owned());
                None
            }
            (None, false) => None,
        };
        let contact = match get_ci(el, "Contact") {
            Some(c) => match self.resolve_contact(c, now) {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None if created => {
                errors.push("A Contact must be specified for this type of transaction".to_owned());
                None
            }
            None => None,
        };
        let date = date_field(el, "Date", &mut errors);
        if created && date.is_none() && get_ci(el, "Date").is_none() {
            errors.push("A Date must be specified".to_owned());
        }
        let lat = field("LineAmountTypes")
            .or_else(|| str_of(&record, "LineAmountTypes").map(str::to_owned))
            .unwrap_or_else(|| "Inclusive".to_owned());
        let lat = match lat.to_ascii_lowercase().as_str() {
            "exclusive" => "Exclusive",
            "inclusive" => "Inclusive",
            "notax" => "NoTax",
            _ => {
                errors.push(format!("'{lat}' is not a valid LineAmountTypes value"));
                "Inclusive"
            }
        };
        let lines = get_ci(el, "LineItems")
            .cloned()
            .or_else(|| record.get("LineItems").cloned())
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default();
        if lines.is_empty() {
            errors.push("At least one line item must be specified".to_owned());
        }
        let priced = match self.price_lines(&lines, lat, false, unitdp4) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let Some(mut priced) = priced else {
            return Err(vec!["The line items could not be priced".to_owned()]);
        };
        for l in &mut priced.lines {
            if str_of(l, "LineItemID").is_none_or(str::is_empty) {
                l["LineItemID"] = json!(self.new_id());
            }
        }
        for (k, v) in el {
            const COPIED: [&str; 2] = ["Reference", "Url"];
            if COPIED.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                let key = canonical_key(&record, k);
                record[key] = v.clone();
            }
        }
        let id = match &existing {
            Some(v) => str_of(v, "ReceiptID").unwrap_or_default().to_owned(),
            None => self.new_id(),
        };
        if let Some(u) = user {
            let user_id = str_of(&u, "UserID").unwrap_or_default().to_owned();
            // A receipt's number counts the user's receipts.
            if created {
                let n = self
                    .all(Kind::Receipt)
                    .iter()
                    .filter(|r| r["User"]["UserID"].as_str() == Some(user_id.as_str()))
                    .count();
                record["ReceiptNumber"] = json!((n + 1).to_string());
            }
            record["User"] = json!({
                "UserID": user_id,
                "EmailAddress": u["EmailAddress"],
                "FirstName": u["FirstName"],
                "LastName": u["LastName"],
            });
        }
        if let Some(c) = contact {
            record["Contact"] = json!({"ContactID": c["ContactID"], "Name": c["Name"]});
        }
        let date = date
            .or_else(|| {
                str_of(&record, "Date")
                    .and_then(parse_ms_date)
                    .map(|d| d.max(0) as u64)
            })
            .unwrap_or_else(|| day_start(now));
        let fields = json!({
            "ReceiptID": id,
            "Status": status,
            "Date": ms_date(date),
            "LineAmountTypes": lat,
            "LineItems": priced.lines,
            "SubTotal": money(priced.sub),
            "TotalTax": money(priced.tax),
            "Total": money(priced.total),
            "UpdatedDateUTC": ms_date(now),
            "HasAttachments": false,
        });
        merge(&mut record, &fields);
        self.store(Kind::Receipt, record.clone(), created);
        Ok((record, priced.warnings))
    }

    pub(super) fn write_expense_claim(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::ExpenseClaim, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| json!({}));
        let mut errors = Vec::new();

        let old_status = str_of(&record, "Status").unwrap_or_default().to_owned();
        let status = get_ci(el, "Status")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_ascii_uppercase())
            .unwrap_or_else(|| {
                if created {
                    "SUBMITTED".to_owned()
                } else {
                    old_status.clone()
                }
            });
        if !CLAIM_STATUSES.contains(&status.as_str()) && status != old_status {
            errors.push(format!("'{status}' is not a valid expense claim Status"));
        } else if created && !["SUBMITTED", "AUTHORISED"].contains(&status.as_str()) {
            errors.push(format!(
                "An expense claim cannot be created with status {status}."
            ));
        } else if !created && status != old_status {
            let allowed: &[&str] = match old_status.as_str() {
                "SUBMITTED" => &["AUTHORISED", "VOIDED", "DELETED"],
                "AUTHORISED" => &["VOIDED"],
                _ => &[],
            };
            if !allowed.contains(&status.as_str()) {
                errors.push(format!(
                    "An expense claim cannot move from {old_status} to {status}."
                ));
            }
        }
        let user = match (get_ci(el, "User"), created) {
            (Some(u), _) => self.user(Some(u)).map_err(|e| errors.push(e)).ok(),
            (None, true) => {
                errors.push("A User with a UserID must be specified".to_owned());
                None
            }
            (None, false) => self.find(
                Kind::User,
                record["User"]["UserID"].as_str().unwrap_or_default(),
            ),
        };
        let user_id = user
            .as_ref()
            .and_then(|u| str_of(u, "UserID"))
            .unwrap_or_default()
            .to_owned();
        let own_id = existing
            .as_ref()
            .and_then(|v| str_of(v, "ExpenseClaimID"))
            .map(str::to_owned);
        let sent = get_ci(el, "Receipts").and_then(Value::as_array).cloned();
        let ids: Vec<String> = sent
            .clone()
            .or_else(|| record["Receipts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                r.as_object()
                    .and_then(|o| get_ci(o, "ReceiptID"))
                    .and_then(Value::as_str)
            })
            .map(str::to_owned)
            .collect();
        if ids.is_empty() {
            errors.push("An expense claim must have at least one receipt".to_owned());
        }
        let mut receipts = Vec::new();
        for id in &ids {
            let Some(r) = self.find(Kind::Receipt, id) else {
                errors.push(format!("Receipt {id} could not be found"));
                continue;
            };
            if sent.is_some() && r["User"]["UserID"].as_str() != Some(user_id.as_str()) {
                errors.push(format!("Receipt {id} belongs to another user"));
            }
            let claimed = self.all(Kind::ExpenseClaim).into_iter().any(|c| {
                str_of(&c, "ExpenseClaimID") != own_id.as_deref()
                    && !matches!(str_of(&c, "Status"), Some("VOIDED" | "DELETED"))
                    && c["Receipts"].as_array().is_some_and(|rs| {
                        rs.iter().any(|x| {
                            x["ReceiptID"]
                                .as_str()
                                .is_some_and(|x| x.eq_ignore_ascii_case(id))
                        })
                    })
            });
            if claimed && sent.is_some() {
                errors.push(format!("Receipt {id} is already on another expense claim"));
            }
            if matches!(str_of(&r, "Status"), Some("VOIDED" | "DECLINED")) && sent.is_some() {
                errors.push(format!(
                    "Receipt {id} is {} and cannot be claimed",
                    str_of(&r, "Status").unwrap_or_default()
                ));
            }
            receipts.push(r);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let total = receipts
            .iter()
            .filter_map(|r| r.get("Total").and_then(decimal))
            .fold(Decimal::ZERO, |a, b| a + b);
        let paid = record
            .get("AmountPaid")
            .and_then(decimal)
            .unwrap_or_default();
        // The receipts follow their claim.
        let receipt_status = match status.as_str() {
            "SUBMITTED" | "AUTHORISED" | "VOIDED" => Some(status.as_str()),
            "DELETED" => Some("DRAFT"),
            _ => None,
        };
        let mut listed = Vec::new();
        for mut r in receipts {
            if let Some(s) = receipt_status
                && str_of(&r, "Status") != Some(s)
            {
                r["Status"] = json!(s);
                r["UpdatedDateUTC"] = json!(ms_date(now));
                self.store(Kind::Receipt, r.clone(), false);
            }
            listed.push(json!({
                "ReceiptID": r["ReceiptID"],
                "ReceiptNumber": r["ReceiptNumber"],
                "Status": r["Status"],
                "Total": r["Total"],
                "Date": r["Date"],
            }));
        }
        let id = own_id.unwrap_or_else(|| self.new_id());
        let due = if matches!(status.as_str(), "VOIDED" | "DELETED") {
            Decimal::ZERO
        } else {
            total - paid
        };
        let fields = json!({
            "ExpenseClaimID": id,
            "Status": status,
            "User": {
                "UserID": user_id,
                "EmailAddress": user.as_ref().map_or(Value::Null, |u| u["EmailAddress"].clone()),
                "FirstName": user.as_ref().map_or(Value::Null, |u| u["FirstName"].clone()),
                "LastName": user.as_ref().map_or(Value::Null, |u| u["LastName"].clone()),
            },
            "Receipts": listed,
            "Total": money(total),
            "AmountDue": money(due),
            "AmountPaid": money(paid),
            "ReportingDate": ms_date(day_start(now)),
            "UpdatedDateUTC": ms_date(now),
        });
        merge(&mut record, &fields);
        if record.get("Payments").is_none() {
            record["Payments"] = json!([]);
        }
        self.store(Kind::ExpenseClaim, record.clone(), created);
        Ok((record, vec![]))
    }

    /// Marks an authorised claim PAID as paying it in Xero does (the inspection helper).
    pub(crate) fn pay_expense_claim(&mut self, id: &str, now: u64) -> Result<Value, String> {
        let mut claim = self
            .find(Kind::ExpenseClaim, id)
            .ok_or_else(|| format!("no expense claim {id}"))?;
        if str_of(&claim, "Status") != Some("AUTHORISED") {
            return Err("only an AUTHORISED expense claim can be paid".to_owned());
        }
        let total = claim.get("Total").and_then(decimal).unwrap_or_default();
        claim["Status"] = json!("PAID");
        claim["AmountPaid"] = money(total);
        claim["AmountDue"] = money(Decimal::ZERO);
        claim["UpdatedDateUTC"] = json!(ms_date(now));
        self.store(Kind::ExpenseClaim, claim.clone(), false);
        Ok(claim)
    }
}
