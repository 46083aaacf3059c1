//! The org's data: tables of records, validation, ids, timestamps, tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crmsync_core::{MANAGE_SYNC, MANAGE_USERS};
use crmsync_fake::Tokens;
use serde_json::{Map, Value, json};

use super::REFRESH_TOKEN;
use super::schema::{ObjDef, SYNC_KEY, Ty, Val, id15, make_id, object, object_of_id, parse_time};
use super::soql::{self, Db, Rec};

mod relations;

/// A per-record error as Salesforce reports it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecErr {
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecErr {
    pub fn new(code: &'static str, message: impl Into<String>, fields: &[&str]) -> Self {
        Self { code, message: message.into(), fields: fields.iter().map(|f| f.to_string()).collect() }
    }
    /// REST form: `{"message","errorCode","fields"}`.
    pub fn rest(&self) -> Value {
        json!({"message": self.message, "errorCode": self.code, "fields": self.fields})
    }
    /// Collections form: `{"statusCode","message","fields"}`.
    pub fn collection(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// The org's state.
#[derive(Clone, Debug)]
pub(crate) struct State {
    /// Records by object and 18-character id, with their indexes (kept together: a rollback
    /// restores both).
    pub data: Data,
    next_id: u64,
    clock_offset: Duration,
    last_stamp: DateTime<Utc>,
    pub earliest_deleted: DateTime<Utc>,
    pub uri: String,
    pub api_version: String,
    /// Access tokens and refresh tokens (the principal is the integration user).
    pub tokens: Tokens<()>,
    /// Access tokens of the authorization-code flow (the principal is the signed-in user; they
    /// serve `userinfo`), and the codes waiting for their exchange.
    pub(crate) user_tokens: Tokens<String>,
    pub(crate) auth_codes: HashMap<String, super::authorize::Grant>,
    pub token_seq_locator: u64,
    pub integration_user: String,
    /// Open query cursors: locator → (rows, page size).
    pub locators: HashMap<String, (Vec<Value>, usize)>,
    pub locator_order: std::collections::VecDeque<String>,
    pub api_used: u64,
    pub api_max: u64,
    pub page_size: usize,
    admin_ps: String,
    standard_ps: String,
    admin_profile: String,
    standard_profile: String,
    sync_ps: String,
}

/// The fields whose values are indexed (live records only), with the folding they compare by.
const INDEXED: [&str; 4] = [SYNC_KEY, "OwnerId", "Email", "EventId"];

/// The folded form of an indexed value: ids compare on 15 characters, text case-insensitively.
pub(crate) fn fold_value(field: &str, value: &str) -> String {
    if field.eq_ignore_ascii_case("OwnerId") || field.eq_ignore_ascii_case("EventId") {
        id15(value).to_owned()
    } else {
        value.to_lowercase()
    }
}

/// The tables and their indexes, so no write and no keyed look-up scans a table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Data {
    pub tables: BTreeMap<&'static str, BTreeMap<String, Rec>>,
    /// (object, indexed field, folded value) → ids of live records holding it.
    by_value: HashMap<(&'static str, &'static str, String), BTreeSet<String>>,
    /// 15-character id → 18-character id, for every record.
    id15: HashMap<String, String>,
}

impl Data {
    fn values(rec: &Rec) -> impl Iterator<Item = (&'static str, String)> + '_ {
        INDEXED.into_iter().filter_map(|f| rec.get(f).and_then(Val::as_str).map(|v| (f, fold_value(f, v))))
    }

    fn unindex(&mut self, obj: &'static str, id: &str, rec: &Rec) {
        for (f, v) in Self::values(rec) {
            if let Some(ids) = self.by_value.get_mut(&(obj, f, v.clone())) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_value.remove(&(obj, f, v));
                }
            }
        }
    }

    /// Store a record (insert or replace) and index it.
    pub fn put(&mut self, obj: &'static str, id: String, rec: Rec) {
        let live = rec.get("IsDeleted") != Some(&Val::Bool(true));
        let new: Vec<(&'static str, String)> = if live { Self::values(&rec).collect() } else { vec![] };
        self.id15.insert(id15(&id).to_owned(), id.clone());
        if let Some(old) = self.tables.entry(obj).or_default().insert(id.clone(), rec) {
            self.unindex(obj, &id, &old);
        }
        for (f, v) in new {
            self.by_value.entry((obj, f, v)).or_default().insert(id.clone());
        }
    }

    /// Drop deleted records (the recycle bin emptied).
    pub fn purge_deleted(&mut self) {
        for t in self.tables.values_mut() {
            t.retain(|_, r| r.get("IsDeleted") != Some(&Val::Bool(true)));
        }
        let tables = &self.tables;
        self.id15
            .retain(|_, id| object_of_id(id).is_some_and(|o| tables.get(o.name).is_some_and(|t| t.contains_key(id))));
    }

    /// The ids of live `obj` records whose indexed `field` folds to `folded`; `None` when the
    /// field is not indexed.
    pub fn ids_with(&self, obj: &'static str, field: &str, folded: &str) -> Option<Vec<&String>> {
        let f = INDEXED.into_iter().find(|f| f.eq_ignore_ascii_case(field))?;
        Some(self.by_value.get(&(obj, f, folded.to_owned())).map(|ids| ids.iter().collect()).unwrap_or_default())
    }
}

impl Db for State {
    fn rows(&self, obj: &'static ObjDef, all: bool) -> Vec<&Rec> {
        self.data
            .tables
            .get(obj.name)
            .map(|t| t.values().filter(|r| all || r.get("IsDeleted") != Some(&Val::Bool(true))).collect())
            .unwrap_or_default()
    }
    fn lookup(&self, obj: &'static ObjDef, field: &str, folded: &[String]) -> Option<Vec<&Rec>> {
        let table = self.data.tables.get(obj.name);
        let mut ids: BTreeSet<&String> = BTreeSet::new();
        if field.eq_ignore_ascii_case("Id") {
            ids.extend(folded.iter().filter_map(|k| self.data.id15.get(k.as_str())));
        } else {
            for k in folded {
                ids.extend(self.data.ids_with(obj.name, field, k)?);
            }
        }
        Some(
            ids.into_iter()
                .filter_map(|id| table?.get(id))
                .filter(|r| r.get("IsDeleted") != Some(&Val::Bool(true)))
                .collect(),
        )
    }
    fn by_id(&self, id: &str) -> Option<(&'static ObjDef, &Rec)> {
        let obj = object_of_id(id)?;
        let r = self.find(obj, id)?;
        (r.get("IsDeleted") != Some(&Val::Bool(true))).then_some((obj, r))
    }
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() { format!("{t}...") } else { t }
}

impl State {
    pub fn new() -> Self {
        let mut st = State {
            data: Data::default(),
            next_id: 0,
            clock_offset: Duration::zero(),
            last_stamp: DateTime::<Utc>::MIN_UTC,
            earliest_deleted: Utc::now() - Duration::days(15),
            uri: String::new(),
            api_version: "62.0".into(),
            tokens: Tokens::default(),
            user_tokens: Tokens::default(),
            auth_codes: HashMap::new(),
            token_seq_locator: 0,
            integration_user: String::new(),
            locators: HashMap::new(),
            locator_order: Default::default(),
            api_used: 0,
            api_max: 15_000,
            page_size: 2000,
            admin_ps: String::new(),
            standard_ps: String::new(),
            admin_profile: String::new(),
            standard_profile: String::new(),
            sync_ps: String::new(),
        };
        st.tokens.add_refresh(REFRESH_TOKEN, ());
        st.seed_setup();
        st
    }

    /// Profiles, their permission sets, the `Manage_Sync` custom permission granted by the
    /// `CrmSync_Admin` permission set, and the integration user the API runs as.
    fn seed_setup(&mut self) {
        let ins = |st: &mut State, obj: &str, v: Value| st.insert_raw(obj, v).expect("seed record is valid");
        self.admin_profile = ins(self, "Profile", json!({"Name": "System Administrator"}));
        self.standard_profile = ins(self, "Profile", json!({"Name": "Standard User"}));
        let (ap, sp) = (self.admin_profile.clone(), self.standard_profile.clone());
        self.admin_ps = ins(
            self,
            "PermissionSet",
            json!({"Name": "X00ex000000admin", "Label": "System Administrator", "IsOwnedByProfile": true, "ProfileId": ap, "PermissionsManageUsers": true}),
        );
        self.standard_ps = ins(
            self,
            "PermissionSet",
            json!({"Name": "X00ex000000std", "Label": "Standard User", "IsOwnedByProfile": true, "ProfileId": sp, "PermissionsManageUsers": false}),
        );
        let cp = ins(self, "CustomPermission", json!({"DeveloperName": "Manage_Sync", "MasterLabel": "Manage Sync"}));
        self.sync_ps = ins(
            self,
            "PermissionSet",
            json!({"Name": "CrmSync_Admin", "Label": "CrmSync Admin", "IsOwnedByProfile": false, "PermissionsManageUsers": false}),
        );
        let sps = self.sync_ps.clone();
        ins(
            self,
            "SetupEntityAccess",
            json!({"ParentId": sps, "SetupEntityId": cp, "SetupEntityType": "CustomPermission"}),
        );
        self.integration_user = self.add_user("CrmSync Integration", &[MANAGE_USERS]);
    }

    pub fn add_user(&mut self, name: &str, permissions: &[&str]) -> String {
        let (first, last) = match name.trim().rsplit_once(' ') {
            Some((f, l)) => (Some(f.to_owned()), l.to_owned()),
            None => (None, name.trim().to_owned()),
        };
        let login: String = name.to_lowercase().chars().filter(char::is_ascii_alphanumeric).collect();
        let n = self.next_id + 1;
        let username = format!("{login}.{n}@fake-org.example");
        let admin = permissions.contains(&MANAGE_USERS);
        let profile = if admin { self.admin_profile.clone() } else { self.standard_profile.clone() };
        let id = self
            .insert_raw(
                "User",
                json!({"Name": name, "FirstName": first, "LastName": last, "Email": username, "Username": username, "IsActive": true, "ProfileId": profile}),
            )
            .expect("valid user");
        let ps = if admin { self.admin_ps.clone() } else { self.standard_ps.clone() };
        self.insert_raw("PermissionSetAssignment", json!({"AssigneeId": id, "PermissionSetId": ps})).expect("valid");
        if permissions.contains(&MANAGE_SYNC) {
            let ps = self.sync_ps.clone();
            self.insert_raw("PermissionSetAssignment", json!({"AssigneeId": id, "PermissionSetId": ps}))
                .expect("valid");
        }
        id
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.clock_offset
    }

    /// The newest timestamp handed out.
    pub fn last_stamp(&self) -> DateTime<Utc> {
        self.last_stamp
    }

    /// A fresh timestamp, strictly after every earlier one (millisecond precision).
    fn stamp(&mut self) -> DateTime<Utc> {
        let now = self.now();
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let t = if now > self.last_stamp { now } else { self.last_stamp + Duration::milliseconds(1) };
        self.last_stamp = t;
        t
    }

    /// Make every incremental-sync position older than the deleted-records window: the
    /// clock jumps 16 days and the recycle bin is emptied.
    pub fn expire_cursors(&mut self) {
        self.clock_offset += Duration::days(16);
        let now = self.now();
        self.data.purge_deleted();
        self.earliest_deleted = now;
    }

    pub fn issue_token(&mut self) -> String {
        self.tokens.issue("00D5g000004FAKE!AR.fake-session-", ())
    }

    pub fn find(&self, obj: &ObjDef, id: &str) -> Option<&Rec> {
        let t = self.data.tables.get(obj.name)?;
        if id.len() == 18 {
            return t.get(id);
        }
        t.get(self.data.id15.get(id15(id))?)
    }

    fn canonical_id(&self, obj: &ObjDef, id: &str) -> Option<String> {
        self.find(obj, id).and_then(|r| r.get("Id")).and_then(Val::as_str).map(str::to_owned)
    }

    /// Seed write without validation errors expected (panics are the caller's bug).
    fn insert_raw(&mut self, obj: &str, v: Value) -> Result<String, RecErr> {
        let obj = object(obj).expect("known object");
        let mut m = v.as_object().cloned().unwrap_or_default();
        m.retain(|_, v| !v.is_null());
        let actor = self.integration_user.clone();
        self.write(obj, None, &m, &actor, true)
    }

    /// Validate and apply an insert (`id` = None) or update. `system` allows read-only fields
    /// (seeding only).
    pub fn write(
        &mut self,
        obj: &'static ObjDef,
        id: Option<&str>,
        input: &Map<String, Value>,
        actor: &str,
        system: bool,
    ) -> Result<String, RecErr> {
        let mut rec: Rec = match id {
            Some(id) => match self.find(obj, id) {
                Some(r) if r.get("IsDeleted") == Some(&Val::Bool(true)) => {
                    return Err(RecErr::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
                }
                Some(r) => r.clone(),
                None => return Err(RecErr::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[])),
            },
            None => Rec::new(),
        };
        let lookup = |r: &Rec, f: &str| r.get(f).and_then(Val::as_str).map(str::to_owned);
        let (old_who, old_what) = (lookup(&rec, "WhoId"), lookup(&rec, "WhatId"));
        let mut written: BTreeSet<&'static str> = BTreeSet::new();
        let mut readonly = vec![];
        for (k, v) in input {
            if k == "attributes" || (id.is_some() && k.eq_ignore_ascii_case("id")) {
                continue;
            }
            let Some(f) = obj.field(k) else {
                return Err(RecErr::new(
                    "INVALID_FIELD",
                    format!("No such column '{k}' on sobject of type {}", obj.name),
                    &[],
                ));
            };
            if !f.writable && !system {
                readonly.push(f.name);
                continue;
            }
            let val = match (f.ty, v) {
                (_, Value::Null) => Val::Null,
                (Ty::Str(n), Value::String(s)) => {
                    if s.chars().count() > n {
                        return Err(RecErr::new(
                            "STRING_TOO_LONG",
                            format!("{}: data value too large: {} (max length={n})", f.label, truncate(s, 20)),
                            &[f.name],
                        ));
                    }
                    Val::Str(s.clone())
                }
                (Ty::Email, Value::String(s)) => {
                    if s.chars().count() > 80 {
                        return Err(RecErr::new(
                            "STRING_TOO_LONG",
                            format!("{}: data value too large: {} (max length=80)", f.label, truncate(s, 20)),
                            &[f.name],
                        ));
                    }
                    if s.contains(char::is_whitespace) || !crmsync_core::model::is_valid_email(s) {
                        return Err(RecErr::new(
                            "INVALID_EMAIL_ADDRESS",
                            format!("{}: invalid email address: {s}", f.label),
                            &[f.name],
                        ));
                    }
                    Val::Str(s.clone())
                }
                (Ty::Picklist(values), Value::String(s)) => {
                    if !values.contains(&s.as_str()) {
                        return Err(RecErr::new(
                            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                            format!("{}: bad value for restricted picklist field: {s}", f.label),
                            &[f.name],
                        ));
                    }
                    Val::Str(s.clone())
                }
                (Ty::Id | Ty::Ref(_), Value::String(s)) => {
                    if !(matches!(s.len(), 15 | 18) && s.chars().all(|c| c.is_ascii_alphanumeric())) {
                        return Err(RecErr::new(
                            "MALFORMED_ID",
                            format!("{}: id value of incorrect type: {s}", f.label),
                            &[f.name],
                        ));
                    }
                    if let Ty::Ref(targets) = f.ty {
                        let target = targets.iter().filter_map(|t| object(t)).find(|o| s.starts_with(o.prefix));
                        match target.and_then(|o| self.canonical_id(o, s).filter(|_| self.by_id(s).is_some())) {
                            Some(canon) => Val::Str(canon),
                            None => {
                                return Err(RecErr::new(
                                    "INVALID_CROSS_REFERENCE_KEY",
                                    format!("{}: id value of incorrect type: {s}", f.label),
                                    &[f.name],
                                ));
                            }
                        }
                    } else {
                        Val::Str(s.clone())
                    }
                }
                (Ty::Bool, Value::Bool(b)) => Val::Bool(*b),
                (Ty::Int, Value::Number(n)) if n.as_i64().is_some() => Val::Int(n.as_i64().unwrap_or_default()),
                (Ty::DateTime, Value::String(s)) => match parse_time(s) {
                    Some(t) => Val::DateTime(t),
                    None => {
                        return Err(RecErr::new(
                            "JSON_PARSER_ERROR",
                            format!(
                                "Cannot deserialize instance of datetime from VALUE_STRING value {s} or request may be missing a required field"
                            ),
                            &[f.name],
                        ));
                    }
                },
                (Ty::Date, Value::String(s)) => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                    Ok(d) => Val::Date(d),
                    Err(_) => {
                        return Err(RecErr::new(
                            "JSON_PARSER_ERROR",
                            format!(
                                "Cannot deserialize instance of date from VALUE_STRING value {s} or request may be missing a required field"
                            ),
                            &[f.name],
                        ));
                    }
                },
                (_, other) => {
                    return Err(RecErr::new(
                        "JSON_PARSER_ERROR",
                        format!(
                            "Cannot deserialize instance of {} from {other} value or request may be missing a required field",
                            f.name
                        ),
                        &[f.name],
                    ));
                }
            };
            written.insert(f.name);
            rec.insert(f.name, val);
        }
        if !readonly.is_empty() {
            return Err(RecErr::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                    readonly.join(", ")
                ),
                &readonly,
            ));
        }
        if obj.name == "Event" {
            derive_event_times(&mut rec, &written)?;
            rec.entry("IsPrivate").or_insert(Val::Bool(false));
            rec.entry("ShowAs").or_insert(Val::Str("Busy".into()));
            for f in ["IsRecurrence2", "IsChild", "IsGroupEvent"] {
                rec.entry(f).or_insert(Val::Bool(false));
            }
        }
        if obj.name == "EventRelation" {
            self.check_relation(&mut rec, id)?;
        }
        let missing: Vec<&str> =
            obj.required.iter().copied().filter(|f| matches!(rec.get(f), None | Some(Val::Null))).collect();
        if !missing.is_empty() {
            return Err(RecErr::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
                &missing,
            ));
        }
        if obj.is_external_id(SYNC_KEY) {
            if let Some(Val::Str(key)) = rec.get(SYNC_KEY) {
                let own = id.and_then(|i| self.canonical_id(obj, i));
                let dup = self
                    .data
                    .ids_with(obj.name, SYNC_KEY, &fold_value(SYNC_KEY, key))
                    .unwrap_or_default()
                    .into_iter()
                    .find(|d| Some(d.as_str()) != own.as_deref())
                    .cloned();
                if let Some(did) = dup {
                    return Err(RecErr::new(
                        "DUPLICATE_VALUE",
                        format!("duplicate value found: {SYNC_KEY} duplicates value on record with id: {did}"),
                        &[SYNC_KEY],
                    ));
                }
            }
        }
        if matches!(obj.name, "Contact" | "Event" | "Account") && matches!(rec.get("OwnerId"), None | Some(Val::Null)) {
            rec.insert("OwnerId", Val::Str(actor.to_owned()));
        }
        let t = self.stamp();
        let id = match id {
            Some(i) => self.canonical_id(obj, i).expect("checked above"),
            None => {
                self.next_id += 1;
                let id = make_id(obj.prefix, self.next_id);
                rec.insert("Id", Val::Str(id.clone()));
                rec.insert("IsDeleted", Val::Bool(false));
                rec.insert("CreatedDate", Val::DateTime(t));
                rec.insert("CreatedById", Val::Str(actor.to_owned()));
                id
            }
        };
        rec.insert("LastModifiedDate", Val::DateTime(t));
        rec.insert("LastModifiedById", Val::Str(actor.to_owned()));
        rec.insert("SystemModstamp", Val::DateTime(t));
        let (new_who, new_what) = (lookup(&rec, "WhoId"), lookup(&rec, "WhatId"));
        self.data.put(obj.name, id.clone(), rec.clone());
        match obj.name {
            "Event" => {
                self.follow(&id, false, old_who.as_deref(), new_who.as_deref())?;
                self.follow(&id, true, old_what.as_deref(), new_what.as_deref())?;
            }
            "EventRelation" => self.after_relation_write(&rec),
            _ => {}
        }
        Ok(id)
    }

    /// Move a record to the recycle bin (`IsDeleted = true`, visible to `queryAll`).
    pub fn delete(&mut self, obj: Option<&'static ObjDef>, id: &str) -> Result<String, RecErr> {
        let Some(obj) = obj.or_else(|| object_of_id(id)) else {
            return Err(RecErr::new("MALFORMED_ID", format!("malformed id {id}"), &[]));
        };
        let Some(canon) = self.canonical_id(obj, id) else {
            return Err(RecErr::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]));
        };
        let t = self.stamp();
        let Some(mut rec) = self.find(obj, &canon).cloned() else {
            return Err(RecErr::new("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", &[]));
        };
        if rec.get("IsDeleted") == Some(&Val::Bool(true)) {
            return Err(RecErr::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        rec.insert("IsDeleted", Val::Bool(true));
        rec.insert("SystemModstamp", Val::DateTime(t));
        rec.insert("LastModifiedDate", Val::DateTime(t));
        self.data.put(obj.name, canon.clone(), rec.clone());
        self.after_delete(obj.name, &rec);
        Ok(canon)
    }

    /// Upsert by external id: create when no record has `value`, update the one that has it;
    /// several matches → `Err(ids)`.
    pub fn upsert(
        &mut self,
        obj: &'static ObjDef,
        field: &str,
        value: &str,
        input: &Map<String, Value>,
        actor: &str,
    ) -> Result<Result<(String, bool), RecErr>, Vec<String>> {
        let matches: Vec<String> = match self.data.ids_with(obj.name, field, &fold_value(field, value)) {
            Some(ids) => ids.into_iter().cloned().collect(),
            None => self
                .rows(obj, false)
                .into_iter()
                .filter(|r| r.get(field).and_then(Val::as_str).is_some_and(|k| k.eq_ignore_ascii_case(value)))
                .filter_map(|r| r.get("Id").and_then(Val::as_str).map(str::to_owned))
                .collect(),
        };
        let mut m = input.clone();
        m.insert(field.to_owned(), json!(value));
        match matches.as_slice() {
            [] => Ok(self.write(obj, None, &m, actor, false).map(|id| (id, true))),
            [one] => {
                let one = one.clone();
                Ok(self.write(obj, Some(&one), &m, actor, false).map(|id| (id, false)))
            }
            many => Err(many.to_vec()),
        }
    }

    /// A record as JSON with every field (or `fields`), as `GET /sobjects/T/id` returns it.
    pub fn record_json(&self, obj: &'static ObjDef, rec: &Rec, fields: Option<&[String]>) -> Value {
        let mut m = Map::new();
        m.insert("attributes".into(), soql::attributes(obj, rec.get("Id").and_then(Val::as_str), &self.api_version));
        for f in obj.fields {
            if fields.is_none_or(|fs| fs.iter().any(|x| x.eq_ignore_ascii_case(f.name))) {
                m.insert(f.name.to_owned(), soql::get(obj, rec, f).to_json());
            }
        }
        Value::Object(m)
    }

    pub fn each(&self, obj: &str, mut f: impl FnMut(&Value)) {
        let o = object(obj).expect("known object");
        for r in self.rows(o, false) {
            f(&self.record_json(o, r, None));
        }
    }

    pub fn snapshot(&self, obj: &str, all: bool) -> Vec<Value> {
        let o = object(obj).expect("known object");
        self.rows(o, all).into_iter().map(|r| self.record_json(o, r, None)).collect()
    }
}

