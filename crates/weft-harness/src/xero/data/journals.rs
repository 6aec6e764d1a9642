//! Manual journals (`/ManualJournals`): a Narration is required, a new journal is a DRAFT, a
//! positive LineAmount is a debit and a negative one a credit, and the debits must equal the
//! credits. Xero documents no number or reference on a journal, so a client finds one again by
//! its Narration (`where=Narration=="…"` or `Narration.Contains("…")`).
//!
//! Unverified and chosen here: the status transitions (DRAFT → POSTED or DELETED, POSTED only
//! to VOIDED), and that tax is computed per line but the balance is of the line amounts.

use super::*;

/// Most tracking entries on one line.
const TRACKING_MAX: usize = 2;

impl Org {
    pub(super) fn write_manual_journal(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::ManualJournal, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| json!({}));
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let field = |k: &str| get_ci(el, k).and_then(Value::as_str).map(str::to_owned);

        let narration = field("Narration")
            .or_else(|| str_of(&record, "Narration").map(str::to_owned))
            .unwrap_or_default();
        if narration.trim().is_empty() {
            errors.push("Narration must be specified".to_owned());
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
        let allowed: &[&str] = if created {
            &["DRAFT", "POSTED"]
        } else {
            match old_status.as_str() {
                "DRAFT" => &["DRAFT", "POSTED", "DELETED"],
                "POSTED" => &["VOIDED"],
                _ => &[],
            }
        };
        if !allowed.contains(&status.as_str()) {
            errors.push(if old_status == "POSTED" {
                "A posted manual journal can only be voided.".to_owned()
            } else if created {
                format!("A manual journal cannot be created with status {status}.")
            } else {
                format!("A manual journal cannot move from {old_status} to {status}.")
            });
        }
        let lat = field("LineAmountTypes")
            .or_else(|| str_of(&record, "LineAmountTypes").map(str::to_owned))
            .unwrap_or_else(|| "NoTax".to_owned());
        let lat = match lat.to_ascii_lowercase().as_str() {
            "exclusive" => "Exclusive",
            "inclusive" => "Inclusive",
            "notax" => "NoTax",
            _ => {
                errors.push(format!("'{lat}' is not a valid LineAmountTypes value"));
                "NoTax"
            }
        };
        let date = match field("Date") {
            Some(d) => match parse_client_date(&d) {
                Some(ms) => Some(ms.max(0) as u64),
                None => {
                    errors.push(format!("'{d}' is not a valid date"));
                    None
                }
            },
            None => None,
        };
        let sent_lines = get_ci(el, "JournalLines").cloned();
        let lines = sent_lines
            .clone()
            .or_else(|| record.get("JournalLines").cloned())
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default();
        if lines.is_empty() && !matches!(status.as_str(), "DELETED" | "VOIDED") {
            errors.push("At least one journal line must be specified".to_owned());
        }
        let mut out = Vec::new();
        let (mut debits, mut credits) = (Decimal::ZERO, Decimal::ZERO);
        for (n, line) in lines.iter().enumerate() {
            let Some(obj) = line.as_object() else {
                errors.push("A journal line must be an object.".to_owned());
                continue;
            };
            let mut l = obj.clone();
            let Some(amount) = get_ci(obj, "LineAmount").and_then(decimal) else {
                errors.push(format!("Journal line {} must have a LineAmount.", n + 1));
                continue;
            };
            let amount = round2(amount);
            if amount.abs() > Decimal::new(999_999_999_999, 2) {
                errors.push("The line amount must not exceed 9,999,999,999.99".to_owned());
                continue;
            }
            if amount.is_sign_positive() {
                debits += amount;
            } else {
                credits += amount;
            }
            let tracking = get_ci(obj, "Tracking")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if tracking > TRACKING_MAX {
                errors.push(format!(
                    "A journal line can have at most {TRACKING_MAX} tracking categories."
                ));
            }
            let mut account = get_ci(obj, "AccountCode")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            if let Some(code) = account.clone()
                && self.account_by_code(&code).is_none()
            {
                warnings.push(format!(
                    "Account code '{code}' has been removed as it does not match a recognised account."
                ));
                l.remove("AccountCode");
                account = None;
            }
            let known = account.as_deref().and_then(|a| self.account_by_code(a));
            let tax_type = if lat == "NoTax" {
                "NONE".to_owned()
            } else {
                get_ci(obj, "TaxType")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| known.as_ref().map(|(_, t)| (*t).to_owned()))
                    .unwrap_or_else(|| "NONE".to_owned())
            };
            let Some(rate) = self.rate_of(&tax_type) else {
                errors.push(format!(
                    "The TaxType code '{tax_type}' does not exist or cannot be used for this type of transaction."
                ));
                continue;
            };
            let tax = match lat {
                "Inclusive" => amount
                    .checked_mul(rate)
                    .and_then(|t| t.checked_div(Decimal::ONE_HUNDRED + rate)),
                "Exclusive" => amount
                    .checked_mul(rate)
                    .and_then(|t| t.checked_div(Decimal::ONE_HUNDRED)),
                _ => Some(Decimal::ZERO),
            }
            .map(round2)
            .unwrap_or_default();
            l.insert("LineAmount".to_owned(), money(amount));
            l.insert("TaxType".to_owned(), json!(tax_type));
            l.insert("TaxAmount".to_owned(), money(tax));
            l.insert("IsBlank".to_owned(), json!(amount.is_zero()));
            if let Some((id, _)) = known {
                l.insert("AccountID".to_owned(), json!(id));
            }
            l.entry("Tracking".to_owned()).or_insert_with(|| json!([]));
            out.push(Value::Object(l));
        }
        if debits + credits != Decimal::ZERO {
            errors.push(format!(
                "The total debits ({:.2}) must equal total credits ({:.2})",
                round2(debits),
                round2(credits)
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (k, v) in el {
            const COPIED: [&str; 3] = ["Url", "ShowOnCashBasisReports", "Narration"];
            if COPIED.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                let key = canonical_key(&record, k);
                record[key] = v.clone();
            }
        }
        let id = match &existing {
            Some(v) => str_of(v, "ManualJournalID").unwrap_or_default().to_owned(),
            None => self.new_id(),
        };
        let date = date
            .or_else(|| {
                str_of(&record, "Date")
                    .and_then(parse_ms_date)
                    .map(|d| d.max(0) as u64)
            })
            .unwrap_or_else(|| day_start(now));
        let fields = json!({
            "ManualJournalID": id,
            "Narration": narration.trim(),
            "Status": status,
            "LineAmountTypes": lat,
            "JournalLines": out,
            "Date": ms_date(date),
            "UpdatedDateUTC": ms_date(now),
            "HasAttachments": false,
        });
        merge(&mut record, &fields);
        if record.get("ShowOnCashBasisReports").is_none() {
            record["ShowOnCashBasisReports"] = json!(true);
        }
        self.store(Kind::ManualJournal, record.clone(), created);
        Ok((record, warnings))
    }
}
