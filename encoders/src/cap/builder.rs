//! From a small, domain-neutral description of an alert to a complete [`CapAlert`] with one `info` per language.
//!
//! The input names the event type as a string (`"heavy_rain"`), so this module does not depend on the rule engine;
//! the rule engine (or the alert lifecycle) fills a [`CapInput`] and the templates supply every human text.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::geometry::{Circle, Polygon};
use super::message::{
    CapAlert, CapArea, CapInfo, Certainty, InvalidMessage, MsgType, Reference, ResponseType, Scope, Severity, Status,
    Urgency, ValuePair, TW_EVENT_CODE_NAME, TW_GEOCODE_NAME,
};
use super::templates::{fill, FillError, TemplateError, Templates};
use super::times::{whole_seconds, TAIWAN_OFFSET};

/// valueName of the second eventCode, carrying our own event type so our consumers can map a message back.
pub const OWN_EVENT_CODE_NAME: &str = "disaster-cloud:event_type";

/// A text in Traditional Chinese and in English. Languages whose tag starts with `zh` take `zh_tw`, all others `en`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Localized {
    /// Traditional Chinese (Taiwan).
    pub zh_tw: String,
    /// English.
    pub en: String,
}

impl Localized {
    /// Shorthand.
    pub fn new(zh_tw: impl Into<String>, en: impl Into<String>) -> Self {
        Localized { zh_tw: zh_tw.into(), en: en.into() }
    }

    /// The text for a language tag.
    pub fn get(&self, language: &str) -> &str {
        if language.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("zh")) {
            &self.zh_tw
        } else {
            &self.en
        }
    }
}

/// One target area of an alert.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AreaInput {
    /// `areaDesc` per language, e.g. 南投縣信義鄉 / Xinyi Township, Nantou County.
    pub desc: Localized,
    /// Closed rings (build them with [`Polygon::from_ring`]).
    pub polygons: Vec<Polygon>,
    /// Circles, radius in km.
    pub circles: Vec<Circle>,
    /// Taiwan_Geocode_103 codes: 5-digit counties, 7-digit townships (digits only; villages have more).
    pub geocodes: Vec<String>,
}

/// What the alert lifecycle knows about one message it wants to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct CapInput {
    /// Stable per message, e.g. `TW-DC-20261126-0001-v3`; no spaces, commas, `<` or `&`.
    pub identifier: String,
    /// Our sender id (an e-mail or domain style id).
    pub sender: String,
    /// Issue time; written in +08:00.
    pub sent: OffsetDateTime,
    /// Actual / Exercise / Test (the alert's mode); Draft and System also work.
    pub status: Status,
    /// Alert for the first message, Update and Cancel afterwards (both need `references`).
    pub msg_type: MsgType,
    /// The hazard is over: the end texts (`[language.cancel]`) and `responseType` AllClear, on an `Update` (CAP 1.2:
    /// "the subject event no longer poses a threat or concern"). A `Cancel` always carries them too.
    pub all_clear: bool,
    /// Earlier messages of the same alert (usually all of them, oldest first).
    pub references: Vec<Reference>,
    /// Alert-level note; when None and the status is not Actual, the templates' status note is used.
    pub note: Option<String>,
    /// Templates key: heavy_rain, debris_flow, river_level, landslide, road_flood, hazmat_geofence, sensor_silent, …
    pub event_type: String,
    /// Per-level texts of the event type to use (`[event.X.level.<key>]`, from the rule level's `template`);
    /// `None`: the event type's own texts.
    pub level: Option<String>,
    /// CAP urgency.
    pub urgency: Urgency,
    /// CAP severity.
    pub severity: Severity,
    /// CAP certainty.
    pub certainty: Certainty,
    /// When the warning takes effect (None: at `sent`).
    pub effective: Option<OffsetDateTime>,
    /// Expected onset of the hazard.
    pub onset: Option<OffsetDateTime>,
    /// When the warning lapses unless updated.
    pub expires: Option<OffsetDateTime>,
    /// Target areas (at least one).
    pub areas: Vec<AreaInput>,
    /// Link for more information, e.g. the public alert page.
    pub web: Option<String>,
    /// Incident id grouping this alert's messages.
    pub incidents: Option<String>,
    /// Template placeholder values. `{key}` looks up `key@<language>` first (e.g. `station@zh-TW`), then `key`.
    /// Built in, unless given here: `{event}`, `{area}`, `{sent}`, `{effective}`, `{onset}`, `{expires}`.
    pub values: BTreeMap<String, String>,
    /// Extra CAP parameters, copied into every info.
    pub parameters: Vec<ValuePair>,
}

/// Why a message could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// Template missing, placeholder without value, …
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The assembled message breaks a CAP rule (bad identifier, control character in a value, …).
    #[error(transparent)]
    Invalid(#[from] InvalidMessage),
    /// Update and Cancel must say which earlier messages they replace.
    #[error("{msg_type} message needs references to the earlier messages")]
    MissingReferences { msg_type: MsgType },
    /// A public warning without a target area reaches no one.
    #[error("alert has no area")]
    NoArea,
    /// Taiwan_Geocode_103 codes are digits.
    #[error("geocode `{0}` is not a Taiwan_Geocode_103 code (digits only)")]
    BadGeocode(String),
}

/// Local time as people read it in a text: `2026-11-26 18:00`.
fn human_time(t: OffsetDateTime) -> String {
    format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute())
}

