//! Tracking categories and their options (`/TrackingCategories`): no paging, no
//! If-Modified-Since and no UpdatedDateUTC; options inline. Xero allows at most 2 ACTIVE
//! categories (a community answer; its error text is unverified) and names of at most 100
//! characters. Every organisation is seeded with an active "Region" (one of its options
//! archived) and an archived "Cost Centre".

use super::*;

/// A seeded category: its name, status, and options as (name, status).
type Seeded = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The seeded categories.
pub(super) const CATEGORIES: [Seeded; 2] = [
    (
        "Region",
        "ACTIVE",
        &[
            ("North", "ACTIVE"),
            ("South", "ACTIVE"),
            ("Central", "ACTIVE"),
            ("Islands", "ARCHIVED"),
        ],
    ),
    ("Cost Centre", "ARCHIVED", &[("Studio", "ACTIVE")]),
];

/// Longest category or option name.
const NAME_MAX: usize = 100;

/// Most ACTIVE categories an organisation may have.
const ACTIVE_MAX: usize = 2;

/// An option as Xero shows it: its status also as three booleans.
fn option(id: &str, name: &str, status: &str) -> Value {
    json!({
        "TrackingOptionID": id,
        "Name": name,
        "Status": status,
        "IsActive": status == "ACTIVE",
        "IsArchived": status == "ARCHIVED",
        "IsDeleted": status == "DELETED",
    })
}

/// A name sent for a category or option, trimmed and checked.
fn name_of(el: &Map<String, Value>, what: &str) -> Result<Option<String>, String> {
    let Some(v) = get_ci(el, "Name") else {
        return Ok(None);
    };
    let name = v.as_str().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(format!("The {what} name must not be empty."));
    }
    if name.chars().count() > NAME_MAX {
        return Err(format!(
            "The {what} name must not be more than {NAME_MAX} characters long."
        ));
    }
    Ok(Some(name.to_owned()))
}

/// A status sent for a category or option, upper-cased and checked.
fn status_of(el: &Map<String, Value>) -> Result<Option<String>, String> {
    let Some(v) = get_ci(el, "Status") else {
        return Ok(None);
    };
    let status = v.as_str().unwrap_or_default().trim().to_ascii_uppercase();
    if !["ACTIVE", "ARCHIVED"].contains(&status.as_str()) {
        return Err(format!(
            "'{status}' is not a status a tracking category or option can be given; use ACTIVE or ARCHIVED"
        ));
    }
    Ok(Some(status))
}

/// A category as a list shows it: deleted options left out, and archived ones too unless the
/// request says `includeArchived=true`.
pub(super) fn shown(mut category: Value, include_archived: bool) -> Value {
    if let Some(options) = category.get_mut("Options").and_then(Value::as_array_mut) {
        options.retain(|o| match str_of(o, "Status") {
            Some("DELETED") => false,
            Some("ARCHIVED") => include_archived,
            _ => true,
        });
    }
    category
}

impl Org {
    pub(super) fn seeded_tracking_category(&self, i: usize) -> Value {
        let (name, status, options) = CATEGORIES[i];
        let id = self.seeded_id(Kind::TrackingCategory, i);
        // Option ids: the category's id with the option's position in its last digits.
        let options: Vec<Value> = options
            .iter()
            .enumerate()
            .map(|(n, (o, st))| {
                option(&format!("{}{:04x}", &id[..id.len() - 4], 0x1000 + n), o, st)
            })
            .collect();
        json!({
            "TrackingCategoryID": id,
            "Name": name,
            "Status": status,
            "Options": options,
        })
    }

    fn active_categories(&self, except: Option<&str>) -> usize {
        self.all(Kind::TrackingCategory)
            .iter()
            .filter(|c| str_of(c, "Status") == Some("ACTIVE"))
            .filter(|c| {
                except.is_none_or(|e| {
                    !str_of(c, "TrackingCategoryID").is_some_and(|id| id.eq_ignore_ascii_case(e))
                })
            })
            .count()
    }

