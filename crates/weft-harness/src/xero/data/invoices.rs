//! Invoices: the seeded invoices and the invoice writes (line pricing, numbering, totals, statuses).

use super::*;

impl Org {
    pub(super) fn seeded_invoice(&self, i: usize) -> Value {
        let mut rng = self.rng_for(Kind::Invoice, i);
        let accrec = i % 3 != 2;
        let status = STATUS_CYCLE[i % STATUS_CYCLE.len()];
        let updated = self.coll(Kind::Invoice).updated(i);
        let date = day_start(updated) - rng.u64(0..20) * 86_400_000;
        let due = date + 30 * 86_400_000;
        let contacts = self.coll(Kind::Contact).seeded;
        let c = rng.usize(..contacts);
        let lat = match rng.u8(..10) {
            0 => "Inclusive",
            1 => "NoTax",
            _ => "Exclusive",
        };
        let lines_n = 1 + rng.usize(..3);
        let mut lines = Vec::new();
        for l in 0..lines_n {
            let (desc, amount, account, tax) = if accrec {
                let (code, name, sale, _) = ITEMS[rng.usize(..ITEMS.len())];
                let _ = code;
                (
                    name.to_owned(),
                    sale.parse::<Decimal>().unwrap_or_default(),
                    if l == 2 { "260" } else { "200" },
                    "OUTPUT",
                )
            } else {
                let (code, name, _, _, _) = ACCOUNTS[6 + rng.usize(..13)];
                let cents = rng.i64(1_000..250_000);
                (
                    format!("{name} - {}", 1 + rng.u8(..28)),
                    Decimal::new(cents, 2),
                    code,
                    if code == "404" || code == "420" {
                        "NONE"
                    } else {
                        "INPUT"
                    },
                )
            };
            let qty = Decimal::from(1 + rng.u32(..8));
            lines.push(json!({
                "LineItemID": format!("{}{:04x}{:08x}", &self.coll(Kind::Invoice).prefix, l, i),
                "Description": desc,
                "Quantity": money(qty),
                "UnitAmount": money(amount),
                "AccountCode": account,
                "TaxType": if lat == "NoTax" { "NONE" } else { tax },
            }));
        }
        let (lines, sub, tax, total) = self
            .price_lines(&lines, lat, accrec, true)
            .map(|p| (p.lines, p.sub, p.tax, p.total))
            .unwrap_or_default();
        let number = if accrec {
            format!("INV-{:04}", accrec_before(i + 1))
        } else {
            format!("RPT{:03}-{}", 100 + c % 900, i)
        };
        let contact_id = self.seeded_id(Kind::Contact, c);
        let mut inv = json!({
            "Type": if accrec { "ACCREC" } else { "ACCPAY" },
            "InvoiceID": self.seeded_id(Kind::Invoice, i),
            "InvoiceNumber": number,
            "Reference": if accrec { format!("PO-{}", 1000 + i) } else { String::new() },
            "Payments": [],
            "CreditNotes": [],
            "Prepayments": [],
            "Overpayments": [],
            "AmountDue": money(total),
            "AmountPaid": money(Decimal::ZERO),
            "AmountCredited": money(Decimal::ZERO),
            "CurrencyRate": money(Decimal::ONE),
            "IsDiscounted": false,
            "HasAttachments": false,
            "HasErrors": false,
            "Contact": {"ContactID": contact_id, "Name": contact_name(c)},
            "DateString": iso_seconds(date),
            "Date": ms_date(date),
            "DueDateString": iso_seconds(due),
            "DueDate": ms_date(due),
            "Status": status,
            "LineAmountTypes": lat,
            "LineItems": lines,
            "SubTotal": money(sub),
            "TotalTax": money(tax),
            "Total": money(total),
            "UpdatedDateUTC": ms_date(updated),
            "CurrencyCode": self.region().currency,
        });
        match status {
            "PAID" => {
                let j = payment_of_invoice(i).unwrap_or(0);
                let pay_date = (date + 7 * 86_400_000).min(day_start(updated));
                inv["AmountDue"] = money(Decimal::ZERO);
                inv["AmountPaid"] = money(total);
                inv["FullyPaidOnDate"] = json!(ms_date(pay_date));
                inv["Payments"] = json!([{
                    "PaymentID": self.seeded_id(Kind::Payment, j),
                    "Date": ms_date(pay_date),
                    "Amount": money(total),
                    "Reference": format!("Payment {}", number),
                    "CurrencyRate": money(Decimal::ONE),
                    "HasAccount": false,
                    "HasValidationErrors": false,
                }]);
            }
            "VOIDED" | "DELETED" => {
                inv["AmountDue"] = money(Decimal::ZERO);
            }
            _ => {}
        }
        inv
    }