/// Builds the complete message: zh-TW info first, then the other languages of the templates file.
pub fn build_alert(input: &CapInput, templates: &Templates) -> Result<CapAlert, BuildError> {
    if matches!(input.msg_type, MsgType::Update | MsgType::Cancel) && input.references.is_empty() {
        return Err(BuildError::MissingReferences { msg_type: input.msg_type });
    }
    if input.areas.is_empty() {
        return Err(BuildError::NoArea);
    }
    if let Some(bad) =
        input.areas.iter().flat_map(|a| &a.geocodes).find(|g| g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(BuildError::BadGeocode(bad.clone()));
    }
    let template = templates.event(&input.event_type)?;
    // Times are normalised once: Taiwan offset (what people here read), whole seconds (what CAP can carry).
    let local = |t: OffsetDateTime| whole_seconds(t).to_offset(TAIWAN_OFFSET);
    let sent = local(input.sent);
    let effective = input.effective.map(local);
    let onset = input.onset.map(local);
    let expires = input.expires.map(local);

    let mut infos = Vec::with_capacity(templates.languages().len());
    for language in templates.languages() {
        let lang_texts = templates.language(language).ok_or_else(|| TemplateError::MissingLanguage {
            event_type: input.event_type.clone(),
            language: language.clone(),
        })?;
        if let Some(level) = &input.level {
            if !template.levels.contains_key(level) {
                return Err(
                    TemplateError::UnknownLevel { event_type: input.event_type.clone(), level: level.clone() }.into()
                );
            }
        }
        let texts = template.texts_for(input.level.as_deref(), language).ok_or_else(|| {
            TemplateError::MissingLanguage { event_type: input.event_type.clone(), language: language.clone() }
        })?;
        let area_names: Vec<&str> = input.areas.iter().map(|a| a.desc.get(language)).collect();
        let mut builtins: BTreeMap<&str, String> = BTreeMap::new();
        builtins.insert("area", area_names.join(&lang_texts.list_separator));
        builtins.insert("sent", human_time(sent));
        for (key, t) in [("effective", effective.or(Some(sent))), ("onset", onset), ("expires", expires)] {
            if let Some(t) = t {
                builtins.insert(key, human_time(t));
            }
        }
        let render = |field: &'static str, text: &str, builtins: &BTreeMap<&str, String>| {
            let mut lookup = |key: &str| {
                input
                    .values
                    .get(&format!("{key}@{language}"))
                    .or_else(|| input.values.get(key))
                    .or_else(|| builtins.get(key))
                    .cloned()
            };
            fill(text, &mut lookup).map_err(|e| match e {
                FillError::Missing(placeholder) => TemplateError::UnknownPlaceholder {
                    event_type: input.event_type.clone(),
                    language: language.clone(),
                    field,
                    placeholder,
                },
                // Balance was checked when the file was loaded; kept as an error rather than a panic.
                FillError::Unbalanced => TemplateError::Unbalanced {
                    event_type: input.event_type.clone(),
                    language: language.clone(),
                    field,
                },
            })
        };
        let event = render("event", &texts.event, &builtins)?;
        builtins.insert("event", event.clone());
        let (headline, description, instruction, response_types) =
            if input.msg_type == MsgType::Cancel || input.all_clear {
                let c = &lang_texts.cancel;
                (
                    render("cancel.headline", &c.headline, &builtins)?,
                    render("cancel.description", &c.description, &builtins)?,
                    render("cancel.instruction", &c.instruction, &builtins)?,
                    vec![ResponseType::AllClear],
                )
            } else {
                (
                    render("headline", &texts.headline, &builtins)?,
                    render("description", &texts.description, &builtins)?,
                    render("instruction", &texts.instruction, &builtins)?,
                    template.response_types.clone(),
                )
            };
        // A drill or test must never read as real, whichever part of the message a consumer shows.
        let prefix = lang_texts.status_prefix.get(&input.status).map(String::as_str).unwrap_or("");
        let areas = input
            .areas
            .iter()
            .map(|a| CapArea {
                area_desc: a.desc.get(language).to_string(),
                polygons: a.polygons.clone(),
                circles: a.circles.clone(),
                geocodes: a.geocodes.iter().map(|g| ValuePair::new(TW_GEOCODE_NAME, g.clone())).collect(),
                altitude: None,
                ceiling: None,
            })
            .collect();
        infos.push(CapInfo {
            language: language.clone(),
            categories: template.categories.clone(),
            event,
            response_types,
            urgency: input.urgency,
            severity: input.severity,
            certainty: input.certainty,
            audience: None,
            event_codes: vec![
                ValuePair::new(TW_EVENT_CODE_NAME, template.event_code.clone()),
                ValuePair::new(OWN_EVENT_CODE_NAME, input.event_type.clone()),
            ],
            effective,
            onset,
            expires,
            sender_name: Some(lang_texts.sender_name.clone()),
            headline: Some(format!("{prefix}{headline}")),
            description: Some(format!("{prefix}{description}")),
            instruction: Some(instruction),
            web: input.web.clone(),
            contact: None,
            parameters: input.parameters.clone(),
            resources: Vec::new(),
            areas,
        });
    }

    let note = input.note.clone().or_else(|| templates.status_note(input.status).map(str::to_string));
    let alert = CapAlert {
        identifier: input.identifier.clone(),
        sender: input.sender.clone(),
        sent,
        status: input.status,
        msg_type: input.msg_type,
        source: None,
        scope: Scope::Public,
        restriction: None,
        addresses: None,
        codes: Vec::new(),
        note,
        references: input.references.iter().map(|r| Reference { sent: local(r.sent), ..r.clone() }).collect(),
        incidents: input.incidents.clone(),
        infos,
    };
    alert.validate()?;
    Ok(alert)
}