/// Salesforce keeps StartDateTime, EndDateTime, DurationInMinutes, ActivityDate and
/// ActivityDateTime consistent; all-day events are anchored at midnight UTC.
fn derive_event_times(rec: &mut Rec, written: &BTreeSet<&'static str>) -> Result<(), RecErr> {
    let get_dt = |r: &Rec, f: &str| match r.get(f) {
        Some(Val::DateTime(t)) => Some(*t),
        _ => None,
    };
    let all_day = rec.get("IsAllDayEvent") == Some(&Val::Bool(true));
    let duration = match rec.get("DurationInMinutes") {
        Some(Val::Int(i)) => Some(*i),
        _ => None,
    };
    if all_day {
        let day = match rec.get("ActivityDate") {
            Some(Val::Date(d)) => *d,
            _ => match get_dt(rec, "StartDateTime") {
                Some(t) => t.date_naive(),
                None => {
                    return Err(RecErr::new(
                        "REQUIRED_FIELD_MISSING",
                        "Required fields are missing: [ActivityDate]",
                        &["ActivityDate"],
                    ));
                }
            },
        };
        let minutes = if written.contains("DurationInMinutes") {
            duration.unwrap_or(1440)
        } else {
            duration.unwrap_or(1440).max(1440)
        };
        let start = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        rec.insert("ActivityDate", Val::Date(day));
        rec.insert("StartDateTime", Val::DateTime(start));
        rec.insert("EndDateTime", Val::DateTime(start + Duration::minutes(minutes)));
        rec.insert("DurationInMinutes", Val::Int(minutes));
        rec.insert("ActivityDateTime", Val::Null);
        return Ok(());
    }
    rec.insert("IsAllDayEvent", Val::Bool(false));
    let Some(start) = get_dt(rec, "StartDateTime").or_else(|| get_dt(rec, "ActivityDateTime")) else {
        return Err(RecErr::new(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [StartDateTime]",
            &["StartDateTime"],
        ));
    };
    let end = if written.contains("EndDateTime") {
        get_dt(rec, "EndDateTime")
    } else if let Some(d) =
        duration.filter(|_| written.contains("DurationInMinutes") || written.contains("StartDateTime"))
    {
        Some(start + Duration::minutes(d))
    } else {
        get_dt(rec, "EndDateTime")
    };
    let Some(end) = end else {
        return Err(RecErr::new(
            "REQUIRED_FIELD_MISSING",
            "Required fields are missing: [DurationInMinutes]",
            &["DurationInMinutes"],
        ));
    };
    if end < start {
        return Err(RecErr::new(
            "FIELD_INTEGRITY_EXCEPTION",
            "End Date Time: End Date Time must be after Start Date Time",
            &["EndDateTime"],
        ));
    }
    rec.insert("StartDateTime", Val::DateTime(start));
    rec.insert("EndDateTime", Val::DateTime(end));
    rec.insert("ActivityDateTime", Val::DateTime(start));
    rec.insert("ActivityDate", Val::Date(start.date_naive()));
    rec.insert("DurationInMinutes", Val::Int((end - start).num_minutes()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn emails(st: &State, obj: &'static ObjDef, email: &str) -> usize {
        st.lookup(obj, "Email", &[fold_value("Email", email)]).map_or(0, |r| r.len())
    }

    #[test]
    fn the_indexes_follow_every_write_delete_purge_and_rollback() {
        let mut st = State::new();
        let contact = object("Contact").expect("known");
        let owner = st.integration_user.clone();
        let id = st
            .write(
                contact,
                None,
                &fields(json!({"LastName": "A", "Email": "A@x.com", SYNC_KEY: "Key-1"})),
                &owner,
                false,
            )
            .unwrap();
        let upserted = st.upsert(contact, SYNC_KEY, "key-1", &fields(json!({"LastName": "B"})), &owner);
        assert_eq!(upserted, Ok(Ok((id.clone(), false))), "the key matches case-insensitively");
        let dup = st.write(contact, None, &fields(json!({"LastName": "C", SYNC_KEY: "KEY-1"})), &owner, false);
        assert_eq!(dup.unwrap_err().code, "DUPLICATE_VALUE");
        assert_eq!(emails(&st, contact, "a@X.com"), 1);
        let by_owner = st.lookup(contact, "OwnerId", &[fold_value("OwnerId", &owner[..15])]).unwrap();
        assert_eq!(by_owner.len(), 1, "owners compare on 15 characters");
        assert!(st.find(contact, &id[..15]).is_some(), "a 15-character id is found");

        st.write(contact, Some(&id), &fields(json!({"Email": "b@x.com"})), &owner, false).unwrap();
        assert_eq!((emails(&st, contact, "a@x.com"), emails(&st, contact, "b@x.com")), (0, 1), "an edit moves it");

        let backup = st.data.clone();
        st.delete(None, &id).unwrap();
        assert_eq!(emails(&st, contact, "b@x.com"), 0, "a deleted record leaves the value indexes");
        let again = st.write(contact, None, &fields(json!({"LastName": "D", SYNC_KEY: "key-1"})), &owner, false);
        assert!(again.is_ok(), "its key is free again");
        st.data = backup;
        assert_eq!(emails(&st, contact, "b@x.com"), 1, "a rollback restores the indexes with the rows");

        st.delete(None, &id).unwrap();
        st.expire_cursors();
        assert!(st.find(contact, &id[..15]).is_none(), "a purged record is gone from the id index");
        assert!(st.lookup(contact, "Id", &[id15(&id).to_owned()]).unwrap().is_empty());
    }
}
