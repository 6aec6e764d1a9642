//! One portal's CRM: contacts, companies, deals and line items (each a record of text properties
//! with its associations), owners, and the rules HubSpot applies to writes: properties the
//! portal defines, read-only properties, contacts unique by e-mail address (kept in lower case),
//! deal stages of the default pipeline, numbers where numbers go. Seeded from the simulator's seed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::util::{iso, mix};

/// The CRM objects the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Object {
    /// People (`0-1`).
    Contacts,
    /// Organisations (`0-2`).
    Companies,
    /// Deals in a pipeline (`0-3`).
    Deals,
    /// The lines of deals (`0-8`).
    LineItems,
}

impl Object {
    /// Every object, in a fixed order.
    pub const ALL: [Object; 4] = [
        Object::Contacts,
        Object::Companies,
        Object::Deals,
        Object::LineItems,
    ];

    /// The object's name in paths (`contacts`, `line_items`).
    pub fn path(self) -> &'static str {
        match self {
            Object::Contacts => "contacts",
            Object::Companies => "companies",
            Object::Deals => "deals",
            Object::LineItems => "line_items",
        }
    }

    /// The object by its name in a path (names and HubSpot's type ids).
    pub fn from_path(s: &str) -> Option<Object> {
        match s {
            "contacts" | "contact" | "0-1" => Some(Object::Contacts),
            "companies" | "company" | "0-2" => Some(Object::Companies),
            "deals" | "deal" | "0-3" => Some(Object::Deals),
            "line_items" | "line_item" | "0-8" => Some(Object::LineItems),
            _ => None,
        }
    }

    /// The word HubSpot's messages use (`CONTACT`).
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Object::Contacts => "CONTACT",
            Object::Companies => "COMPANY",
            Object::Deals => "DEAL",
            Object::LineItems => "LINE_ITEM",
        }
    }

    /// The property holding the last change: contacts have their own name for it.
    pub fn modified_property(self) -> &'static str {
        match self {
            Object::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }

    /// The properties answered when a read names none.
    fn defaults(self) -> &'static [&'static str] {
        match self {
            Object::Contacts => &["email", "firstname", "lastname"],
            Object::Companies => &["name", "domain"],
            Object::Deals => &["dealname", "amount", "dealstage", "pipeline", "closedate"],
            Object::LineItems => &["name", "quantity", "price", "amount"],
        }
    }

    /// The properties a portal defines for the object that a write may set.
    fn writable(self) -> &'static [&'static str] {
        match self {
            Object::Contacts => &[
                "email",
                "firstname",
                "lastname",
                "phone",
                "company",
                "jobtitle",
                "lifecyclestage",
                "hubspot_owner_id",
            ],
            Object::Companies => &[
                "name",
                "domain",
                "phone",
                "address",
                "city",
                "state",
                "zip",
                "country",
                "industry",
                "hubspot_owner_id",
            ],
            Object::Deals => &[
                "dealname",
                "amount",
                "deal_currency_code",
                "dealstage",
                "pipeline",
                "closedate",
                "hubspot_owner_id",
                "description",
            ],
            Object::LineItems => &["name", "quantity", "price", "hs_product_id"],
        }
    }

    /// Properties HubSpot computes, which a write may not set.
    fn computed(self) -> &'static [&'static str] {
        match self {
            Object::Contacts => &["hs_object_id", "createdate", "lastmodifieddate"],
            Object::LineItems => &[
                "hs_object_id",
                "createdate",
                "hs_lastmodifieddate",
                "amount",
            ],
            _ => &["hs_object_id", "createdate", "hs_lastmodifieddate"],
        }
    }
}

/// Stages of the default deal pipeline.
pub(crate) const STAGES: &[&str] = &[
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
    "closedwon",
    "closedlost",
];

/// Association type ids HubSpot defines (from → to), as the v4 API and creates name them.
pub(crate) fn association_type(from: Object, to: Object) -> Option<u32> {
    match (from, to) {
        (Object::Contacts, Object::Companies) => Some(279),
        (Object::Companies, Object::Contacts) => Some(280),
        (Object::Deals, Object::Companies) => Some(5),
        (Object::Companies, Object::Deals) => Some(6),
        (Object::Deals, Object::Contacts) => Some(3),
        (Object::Contacts, Object::Deals) => Some(4),
        (Object::LineItems, Object::Deals) => Some(20),
        (Object::Deals, Object::LineItems) => Some(19),
        _ => None,
    }
}

