//! Payments: the seeded payments, payment writes and the inspection helper that pays an invoice.

use super::*;

impl Org {
    pub(super) fn seeded_payment(&self, j: usize) -> Value {
        let i = (j / PAID_AT.len()) * STATUS_CYCLE.len() + PAID_AT[j % PAID_AT.len()];
        let inv = self.seeded_invoice(i);
        let mut p = inv
            .get("Payments")
            .and_then(|p| p.get(0))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let accrec = str_of(&inv, "Type") == Some("ACCREC");
        merge(
            &mut p,
            &json!({
                "BankAmount": inv["Total"],
                "PaymentType": if accrec { "ACCRECPAYMENT" } else { "ACCPAYPAYMENT" },
                "Status": "AUTHORISED",
                "UpdatedDateUTC": inv["UpdatedDateUTC"],
                "HasAccount": true,
                "IsReconciled": false,
                "Account": {"AccountID": self.seeded_id(Kind::Account, 0), "Code": "090"},
                "Invoice": {
                    "Type": inv["Type"], "InvoiceID": inv["InvoiceID"], "InvoiceNumber": inv["InvoiceNumber"],
                    "Contact": inv["Contact"],
                    "LineItems": [], "Payments": [], "CreditNotes": [], "Prepayments": [], "Overpayments": [],
                    "IsDiscounted": false, "HasAttachments": false, "HasErrors": false,
                    "CurrencyCode": inv["CurrencyCode"]
                },
            }),
        );
        p
    }