    /// Prices lines: LineAmount per line to the cent, tax per line from its rate; returns the
    /// lines and SubTotal, TotalTax, Total, and the warnings (an account code Xero does not know
    /// is removed from its line, the document still saved).
    pub(super) fn price_lines(
        &self,
        lines: &[Value],
        lat: &str,
        sales: bool,
        unitdp4: bool,
    ) -> Result<Priced, Vec<String>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let (mut sum_lines, mut sum_tax) = (Decimal::ZERO, Decimal::ZERO);
        for line in lines {
            let Some(obj) = line.as_object() else {
                errors.push("A line item must be an object.".to_owned());
                continue;
            };
            let mut l = obj.clone();
            let item = get_ci(obj, "ItemCode")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|code| (code.to_owned(), self.find(Kind::Item, code)));
            let details = item.as_ref().and_then(|(_, i)| i.as_ref()).map(|i| {
                i.get(if sales {
                    "SalesDetails"
                } else {
                    "PurchaseDetails"
                })
                .cloned()
                .unwrap_or(Value::Null)
            });
            if let Some((code, None)) = &item {
                errors.push(format!("Item code '{code}' is not valid"));
            }
            // Xero's schema says bills do not support discounts; whether it refuses or ignores
            // them is unverified, the simulator refuses.
            if !sales
                && ["DiscountRate", "DiscountAmount"]
                    .iter()
                    .any(|k| get_ci(obj, k).is_some_and(|v| !v.is_null()))
            {
                errors.push("Discounts are not supported on bills (ACCPAY).".to_owned());
            }
            for key in ["Quantity", "UnitAmount", "DiscountRate"] {
                if get_ci(obj, key).is_some_and(|v| !v.is_null() && decimal(v).is_none()) {
                    errors.push(format!("{key} must be a number within range"));
                }
            }
            let qty = get_ci(obj, "Quantity")
                .and_then(decimal)
                .unwrap_or(Decimal::ONE);
            let unit = get_ci(obj, "UnitAmount")
                .and_then(decimal)
                .or_else(|| {
                    details
                        .as_ref()
                        .and_then(|d| d.get("UnitPrice"))
                        .and_then(decimal)
                })
                .unwrap_or(Decimal::ZERO);
            // Xero keeps 2 decimals of a unit price unless the request says unitdp=4.
            let unit = if unitdp4 {
                unit.round_dp(4)
            } else {
                round2(unit)
            };
            let discount = get_ci(obj, "DiscountRate")
                .and_then(decimal)
                .unwrap_or(Decimal::ZERO);
            let description = get_ci(obj, "Description")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let mut account = get_ci(obj, "AccountCode")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    details
                        .as_ref()
                        .and_then(|d| str_of(d, "AccountCode"))
                        .map(str::to_owned)
                });
            // Accounts cannot be changed through the simulator, so the seeded chart is the chart.
            // An unknown code does not refuse the document: Xero takes it off the line, says so
            // in Warnings and answers 200.
            if let Some(code) = account.clone()
                && self.account_by_code(&code).is_none()
            {
                warnings.push(format!(
                    "Account code '{code}' has been removed as it does not match a recognised account."
                ));
                l.remove("AccountCode");
                account = None;
            }
            let account_rec = account.as_deref().map(|a| (a, self.account_by_code(a)));
            let default_tax = account_rec
                .as_ref()
                .and_then(|(_, a)| a.as_ref())
                .map(|(_, tax)| *tax)
                .map(str::to_owned)
                .unwrap_or_else(|| if sales { "OUTPUT" } else { "INPUT" }.to_owned());
            let tax_type = if lat == "NoTax" {
                "NONE".to_owned()
            } else {
                get_ci(obj, "TaxType")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or(default_tax)
            };
            let rate = self.rate_of(&tax_type);
            if rate.is_none() {
                errors.push(format!(
                    "The TaxType code '{tax_type}' does not exist or cannot be used for this type of transaction."
                ));
            }
            if description.is_empty() && item.is_none() && account.is_none() {
                errors.push("Description needs to be at least 1 char long".to_owned());
            }
            // Checked arithmetic: absurd amounts are a validation error, never a panic.
            let priced = qty.checked_mul(unit).and_then(|gross| {
                let off = gross
                    .checked_mul(discount)?
                    .checked_div(Decimal::ONE_HUNDRED)?;
                let line_amount = round2(gross.checked_sub(off)?);
                let rate = rate.unwrap_or_default();
                let tax = match lat {
                    "Inclusive" => round2(
                        line_amount
                            .checked_mul(rate)?
                            .checked_div(Decimal::ONE_HUNDRED.checked_add(rate)?)?,
                    ),
                    "NoTax" => Decimal::ZERO,
                    _ => round2(
                        line_amount
                            .checked_mul(rate)?
                            .checked_div(Decimal::ONE_HUNDRED)?,
                    ),
                };
                Some((line_amount, tax))
            });
            let max_line: Decimal = Decimal::new(999_999_999_999, 2);
            let Some((line_amount, tax)) = priced.filter(|(l, _)| l.abs() <= max_line) else {
                errors.push("The line amount must not exceed 9,999,999,999.99".to_owned());
                continue;
            };
            sum_lines += line_amount;
            sum_tax += tax;
            l.insert("Quantity".to_owned(), money(qty));
            l.insert("UnitAmount".to_owned(), money(unit));
            l.insert("LineAmount".to_owned(), money(line_amount));
            l.insert("TaxAmount".to_owned(), money(tax));
            l.insert("TaxType".to_owned(), json!(tax_type));
            if let Some(a) = &account {
                l.insert("AccountCode".to_owned(), json!(a));
                if let Some((id, _)) = account_rec.as_ref().and_then(|(_, a)| a.as_ref()) {
                    l.insert("AccountID".to_owned(), json!(id));
                }
            }
            if description.is_empty()
                && let Some(name) = item
                    .as_ref()
                    .and_then(|(_, i)| i.as_ref())
                    .and_then(|i| str_of(i, "Description"))
            {
                l.insert("Description".to_owned(), json!(name));
            }
            l.entry("Tracking".to_owned()).or_insert_with(|| json!([]));
            out.push(Value::Object(l));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let sub = if lat == "Inclusive" {
            sum_lines - sum_tax
        } else {
            sum_lines
        };
        Ok(Priced {
            lines: out,
            sub,
            tax: sum_tax,
            total: sub + sum_tax,
            warnings,
        })
    }

    pub(super) fn number_taken(&self, number: &str, except: Option<&str>) -> bool {
        let lower = number.to_ascii_lowercase();
        if self.used_numbers.contains(&lower) {
            return self.find(Kind::Invoice, number).is_none_or(|v| {
                str_of(&v, "InvoiceID")
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                    != except
            });
        }
        invoice_index_of_number(number, self.coll(Kind::Invoice).seeded).is_some_and(|i| {
            !self.coll(Kind::Invoice).moved.contains(&i)
                || self.find(Kind::Invoice, number).is_some_and(|v| {
                    str_of(&v, "InvoiceID")
                        .map(str::to_ascii_lowercase)
                        .as_deref()
                        != except
                })
        })
    }

    pub(super) fn write_invoice(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
        unitdp4: bool,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::Invoice, verb, el, path_id)?;
        let created = existing.is_none();
        let mut record = existing.clone().unwrap_or_else(|| json!({}));
        let mut errors = Vec::new();
        let field = |k: &str| get_ci(el, k).and_then(Value::as_str).map(str::to_owned);

        let ty = field("Type")
            .map(|s| s.to_ascii_uppercase())
            .or_else(|| str_of(&record, "Type").map(str::to_owned))
            .unwrap_or_default();
        if ty.is_empty() {
            errors.push("Invoice Type must be specified".to_owned());
        } else if ty != "ACCREC" && ty != "ACCPAY" {
            errors.push(format!(
                "'{ty}' is not a valid invoice Type; use ACCREC or ACCPAY"
            ));
        }
        let sales = ty == "ACCREC";
        let old_status = str_of(&record, "Status").unwrap_or("").to_owned();
        let status = field("Status")
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_else(|| {
                if created {
                    "DRAFT".to_owned()
                } else {
                    old_status.clone()
                }
            });
        let paid_something =
            decimal(record.get("AmountPaid").unwrap_or(&Value::Null)).is_some_and(|d| !d.is_zero());
        if created {
            if !["DRAFT", "SUBMITTED", "AUTHORISED"].contains(&status.as_str()) {
                errors.push("Invoice not of valid status for creation".to_owned());
            }
        } else {
            let allowed: &[&str] = match old_status.as_str() {
                "DRAFT" => &["DRAFT", "SUBMITTED", "AUTHORISED", "DELETED"],
                "SUBMITTED" => &["SUBMITTED", "DRAFT", "AUTHORISED", "DELETED"],
                "AUTHORISED" if paid_something => &["AUTHORISED"],
                "AUTHORISED" => &["AUTHORISED", "VOIDED"],
                _ => &[],
            };
            if !allowed.contains(&status.as_str()) {
                errors.push(if old_status == "AUTHORISED" && status == "VOIDED" {
                    "This document cannot be voided as it has a payment allocated to it.".to_owned()
                } else if allowed.is_empty() {
                    "Invoice not of valid status for modification".to_owned()
                } else {
                    format!("An invoice cannot move from {old_status} to {status}.")
                });
            }
            if paid_something && get_ci(el, "LineItems").is_some() {
                errors.push("This document cannot be edited as it has a payment or credit note allocated to it.".to_owned());
            }
        }
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
        let lat = field("LineAmountTypes")
            .or_else(|| str_of(&record, "LineAmountTypes").map(str::to_owned))
            .unwrap_or_else(|| "Exclusive".to_owned());
        let lat = match lat.to_ascii_lowercase().as_str() {
            "exclusive" => "Exclusive",
            "inclusive" => "Inclusive",
            "notax" => "NoTax",
            _ => {
                errors.push(format!("'{lat}' is not a valid LineAmountTypes value"));
                "Exclusive"
            }
        };
        let lines = get_ci(el, "LineItems")
            .cloned()
            .or_else(|| record.get("LineItems").cloned())
            .and_then(|l| l.as_array().cloned())
            .unwrap_or_default();
        if lines.is_empty() && !matches!(status.as_str(), "DELETED" | "VOIDED") {
            errors.push("At least one line item must be specified".to_owned());
        }
        let priced = match self.price_lines(&lines, lat, sales, unitdp4) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let own_id = existing
            .as_ref()
            .and_then(|v| str_of(v, "InvoiceID"))
            .map(str::to_ascii_lowercase);
        let number = match field("InvoiceNumber").filter(|s| !s.trim().is_empty()) {
            Some(n) => {
                let changed = str_of(&record, "InvoiceNumber") != Some(n.as_str());
                if sales && changed && self.number_taken(&n, own_id.as_deref()) {
                    errors.push("Invoice # must be unique.".to_owned());
                }
                Some(n)
            }
            None => str_of(&record, "InvoiceNumber").map(str::to_owned),
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
        let due = match field("DueDate") {
            Some(d) => match parse_client_date(&d) {
                Some(ms) => Some(ms.max(0) as u64),
                None => {
                    errors.push(format!("'{d}' is not a valid date"));
                    None
                }
            },
            None => None,
        };
        // A bill's planned payment date (ExpectedPaymentDate is the sales counterpart).
        let planned = match field("PlannedPaymentDate") {
            Some(d) => match parse_client_date(&d) {
                Some(ms) => Some(ms.max(0) as u64),
                None => {
                    errors.push(format!("'{d}' is not a valid date"));
                    None
                }
            },
            None => None,
        };
        // An empty code means the base currency; any other must be one the organisation uses.
        let currency = field("CurrencyCode")
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty());
        if let Some(code) = &currency
            && !self.currencies.contains(code)
        {
            errors.push(format!("Organisation is not subscribed to currency {code}"));
        }
        let currency = currency
            .or_else(|| str_of(&record, "CurrencyCode").map(str::to_owned))
            .unwrap_or_else(|| self.region().currency.to_owned());
        if !errors.is_empty() {
            return Err(errors);
        }
        let Some(Priced {
            mut lines,
            sub,
            tax,
            total,
            warnings,
        }) = priced
        else {
            return Err(vec!["The line items could not be priced".to_owned()]);
        };
        for l in &mut lines {
            if str_of(l, "LineItemID").is_none_or(str::is_empty) {
                l["LineItemID"] = json!(self.new_id());
            }
        }
        // Copy the writable scalar fields sent.
        for (k, v) in el {
            const SKIP: [&str; 24] = [
                "InvoiceID",
                "PlannedPaymentDate",
                "CurrencyCode",
                "Type",
                "Status",
                "Contact",
                "LineItems",
                "LineAmountTypes",
                "InvoiceNumber",
                "Date",
                "DueDate",
                "SubTotal",
                "TotalTax",
                "Total",
                "AmountDue",
                "AmountPaid",
                "AmountCredited",
                "UpdatedDateUTC",
                "Payments",
                "FullyPaidOnDate",
                "HasErrors",
                "ValidationErrors",
                "StatusAttributeString",
                "Warnings",
            ];
            if !SKIP.iter().any(|s| s.eq_ignore_ascii_case(k)) {
                let key = canonical_key(&record, k);
                record[key] = v.clone();
            }
        }
        let id = match &existing {
            Some(v) => str_of(v, "InvoiceID").unwrap_or_default().to_owned(),
            None => self.new_id(),
        };
        let number = match number {
            Some(n) => n,
            None if sales => {
                let mut n;
                loop {
                    n = format!("INV-{:04}", self.next_number);
                    self.next_number += 1;
                    if !self.number_taken(&n, None) {
                        break;
                    }
                }
                n
            }
            None => String::new(),
        };
        if sales && !number.is_empty() {
            self.used_numbers.insert(number.to_ascii_lowercase());
        }
        let date = date
            .or_else(|| {
                str_of(&record, "Date")
                    .and_then(parse_ms_date)
                    .map(|d| d.max(0) as u64)
            })
            .unwrap_or_else(|| day_start(now));
        let paid = decimal(record.get("AmountPaid").unwrap_or(&Value::Null)).unwrap_or_default();
        let fields = json!({
            "Type": ty,
            "InvoiceID": id,
            "InvoiceNumber": number,
            "Status": status,
            "LineAmountTypes": lat,
            "LineItems": lines,
            "SubTotal": money(sub),
            "TotalTax": money(tax),
            "Total": money(total),
            "AmountPaid": money(paid),
            "AmountDue": money(if matches!(status.as_str(), "VOIDED" | "DELETED") { Decimal::ZERO } else { total - paid }),
            "AmountCredited": money(Decimal::ZERO),
            "Date": ms_date(date),
            "DateString": iso_seconds(date),
            "UpdatedDateUTC": ms_date(now),
            "CurrencyCode": currency,
            "CurrencyRate": record.get("CurrencyRate").cloned().unwrap_or_else(|| money(Decimal::ONE)),
            "HasErrors": false,
            "IsDiscounted": false,
            "HasAttachments": false,
        });
        merge(&mut record, &fields);
        for k in ["Payments", "CreditNotes", "Prepayments", "Overpayments"] {
            if record.get(k).is_none() {
                record[k] = json!([]);
            }
        }
        if let Some(due) = due {
            record["DueDate"] = json!(ms_date(due));
            record["DueDateString"] = json!(iso_seconds(due));
        }
        if let Some(c) = contact {
            record["Contact"] = json!({
                "ContactID": c["ContactID"],
                "Name": c["Name"],
            });
        }
        if let Some(p) = planned {
            record["PlannedPaymentDate"] = json!(ms_date(p));
        }
        self.store(Kind::Invoice, record.clone(), created);
        Ok((record, warnings))
    }
}

/// Priced line items: the lines, SubTotal, TotalTax, Total and the warnings of pricing.
pub(super) struct Priced {
    pub(super) lines: Vec<Value>,
    pub(super) sub: Decimal,
    pub(super) tax: Decimal,
    pub(super) total: Decimal,
    pub(super) warnings: Vec<String>,
}