/// The object an association type id leads to from `from`.
fn association_target(from: Object, type_id: u64) -> Option<Object> {
    Object::ALL
        .into_iter()
        .find(|&to| association_type(from, to).is_some_and(|t| u64::from(t) == type_id))
}

/// The association label HubSpot writes on v3 reads (`deal_to_company`).
pub(crate) fn association_label(from: Object, to: Object) -> String {
    let one = |o: Object| match o {
        Object::Contacts => "contact",
        Object::Companies => "company",
        Object::Deals => "deal",
        Object::LineItems => "line_item",
    };
    format!("{}_to_{}", one(from), one(to))
}

/// A record's properties, by name, as text.
pub(crate) type Props = BTreeMap<String, String>;
/// An association to make: the other object and its record's id.
pub(crate) type Link = (Object, u64);

/// One record: its properties as text, its times and its associations.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) id: u64,
    pub(crate) props: BTreeMap<String, String>,
    pub(crate) created_ms: u64,
    pub(crate) updated_ms: u64,
    pub(crate) archived: bool,
    pub(crate) archived_ms: Option<u64>,
    pub(crate) assoc: BTreeMap<Object, BTreeSet<u64>>,
}

/// Why a write was refused, as HubSpot says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Property values the portal does not accept (400 `VALIDATION_ERROR`): each a message, a
    /// code and the property.
    Invalid(Vec<(String, &'static str, String)>),
    /// A contact with this e-mail address exists (409 `CONFLICT`).
    Conflict { message: String },
    /// No such record (404 `OBJECT_NOT_FOUND`).
    NotFound(String),
}

impl Refusal {
    pub(crate) fn message(&self) -> String {
        match self {
            Refusal::Invalid(errors) => format!(
                "Property values were not valid: {}",
                errors
                    .iter()
                    .map(|(m, _, _)| m.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Refusal::Conflict { message } => message.clone(),
            Refusal::NotFound(id) => format!("resource not found: {id}"),
        }
    }
}

/// One portal's CRM.
pub(crate) struct Portal {
    pub(crate) id: u64,
    pub(crate) time_zone: &'static str,
    pub(crate) currency: &'static str,
    pub(crate) objects: BTreeMap<Object, BTreeMap<u64, Rec>>,
    pub(crate) owners: Vec<Value>,
    /// Custom properties an admin created, per object.
    pub(crate) custom: BTreeMap<Object, BTreeSet<String>>,
    next_id: u64,
    /// Records created through the API, per object.
    pub(crate) created: BTreeMap<Object, u64>,
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloe", "Dev", "Eva", "Finn", "Grace", "Hugo", "Isla", "Jon", "Kira", "Liam",
    "Maya", "Noah", "Olga", "Pia",
];
const LAST: &[&str] = &[
    "Adams", "Baker", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen",
    "Kowalski", "Lopez", "Meyer", "Novak",
];
const WORDS: &[&str] = &[
    "Northwind",
    "Bluebird",
    "Cobalt",
    "Driftwood",
    "Evergreen",
    "Foxglove",
    "Granite",
    "Harbor",
    "Ironbark",
    "Juniper",
    "Kestrel",
    "Lumen",
];
const SUFFIX: &[&str] = &["Labs", "Partners", "Group", "Studio", "Works", "Systems"];
const INDUSTRY: &[&str] = &[
    "COMPUTER_SOFTWARE",
    "MANAGEMENT_CONSULTING",
    "MARKETING_AND_ADVERTISING",
    "ARCHITECTURE_PLANNING",
];
const PRODUCTS: &[(&str, &str)] = &[
    ("Discovery workshop", "4500"),
    ("Implementation, per week", "12000"),
    ("Training day", "1800"),
    ("Support retainer, monthly", "2500"),
];

const YEAR_MS: u64 = 365 * 86_400_000;

impl Portal {
    /// Portal `index` of the simulator seeded by `seed`, with `size` contacts, at `now`.
    pub(crate) fn seed(seed: u64, index: usize, size: usize, now: u64) -> Portal {
        let id = 20_000_000 + mix(&[seed, index as u64, 0x9075]) % 70_000_000;
        let mut rng = fastrand::Rng::with_seed(mix(&[seed, index as u64, 0x5eed]));
        let mut p = Portal {
            id,
            time_zone: "UTC",
            currency: "USD",
            objects: Object::ALL.iter().map(|o| (*o, BTreeMap::new())).collect(),
            owners: Vec::new(),
            custom: BTreeMap::from([(
                Object::Deals,
                BTreeSet::from(["kantata_project_id".to_owned()]),
            )]),
            next_id: 10_001,
            created: BTreeMap::new(),
        };
        let start = now.saturating_sub(YEAR_MS);
        let when = |rng: &mut fastrand::Rng| {
            let created = start + rng.u64(..YEAR_MS - 3_600_000);
            let updated = created + rng.u64(..(now - created).max(1));
            (created, updated)
        };
        for i in 0..8u64 {
            let (created, updated) = when(&mut rng);
            let first = FIRST[(i as usize) % FIRST.len()];
            let last = LAST[(i as usize * 3) % LAST.len()];
            p.owners.push(json!({
                "id": (700_000 + i * 17).to_string(),
                "email": format!("{}.{}@portal{}.example", first.to_lowercase(), last.to_lowercase(), index + 1),
                "firstName": first,
                "lastName": last,
                "userId": 9_100_000 + i,
                "createdAt": iso(created),
                "updatedAt": iso(updated),
                "archived": false,
                "teams": [],
            }));
        }
        let owner = |rng: &mut fastrand::Rng, owners: &[Value]| {
            owners[rng.usize(..owners.len())]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        };
        let size = size.max(4);
        let companies = (size / 4).max(5);
        let mut company_ids = Vec::new();
        for i in 0..companies {
            let (created, updated) = when(&mut rng);
            let word = WORDS[i % WORDS.len()];
            let suffix = SUFFIX[(i / WORDS.len()) % SUFFIX.len()];
            let n = i / (WORDS.len() * SUFFIX.len());
            let name = if n == 0 {
                format!("{word} {suffix}")
            } else {
                format!("{word} {suffix} {}", n + 1)
            };
            let domain = format!("{}{}.example", name.to_lowercase().replace(' ', "-"), "");
            let props = BTreeMap::from([
                ("name".to_owned(), name),
                ("domain".to_owned(), domain),
                (
                    "industry".to_owned(),
                    INDUSTRY[rng.usize(..INDUSTRY.len())].to_owned(),
                ),
                ("city".to_owned(), "Springfield".to_owned()),
                ("country".to_owned(), "United States".to_owned()),
                ("hubspot_owner_id".to_owned(), owner(&mut rng, &p.owners)),
            ]);
            company_ids.push(p.insert(Object::Companies, props, created, updated));
        }
        for i in 0..size {
            let (created, updated) = when(&mut rng);
            let first = FIRST[rng.usize(..FIRST.len())];
            let last = LAST[rng.usize(..LAST.len())];
            let props = BTreeMap::from([
                ("firstname".to_owned(), first.to_owned()),
                ("lastname".to_owned(), last.to_owned()),
                (
                    "email".to_owned(),
                    format!(
                        "{}.{}.{i}@example.com",
                        first.to_lowercase(),
                        last.to_lowercase()
                    ),
                ),
                ("lifecyclestage".to_owned(), "customer".to_owned()),
                ("hubspot_owner_id".to_owned(), owner(&mut rng, &p.owners)),
            ]);
            let contact = p.insert(Object::Contacts, props, created, updated);
            let company = company_ids[i % company_ids.len()];
            p.link(Object::Contacts, contact, Object::Companies, company);
        }
        let deals = (size / 2).max(6);
        for i in 0..deals {
            let (created, updated) = when(&mut rng);
            let company = company_ids[rng.usize(..company_ids.len())];
            let company_name = p.objects[&Object::Companies][&company].props["name"].clone();
            // About a quarter of the deals are won, the rest spread over the other stages.
            let stage = if i % 4 == 0 {
                "closedwon"
            } else {
                STAGES[rng.usize(..STAGES.len())]
            };
            let lines: Vec<(&str, &str, u32)> = (0..1 + rng.usize(..3))
                .map(|_| {
                    let (name, price) = PRODUCTS[rng.usize(..PRODUCTS.len())];
                    (name, price, 1 + rng.u32(..4))
                })
                .collect();
            let amount: u64 = lines
                .iter()
                .map(|(_, price, q)| price.parse::<u64>().unwrap_or(0) * u64::from(*q))
                .sum();
            let close = iso(updated.min(now));
            let props = BTreeMap::from([
                (
                    "dealname".to_owned(),
                    format!("{company_name}: engagement {}", i + 1),
                ),
                ("amount".to_owned(), amount.to_string()),
                ("deal_currency_code".to_owned(), "USD".to_owned()),
                ("dealstage".to_owned(), stage.to_owned()),
                ("pipeline".to_owned(), "default".to_owned()),
                ("closedate".to_owned(), close),
                ("hubspot_owner_id".to_owned(), owner(&mut rng, &p.owners)),
            ]);
            let deal = p.insert(Object::Deals, props, created, updated);
            p.link(Object::Deals, deal, Object::Companies, company);
            for (name, price, quantity) in lines {
                let props = BTreeMap::from([
                    ("name".to_owned(), name.to_owned()),
                    ("price".to_owned(), price.to_owned()),
                    ("quantity".to_owned(), quantity.to_string()),
                    (
                        "amount".to_owned(),
                        (price.parse::<u64>().unwrap_or(0) * u64::from(quantity)).to_string(),
                    ),
                ]);
                let line = p.insert(Object::LineItems, props, created, updated);
                p.link(Object::LineItems, line, Object::Deals, deal);
            }
        }
        p
    }

    fn insert(
        &mut self,
        object: Object,
        mut props: BTreeMap<String, String>,
        created: u64,
        updated: u64,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        props.insert("hs_object_id".to_owned(), id.to_string());
        props.insert("createdate".to_owned(), iso(created));
        props.insert(object.modified_property().to_owned(), iso(updated));
        self.objects.entry(object).or_default().insert(
            id,
            Rec {
                id,
                props,
                created_ms: created,
                updated_ms: updated,
                archived: false,
                archived_ms: None,
                assoc: BTreeMap::new(),
            },
        );
        id
    }

    /// Associates two records both ways.
    pub(crate) fn link(&mut self, from: Object, a: u64, to: Object, b: u64) {
        if let Some(r) = self.objects.get_mut(&from).and_then(|m| m.get_mut(&a)) {
            r.assoc.entry(to).or_default().insert(b);
        }
        if let Some(r) = self.objects.get_mut(&to).and_then(|m| m.get_mut(&b)) {
            r.assoc.entry(from).or_default().insert(a);
        }
    }

    pub(crate) fn records(&self, object: Object) -> &BTreeMap<u64, Rec> {
        static EMPTY: BTreeMap<u64, Rec> = BTreeMap::new();
        self.objects.get(&object).unwrap_or(&EMPTY)
    }

    pub(crate) fn get(&self, object: Object, id: &str) -> Option<&Rec> {
        let id: u64 = id.trim().parse().ok()?;
        self.records(object).get(&id)
    }

    fn known(&self, object: Object, name: &str) -> bool {
        object.writable().contains(&name)
            || object.computed().contains(&name)
            || self.custom.get(&object).is_some_and(|c| c.contains(name))
    }

    /// The record as a read answers it: the properties asked for (the defaults when none are),
    /// always with the id and the creation and change times, and the associations asked for.
    pub(crate) fn render(
        &self,
        object: Object,
        rec: &Rec,
        properties: Option<&[String]>,
        associations: &[Object],
    ) -> Value {
        let mut props = Map::new();
        let wanted: Vec<String> = match properties {
            Some(list) if !list.is_empty() => list.to_vec(),
            _ => object.defaults().iter().map(|s| (*s).to_owned()).collect(),
        };
        for name in wanted.iter().map(String::as_str).chain([
            "hs_object_id",
            "createdate",
            object.modified_property(),
        ]) {
            if !self.known(object, name) {
                continue;
            }
            props.insert(
                name.to_owned(),
                rec.props.get(name).map_or(Value::Null, |v| json!(v)),
            );
        }
        let mut v = json!({
            "id": rec.id.to_string(),
            "properties": props,
            "createdAt": iso(rec.created_ms),
            "updatedAt": iso(rec.updated_ms),
            "archived": rec.archived,
        });
        if let Some(at) = rec.archived_ms {
            v["archivedAt"] = json!(iso(at));
        }
        let mut assoc = Map::new();
        for to in associations {
            let ids = rec.assoc.get(to).cloned().unwrap_or_default();
            if ids.is_empty() {
                continue;
            }
            let label = association_label(object, *to);
            let results: Vec<Value> = ids
                .iter()
                .map(|id| json!({"id": id.to_string(), "type": label}))
                .collect();
            assoc.insert(to.path().to_owned(), json!({ "results": results }));
        }
        if !assoc.is_empty() {
            v["associations"] = Value::Object(assoc);
        }
        v
    }

    /// Every property of the record, for tests and the demo.
    pub(crate) fn full(&self, object: Object, rec: &Rec) -> Value {
        let names: Vec<String> = rec.props.keys().cloned().collect();
        self.render(object, rec, Some(&names), &Object::ALL)
    }

    /// The problems of `properties` written to `object` (`creating` or not), and the
    /// properties as they would be stored.
    fn check_properties(
        &self,
        object: Object,
        properties: Option<&Value>,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        let Some(map) = properties.and_then(Value::as_object) else {
            return Err(Refusal::Invalid(vec![(
                "properties must be an object of property names and values".to_owned(),
                "INVALID_INPUT",
                "properties".to_owned(),
            )]));
        };
        for (name, value) in map {
            if !self.known(object, name) {
                problems.push((
                    format!("Property \"{name}\" does not exist"),
                    "PROPERTY_DOESNT_EXIST",
                    name.clone(),
                ));
                continue;
            }
            if object.computed().contains(&name.as_str()) {
                problems.push((
                    format!("\"{name}\" is a read only property; its value cannot be set."),
                    "READ_ONLY_VALUE",
                    name.clone(),
                ));
                continue;
            }
            let text = match value {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    problems.push((
                        format!("{other} was not a valid value for {name}"),
                        "INVALID_OPTION",
                        name.clone(),
                    ));
                    continue;
                }
            };
            let numeric = matches!(name.as_str(), "amount" | "price" | "quantity");
            if numeric && !text.is_empty() && text.trim().parse::<f64>().is_err() {
                problems.push((
                    format!("{text} was not a valid number."),
                    "INVALID_INTEGER",
                    name.clone(),
                ));
                continue;
            }
            if name == "dealstage" && !text.is_empty() && !STAGES.contains(&text.as_str()) {
                problems.push((
                    format!(
                        "{text} was not one of the allowed options: {}",
                        STAGES.join(", ")
                    ),
                    "INVALID_OPTION",
                    name.clone(),
                ));
                continue;
            }
            if name == "closedate" && !text.is_empty() && super::util::instant(&text).is_none() {
                problems.push((
                    format!("{text} was not a valid date"),
                    "INVALID_DATE",
                    name.clone(),
                ));
                continue;
            }
            if name == "email" && !text.is_empty() && !is_email(&text) {
                problems.push((
                    format!("Email address {text} is invalid"),
                    "INVALID_EMAIL",
                    name.clone(),
                ));
                continue;
            }
            let text = if name == "email" {
                text.trim().to_lowercase()
            } else {
                text
            };
            out.insert(name.clone(), text);
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(Refusal::Invalid(problems))
        }
    }

    /// The contact other than `except` holding `email`.
    fn email_owner(&self, email: &str, except: Option<u64>) -> Option<u64> {
        self.records(Object::Contacts)
            .values()
            .find(|r| {
                !r.archived
                    && Some(r.id) != except
                    && r.props.get("email").is_some_and(|e| e == email)
            })
            .map(|r| r.id)
    }

    /// Checks one create input: its properties as stored, and the associations it asks for.
    pub(crate) fn check_create(
        &self,
        object: Object,
        input: &Value,
        taken: &BTreeSet<String>,
    ) -> Result<(Props, Vec<Link>), Refusal> {
        let props = self.check_properties(object, input.get("properties"))?;
        if object == Object::Contacts
            && let Some(email) = props.get("email").filter(|e| !e.is_empty())
        {
            if let Some(existing) = self.email_owner(email, None) {
                return Err(Refusal::Conflict {
                    message: format!("Contact already exists. Existing ID: {existing}"),
                });
            }
            if taken.contains(email) {
                return Err(Refusal::Conflict {
                    message: format!("Duplicate email in the batch: {email}"),
                });
            }
        }
        let mut links = Vec::new();
        for a in input
            .get("associations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let to_id = a["to"]["id"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| a["to"]["id"].as_u64().map(|n| n.to_string()))
                .unwrap_or_default();
            let types: Vec<u64> = a["types"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["associationTypeId"].as_u64())
                .collect();
            let target = types.first().and_then(|t| association_target(object, *t));
            let Some(target) = target else {
                return Err(Refusal::Invalid(vec![(
                    format!(
                        "association type {types:?} is not defined from {}",
                        object.path()
                    ),
                    "INVALID_ASSOCIATION",
                    "associations".to_owned(),
                )]));
            };
            let Some(rec) = self.get(target, &to_id).filter(|r| !r.archived) else {
                return Err(Refusal::Invalid(vec![(
                    format!("{} {to_id} does not exist", target.upper()),
                    "INVALID_ASSOCIATION",
                    "associations".to_owned(),
                )]));
            };
            links.push((target, rec.id));
        }
        Ok((props, links))
    }

    /// Creates a checked record; returns its id.
    pub(crate) fn create(
        &mut self,
        object: Object,
        props: BTreeMap<String, String>,
        links: &[(Object, u64)],
        now: u64,
    ) -> u64 {
        let id = self.insert(object, props, now, now);
        for (to, other) in links {
            self.link(object, id, *to, *other);
        }
        *self.created.entry(object).or_default() += 1;
        id
    }

    /// Checks one update: the properties it would set.
    pub(crate) fn check_update(
        &self,
        object: Object,
        id: &str,
        properties: Option<&Value>,
    ) -> Result<(u64, BTreeMap<String, String>), Refusal> {
        let Some(rec) = self.get(object, id).filter(|r| !r.archived) else {
            return Err(Refusal::NotFound(id.to_owned()));
        };
        let props = self.check_properties(object, properties)?;
        if object == Object::Contacts
            && let Some(email) = props.get("email").filter(|e| !e.is_empty())
            && let Some(existing) = self.email_owner(email, Some(rec.id))
        {
            return Err(Refusal::Conflict {
                message: format!(
                    "A contact with the email '{email}' already exists. Existing ID: {existing}"
                ),
            });
        }
        Ok((rec.id, props))
    }

    /// Applies a checked update: only the properties sent change.
    pub(crate) fn update(
        &mut self,
        object: Object,
        id: u64,
        props: BTreeMap<String, String>,
        now: u64,
    ) {
        let modified = object.modified_property();
        if let Some(rec) = self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            for (k, v) in props {
                if v.is_empty() {
                    rec.props.remove(&k);
                } else {
                    rec.props.insert(k, v);
                }
            }
            if object == Object::LineItems {
                let price = rec.props.get("price").and_then(|p| p.parse::<f64>().ok());
                let quantity = rec
                    .props
                    .get("quantity")
                    .and_then(|q| q.parse::<f64>().ok());
                if let (Some(p), Some(q)) = (price, quantity) {
                    rec.props.insert("amount".to_owned(), (p * q).to_string());
                }
            }
            // A change time never goes back, and moves on at each change.
            let at = now.max(rec.updated_ms + 1);
            rec.updated_ms = at;
            rec.props.insert(modified.to_owned(), iso(at));
        }
    }

    /// Archives a record (HubSpot's delete); `false` when there is none.
    pub(crate) fn archive(&mut self, object: Object, id: &str, now: u64) -> bool {
        let Ok(id) = id.trim().parse::<u64>() else {
            return false;
        };
        match self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            Some(rec) if !rec.archived => {
                rec.archived = true;
                rec.archived_ms = Some(now);
                true
            }
            _ => false,
        }
    }
}

fn is_email(s: &str) -> bool {
    let s = s.trim();
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
}