    pub(super) fn write_payment(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
        now: u64,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        if let Some(existing) = self.existing_for_update(Kind::Payment, verb, el, path_id)? {
            // The only change Xero allows on a payment: deleting it.
            let status = get_ci(el, "Status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !status.eq_ignore_ascii_case("DELETED") {
                return Err(vec![
                    "A payment can only be deleted: send Status DELETED.".to_owned(),
                ]);
            }
            if str_of(&existing, "Status") == Some("DELETED") {
                return Err(vec!["This payment has already been deleted.".to_owned()]);
            }
            let mut p = existing;
            p["Status"] = json!("DELETED");
            p["UpdatedDateUTC"] = json!(ms_date(now));
            let amount = p.get("Amount").and_then(decimal).unwrap_or_default();
            let pid = str_of(&p, "PaymentID").unwrap_or_default().to_owned();
            if let Some(inv_id) = p
                .get("Invoice")
                .and_then(|i| str_of(i, "InvoiceID"))
                .map(str::to_owned)
                && let Some(mut inv) = self.find(Kind::Invoice, &inv_id)
            {
                let paid = inv.get("AmountPaid").and_then(decimal).unwrap_or_default() - amount;
                let total = inv.get("Total").and_then(decimal).unwrap_or_default();
                inv["AmountPaid"] = money(paid);
                inv["AmountDue"] = money(total - paid);
                inv["Status"] = json!("AUTHORISED");
                if let Some(m) = inv.as_object_mut() {
                    m.remove("FullyPaidOnDate");
                }
                if let Some(list) = inv.get_mut("Payments").and_then(Value::as_array_mut) {
                    list.retain(|x| {
                        str_of(x, "PaymentID").is_none_or(|i| !i.eq_ignore_ascii_case(&pid))
                    });
                }
                inv["UpdatedDateUTC"] = json!(ms_date(now));
                self.store(Kind::Invoice, inv, false);
            }
            self.store(Kind::Payment, p.clone(), false);
            return Ok((p, vec![]));
        }
        let mut errors = Vec::new();
        let invoice = match get_ci(el, "Invoice").and_then(Value::as_object) {
            Some(i) => {
                let key = get_ci(i, "InvoiceID")
                    .or_else(|| get_ci(i, "InvoiceNumber"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let found = self.find(Kind::Invoice, key);
                if found.is_none() {
                    errors.push("Invoice could not be found".to_owned());
                }
                found
            }
            None => {
                errors.push(
                    "An Invoice, CreditNote, Prepayment or Overpayment must be specified"
                        .to_owned(),
                );
                None
            }
        };
        let account = get_ci(el, "Account")
            .and_then(Value::as_object)
            .and_then(|a| get_ci(a, "AccountID").or_else(|| get_ci(a, "Code")))
            .or_else(|| get_ci(el, "Code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let account = match account {
            Some(a) => {
                let found = self.find(Kind::Account, &a);
                match &found {
                    None => errors.push("Account could not be found".to_owned()),
                    Some(acc)
                        if str_of(acc, "Type") != Some("BANK")
                            && acc.get("EnablePaymentsToAccount") != Some(&json!(true)) =>
                    {
                        errors.push(
                            "Account type is invalid for making a payment to/from".to_owned(),
                        );
                    }
                    Some(_) => {}
                }
                found
            }
            None => {
                errors.push("An Account must be specified".to_owned());
                None
            }
        };
        let amount = get_ci(el, "Amount").and_then(decimal);
        match amount {
            None => errors.push("Payment Amount must be specified".to_owned()),
            Some(a) if a <= Decimal::ZERO => {
                errors.push("Payment amounts must be greater than zero".to_owned())
            }
            _ => {}
        }
        let date = match get_ci(el, "Date").and_then(Value::as_str) {
            Some(d) => match parse_client_date(d) {
                Some(ms) => ms.max(0) as u64,
                None => {
                    errors.push(format!("'{d}' is not a valid date"));
                    0
                }
            },
            None => day_start(now),
        };
        if let (Some(inv), Some(a)) = (&invoice, amount) {
            if str_of(inv, "Status") != Some("AUTHORISED") {
                errors.push("Payments can only be made against Authorised documents".to_owned());
            } else if a > inv.get("AmountDue").and_then(decimal).unwrap_or_default() {
                errors.push(
                    "Payment amount exceeds the amount outstanding on this document".to_owned(),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(mut inv), Some(acc), Some(amount)) = (invoice, account, amount) else {
            return Err(vec!["The payment is incomplete".to_owned()]);
        };
        let amount = round2(amount);
        let id = self.new_id();
        let reference = get_ci(el, "Reference")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let paid = inv.get("AmountPaid").and_then(decimal).unwrap_or_default() + amount;
        let due = inv.get("AmountDue").and_then(decimal).unwrap_or_default() - amount;
        inv["AmountPaid"] = money(paid);
        inv["AmountDue"] = money(due);
        if due.is_zero() {
            inv["Status"] = json!("PAID");
            inv["FullyPaidOnDate"] = json!(ms_date(date));
        }
        let summary = json!({
            "PaymentID": id, "Date": ms_date(date), "Amount": money(amount), "Reference": reference,
            "CurrencyRate": money(Decimal::ONE), "HasAccount": false, "HasValidationErrors": false,
        });
        if let Some(list) = inv.get_mut("Payments").and_then(Value::as_array_mut) {
            list.push(summary.clone());
        } else {
            inv["Payments"] = json!([summary]);
        }
        inv["UpdatedDateUTC"] = json!(ms_date(now));
        let accrec = str_of(&inv, "Type") == Some("ACCREC");
        let mut payment = summary;
        merge(
            &mut payment,
            &json!({
                "BankAmount": money(amount),
                "PaymentType": if accrec { "ACCRECPAYMENT" } else { "ACCPAYPAYMENT" },
                "Status": "AUTHORISED",
                "UpdatedDateUTC": ms_date(now),
                "HasAccount": true,
                "IsReconciled": get_ci(el, "IsReconciled").and_then(Value::as_bool).unwrap_or(false),
                "Account": {"AccountID": acc["AccountID"], "Code": acc["Code"]},
                "Invoice": {
                    "Type": inv["Type"], "InvoiceID": inv["InvoiceID"], "InvoiceNumber": inv["InvoiceNumber"],
                    "Contact": inv["Contact"], "LineItems": [], "Payments": [], "CreditNotes": [],
                    "Prepayments": [], "Overpayments": [], "IsDiscounted": false, "HasAttachments": false,
                    "HasErrors": false, "CurrencyCode": inv["CurrencyCode"]
                },
            }),
        );
        self.store(Kind::Invoice, inv, false);
        self.store(Kind::Payment, payment.clone(), true);
        Ok((payment, vec![]))
    }

    /// Pays an invoice into the first bank account (the inspection helper).
    pub(crate) fn pay(
        &mut self,
        invoice: &str,
        amount: Decimal,
        now: u64,
    ) -> Result<Value, String> {
        let mut el = Map::new();
        el.insert("Invoice".to_owned(), json!({ "InvoiceID": invoice }));
        el.insert("Account".to_owned(), json!({ "Code": "090" }));
        el.insert("Amount".to_owned(), money(amount));
        el.insert("Date".to_owned(), json!(iso_seconds(day_start(now))));
        if self.find(Kind::Invoice, invoice).is_none() {
            return Err(format!("no invoice {invoice}"));
        }
        let inv_id = self
            .find(Kind::Invoice, invoice)
            .and_then(|v| str_of(&v, "InvoiceID").map(str::to_owned))
            .unwrap_or_default();
        el.insert("Invoice".to_owned(), json!({ "InvoiceID": inv_id }));
        let created_before = self.creates;
        let out = self
            .write_payment(Verb::Put, &el, None, now)
            .map(|(v, _)| v)
            .map_err(|e| e.join(" "));
        // A payment made "in Xero" is not an API create.
        if out.is_ok() {
            self.creates = created_before;
            if let Some(n) = self.creates_by_kind.get_mut("Payments") {
                *n -= 1;
            }
        }
        out
    }
}
