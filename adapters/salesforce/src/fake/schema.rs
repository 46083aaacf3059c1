//! The fake org's objects, field types and values.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Value, json};

/// A stored field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Null,
    Str(String),
    Bool(bool),
    Int(i64),
    DateTime(DateTime<Utc>),
    Date(NaiveDate),
}

impl Val {
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Str(s) => json!(s),
            Val::Bool(b) => json!(b),
            Val::Int(i) => json!(i),
            Val::DateTime(t) => json!(fmt_time(*t)),
            Val::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Salesforce's timestamp format: `2026-01-02T10:00:00.000+0000`.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// Parse an input timestamp (`…Z`, `…+00:00`, `…+0000`, with or without milliseconds).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A field's type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    /// The record's own Id.
    Id,
    /// A lookup to one of these objects.
    Ref(&'static [&'static str]),
    Str(usize),
    Email,
    Bool,
    Int,
    DateTime,
    Date,
    Picklist(&'static [&'static str]),
}

/// One field of an object.
#[derive(Clone, Copy, Debug)]
pub struct FieldDef {
    pub name: &'static str,
    pub label: &'static str,
    pub ty: Ty,
    pub writable: bool,
}

const fn f(name: &'static str, label: &'static str, ty: Ty) -> FieldDef {
    FieldDef { name, label, ty, writable: true }
}
const fn ro(name: &'static str, label: &'static str, ty: Ty) -> FieldDef {
    FieldDef { name, label, ty, writable: false }
}

/// One sObject type.
#[derive(Debug)]
pub struct ObjDef {
    pub name: &'static str,
    pub prefix: &'static str,
    pub fields: &'static [FieldDef],
    /// Fields an insert must leave non-null.
    pub required: &'static [&'static str],
}

const USER: &[&str] = &["User"];

/// The external-id field (unique, case-insensitive) holding crmsync's sync key.
pub const SYNC_KEY: &str = "CrmSync_Key__c";

macro_rules! system_fields {
    () => {
        [
            ro("Id", "Record ID", Ty::Id),
            ro("IsDeleted", "Deleted", Ty::Bool),
            ro("CreatedDate", "Created Date", Ty::DateTime),
            ro("CreatedById", "Created By ID", Ty::Ref(USER)),
            ro("LastModifiedDate", "Last Modified Date", Ty::DateTime),
            ro("LastModifiedById", "Last Modified By ID", Ty::Ref(USER)),
            ro("SystemModstamp", "System Modstamp", Ty::DateTime),
        ]
    };
}