    /// `PUT /TrackingCategories` (create) and `POST /TrackingCategories/{id}` (rename, archive).
    pub(super) fn write_tracking_category(
        &mut self,
        verb: Verb,
        el: &Map<String, Value>,
        path_id: Option<&str>,
    ) -> Result<(Value, Vec<String>), Vec<String>> {
        let existing = self.existing_for_update(Kind::TrackingCategory, verb, el, path_id)?;
        let name = name_of(el, "tracking category").map_err(|e| vec![e])?;
        let status = status_of(el).map_err(|e| vec![e])?;
        let created = existing.is_none();
        let mut record = match existing {
            Some(v) => v,
            None => {
                let Some(name) = name.clone() else {
                    return Err(vec!["A tracking category must have a Name.".to_owned()]);
                };
                json!({
                    "TrackingCategoryID": self.new_id(),
                    "Name": name,
                    "Status": "ACTIVE",
                    "Options": [],
                })
            }
        };
        if str_of(&record, "Status") == Some("DELETED") {
            return Err(vec![
                "A deleted tracking category cannot be changed.".to_owned(),
            ]);
        }
        let id = str_of(&record, "TrackingCategoryID")
            .unwrap_or_default()
            .to_owned();
        if let Some(name) = &name {
            let taken = self.all(Kind::TrackingCategory).iter().any(|c| {
                str_of(c, "Status") != Some("DELETED")
                    && str_of(c, "Name").is_some_and(|n| n.eq_ignore_ascii_case(name))
                    && !str_of(c, "TrackingCategoryID").is_some_and(|i| i.eq_ignore_ascii_case(&id))
            });
            if taken {
                return Err(vec![format!(
                    "A tracking category named '{name}' already exists."
                )]);
            }
            record["Name"] = json!(name);
        }
        if let Some(status) = status {
            record["Status"] = json!(status);
        }
        if str_of(&record, "Status") == Some("ACTIVE")
            && self.active_categories(Some(&id)) >= ACTIVE_MAX
        {
            return Err(vec![format!(
                "An organisation can have at most {ACTIVE_MAX} active tracking categories."
            )]);
        }
        self.store(Kind::TrackingCategory, record.clone(), created);
        Ok((record, vec![]))
    }

    /// `DELETE /TrackingCategories/{id}`: the category comes back with status DELETED.
    pub(crate) fn delete_tracking_category(&mut self, id: &str) -> Option<Value> {
        let mut record = self.find(Kind::TrackingCategory, id)?;
        if str_of(&record, "Status") == Some("DELETED") {
            return None;
        }
        record["Status"] = json!("DELETED");
        self.store(Kind::TrackingCategory, record.clone(), false);
        Some(record)
    }

    /// Adds an option (`PUT /TrackingCategories/{id}/Options`), renames or archives one
    /// (`POST …/Options/{OptionID}`), or deletes one (`DELETE`, `el` = None). Returns the option.
    pub(crate) fn write_tracking_option(
        &mut self,
        category: &str,
        option_id: Option<&str>,
        el: Option<&Map<String, Value>>,
    ) -> Result<Value, String> {
        let mut record = self
            .find(Kind::TrackingCategory, category)
            .filter(|c| str_of(c, "Status") != Some("DELETED"))
            .ok_or_else(|| format!("Tracking category {category} could not be found."))?;
        let mut options = record["Options"].as_array().cloned().unwrap_or_default();
        let at = match option_id {
            Some(o) => Some(
                options
                    .iter()
                    .position(|x| {
                        str_of(x, "TrackingOptionID").is_some_and(|i| i.eq_ignore_ascii_case(o))
                            && str_of(x, "Status") != Some("DELETED")
                    })
                    .ok_or_else(|| format!("Tracking option {o} could not be found."))?,
            ),
            None => None,
        };
        let (name, status) = match el {
            Some(el) => (name_of(el, "tracking option")?, status_of(el)?),
            None => (None, Some("DELETED".to_owned())),
        };
        if let Some(name) = &name {
            let taken = options.iter().enumerate().any(|(n, x)| {
                Some(n) != at
                    && str_of(x, "Status") != Some("DELETED")
                    && str_of(x, "Name").is_some_and(|x| x.eq_ignore_ascii_case(name))
            });
            if taken {
                return Err(format!("A tracking option named '{name}' already exists."));
            }
        }
        let option_out = match at {
            Some(n) => {
                let old = &options[n];
                let id = str_of(old, "TrackingOptionID")
                    .unwrap_or_default()
                    .to_owned();
                let name =
                    name.unwrap_or_else(|| str_of(old, "Name").unwrap_or_default().to_owned());
                let status =
                    status.unwrap_or_else(|| str_of(old, "Status").unwrap_or_default().to_owned());
                options[n] = option(&id, &name, &status);
                options[n].clone()
            }
            None => {
                let Some(name) = name else {
                    return Err("A tracking option must have a Name.".to_owned());
                };
                let o = option(&self.new_id(), &name, status.as_deref().unwrap_or("ACTIVE"));
                options.push(o.clone());
                o
            }
        };
        record["Options"] = Value::Array(options);
        self.store(Kind::TrackingCategory, record, false);
        Ok(option_out)
    }
}
