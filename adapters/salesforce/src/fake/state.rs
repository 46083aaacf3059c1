//! The org's data: tables of records, validation, ids, timestamps, tokens.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crmsync_core::{MANAGE_SYNC, MANAGE_USERS};
use crmsync_fake::Tokens;
use serde_json::{Map, Value, json};

use super::REFRESH_TOKEN;
use super::schema::{ObjDef, SYNC_KEY, Ty, Val, id15, make_id, object, object_of_id, parse_time};
use super::soql::{self, Db, Rec};

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
#[derive(Debug)]
pub(crate) struct State {
    pub tables: BTreeMap<&'static str, BTreeMap<String, Rec>>,
    next_id: u64,
    clock_offset: Duration,
    last_stamp: DateTime<Utc>,
    pub earliest_deleted: DateTime<Utc>,
    pub uri: String,
    pub api_version: String,
    /// Access tokens and refresh tokens (the principal is the integration user).
    pub tokens: Tokens<()>,
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

impl Db for State {
    fn rows(&self, obj: &'static ObjDef, all: bool) -> Vec<&Rec> {
        self.tables
            .get(obj.name)
            .map(|t| t.values().filter(|r| all || r.get("IsDeleted") != Some(&Val::Bool(true))).collect())
            .unwrap_or_default()
    }
    fn by_id(&self, id: &str) -> Option<(&'static ObjDef, &Rec)> {
        let obj = object_of_id(id)?;
        let r = self.find(obj, id)?;
        (r.get("IsDeleted") != Some(&Val::Bool(true))).then_some((obj, r))
    }
}

fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((l, d)) => {
            !l.is_empty()
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
                && !s.contains(char::is_whitespace)
                && !d.contains('@')
        }
        None => false,
    }
}

fn truncate(s: &str, n: usize) -> String {
    let t: String = s.chars().take(n).collect();
    if t.len() < s.len() { format!("{t}...") } else { t }
}

impl State {
    pub fn new() -> Self {
        let mut st = State {
            tables: BTreeMap::new(),
            next_id: 0,
            clock_offset: Duration::zero(),
            last_stamp: DateTime::<Utc>::MIN_UTC,
            earliest_deleted: Utc::now() - Duration::days(15),
            uri: String::new(),
            api_version: "62.0".into(),
            tokens: Tokens::default(),
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
        for t in self.tables.values_mut() {
            t.retain(|_, r| r.get("IsDeleted") != Some(&Val::Bool(true)));
        }
        self.earliest_deleted = now;
    }

    pub fn issue_token(&mut self) -> String {
        self.tokens.issue("00D5g000004FAKE!AR.fake-session-", ())
    }

    pub fn find(&self, obj: &ObjDef, id: &str) -> Option<&Rec> {
        let t = self.tables.get(obj.name)?;
        if id.len() == 18 {
            return t.get(id);
        }
        t.iter().find(|(k, _)| id15(k) == id15(id)).map(|(_, r)| r)
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
                    if !is_email(s) {
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
                let dup = self.rows(obj, false).into_iter().find(|r| {
                    r.get(SYNC_KEY).and_then(Val::as_str).is_some_and(|k| k.eq_ignore_ascii_case(key))
                        && r.get("Id").and_then(Val::as_str) != own.as_deref()
                });
                if let Some(d) = dup {
                    let did = d.get("Id").and_then(Val::as_str).unwrap_or_default();
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
        self.tables.entry(obj.name).or_default().insert(id.clone(), rec);
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
        let rec = self.tables.get_mut(obj.name).and_then(|t| t.get_mut(&canon)).expect("found above");
        if rec.get("IsDeleted") == Some(&Val::Bool(true)) {
            return Err(RecErr::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        rec.insert("IsDeleted", Val::Bool(true));
        rec.insert("SystemModstamp", Val::DateTime(t));
        rec.insert("LastModifiedDate", Val::DateTime(t));
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
        let matches: Vec<String> = self
            .rows(obj, false)
            .into_iter()
            .filter(|r| r.get(field).and_then(Val::as_str).is_some_and(|k| k.eq_ignore_ascii_case(value)))
            .filter_map(|r| r.get("Id").and_then(Val::as_str).map(str::to_owned))
            .collect();
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