const fn cat<const A: usize, const B: usize, const N: usize>(a: [FieldDef; A], b: [FieldDef; B]) -> [FieldDef; N] {
    let mut out = [a[0]; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    let mut j = 0;
    while j < B {
        out[A + j] = b[j];
        j += 1;
    }
    out
}

static CONTACT_FIELDS: [FieldDef; 24] = cat(
    system_fields!(),
    [
        f("OwnerId", "Owner ID", Ty::Ref(USER)),
        f("AccountId", "Account ID", Ty::Ref(&["Account"])),
        f("FirstName", "First Name", Ty::Str(40)),
        f("LastName", "Last Name", Ty::Str(80)),
        ro("Name", "Full Name", Ty::Str(121)),
        f("Email", "Email", Ty::Email),
        f("Phone", "Business Phone", Ty::Str(40)),
        f("MobilePhone", "Mobile Phone", Ty::Str(40)),
        f("Title", "Title", Ty::Str(128)),
        f("Department", "Department", Ty::Str(80)),
        f("MailingStreet", "Mailing Street", Ty::Str(255)),
        f("MailingCity", "Mailing City", Ty::Str(40)),
        f("MailingState", "Mailing State/Province", Ty::Str(80)),
        f("MailingPostalCode", "Mailing Zip/Postal Code", Ty::Str(20)),
        f("MailingCountry", "Mailing Country", Ty::Str(80)),
        f("Description", "Contact Description", Ty::Str(32000)),
        f(SYNC_KEY, "CrmSync Key", Ty::Str(255)),
    ],
);

static EVENT_FIELDS: [FieldDef; 25] = cat(
    system_fields!(),
    [
        f("OwnerId", "Assigned To ID", Ty::Ref(USER)),
        f("Subject", "Subject", Ty::Str(255)),
        f("StartDateTime", "Start Date Time", Ty::DateTime),
        f("EndDateTime", "End Date Time", Ty::DateTime),
        f("ActivityDateTime", "Due Date Time", Ty::DateTime),
        f("ActivityDate", "Due Date Only", Ty::Date),
        f("DurationInMinutes", "Duration", Ty::Int),
        f("IsAllDayEvent", "All-Day Event", Ty::Bool),
        f("Location", "Location", Ty::Str(255)),
        f("Description", "Description", Ty::Str(32000)),
        f("WhoId", "Name ID", Ty::Ref(&["Contact"])),
        f("WhatId", "Related To ID", Ty::Ref(&["Account"])),
        f("IsPrivate", "Private", Ty::Bool),
        f("ShowAs", "Show Time As", Ty::Picklist(&["Busy", "OutOfOffice", "Free"])),
        ro("IsRecurrence2", "Is Recurring", Ty::Bool),
        ro("IsChild", "Is Child", Ty::Bool),
        ro("IsGroupEvent", "Is Group Event", Ty::Bool),
        f(SYNC_KEY, "CrmSync Key", Ty::Str(255)),
    ],
);

static USER_FIELDS: [FieldDef; 14] = cat(
    system_fields!(),
    [
        f("Name", "Full Name", Ty::Str(121)),
        f("FirstName", "First Name", Ty::Str(40)),
        f("LastName", "Last Name", Ty::Str(80)),
        f("Email", "Email", Ty::Email),
        f("Username", "Username", Ty::Str(80)),
        f("IsActive", "Active", Ty::Bool),
        f("ProfileId", "Profile ID", Ty::Ref(&["Profile"])),
    ],
);

static ACCOUNT_FIELDS: [FieldDef; 9] =
    cat(system_fields!(), [f("Name", "Account Name", Ty::Str(255)), f("OwnerId", "Owner ID", Ty::Ref(USER))]);
static PROFILE_FIELDS: [FieldDef; 8] = cat(system_fields!(), [f("Name", "Name", Ty::Str(255))]);
static PERMSET_FIELDS: [FieldDef; 12] = cat(
    system_fields!(),
    [
        f("Name", "Name", Ty::Str(80)),
        f("Label", "Label", Ty::Str(80)),
        f("IsOwnedByProfile", "Is Owned By Profile", Ty::Bool),
        f("ProfileId", "Profile ID", Ty::Ref(&["Profile"])),
        f("PermissionsManageUsers", "Manage Users", Ty::Bool),
    ],
);
static PSA_FIELDS: [FieldDef; 9] = cat(
    system_fields!(),
    [
        f("AssigneeId", "Assignee ID", Ty::Ref(USER)),
        f("PermissionSetId", "Permission Set ID", Ty::Ref(&["PermissionSet"])),
    ],
);
static CUSTOMPERM_FIELDS: [FieldDef; 9] =
    cat(system_fields!(), [f("DeveloperName", "Name", Ty::Str(80)), f("MasterLabel", "Label", Ty::Str(80))]);
static SEA_FIELDS: [FieldDef; 10] = cat(
    system_fields!(),
    [
        f("ParentId", "Parent ID", Ty::Ref(&["PermissionSet"])),
        f("SetupEntityId", "Setup Entity ID", Ty::Ref(&["CustomPermission"])),
        f("SetupEntityType", "Setup Entity Type", Ty::Str(40)),
    ],
);

static EVENT_RELATION_FIELDS: [FieldDef; 15] = cat(
    system_fields!(),
    [
        f("EventId", "Event ID", Ty::Ref(&["Event"])),
        f("RelationId", "Relation ID", Ty::Ref(&["Contact", "User", "Account"])),
        f("IsInvitee", "Is Invitee", Ty::Bool),
        f("IsParent", "Is Parent", Ty::Bool),
        ro("IsWhat", "Is What", Ty::Bool),
        f("Status", "Status", Ty::Picklist(&["New", "Declined", "Accepted", "Uninvited", "Maybe"])),
        f("Response", "Response", Ty::Str(255)),
        f("RespondedDate", "Response Date", Ty::DateTime),
    ],
);

/// Every object of the fake org.
pub static OBJECTS: &[ObjDef] = &[
    ObjDef { name: "Contact", prefix: "003", fields: &CONTACT_FIELDS, required: &["LastName"] },
    ObjDef { name: "Event", prefix: "00U", fields: &EVENT_FIELDS, required: &[] },
    ObjDef {
        name: "EventRelation",
        prefix: "0RE",
        fields: &EVENT_RELATION_FIELDS,
        required: &["EventId", "RelationId"],
    },
    ObjDef { name: "User", prefix: "005", fields: &USER_FIELDS, required: &["LastName", "Username"] },
    ObjDef { name: "Account", prefix: "001", fields: &ACCOUNT_FIELDS, required: &["Name"] },
    ObjDef { name: "Profile", prefix: "00e", fields: &PROFILE_FIELDS, required: &["Name"] },
    ObjDef { name: "PermissionSet", prefix: "0PS", fields: &PERMSET_FIELDS, required: &["Name"] },
    ObjDef {
        name: "PermissionSetAssignment",
        prefix: "0Pa",
        fields: &PSA_FIELDS,
        required: &["AssigneeId", "PermissionSetId"],
    },
    ObjDef { name: "CustomPermission", prefix: "0CP", fields: &CUSTOMPERM_FIELDS, required: &["DeveloperName"] },
    ObjDef { name: "SetupEntityAccess", prefix: "0J0", fields: &SEA_FIELDS, required: &["ParentId", "SetupEntityId"] },
];

/// The object named `name` (case-insensitive).
pub fn object(name: &str) -> Option<&'static ObjDef> {
    OBJECTS.iter().find(|o| o.name.eq_ignore_ascii_case(name))
}

/// The object whose ids start with the prefix of `id`.
pub fn object_of_id(id: &str) -> Option<&'static ObjDef> {
    OBJECTS.iter().find(|o| id.get(..3) == Some(o.prefix))
}

impl ObjDef {
    pub fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }
    /// Whether `field` is a unique external-id field of this object.
    pub fn is_external_id(&self, field: &str) -> bool {
        matches!(self.name, "Contact" | "Event") && field == SYNC_KEY
    }
}

/// The 18-character form of a 15-character id (case-insensitive checksum suffix).
pub fn id18(id15: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let b = id15.as_bytes();
    let mut out = id15.to_owned();
    for chunk in 0..3 {
        let mut flags = 0usize;
        for j in 0..5 {
            if b[chunk * 5 + j].is_ascii_uppercase() {
                flags |= 1 << j;
            }
        }
        out.push(ALPHA[flags] as char);
    }
    out
}

/// A new 18-character id: prefix, pod `5g`, base-62 sequence number.
pub fn make_id(prefix: &str, n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut body = [b'0'; 10];
    let mut v = n;
    for slot in body.iter_mut().rev() {
        *slot = DIGITS[(v % 62) as usize];
        v /= 62;
    }
    id18(&format!("{prefix}5g{}", std::str::from_utf8(&body).expect("ascii")))
}

/// Normalize an id to its 15-character, case-sensitive form for comparisons.
pub fn id15(id: &str) -> &str {
    id.get(..15).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_documented_checksum() {
        // The example from Salesforce's documentation of 15 → 18 character ids.
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        let id = make_id("003", 12345);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("0035g"));
    }
}
