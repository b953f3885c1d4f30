//! Alert texts per event type and language, loaded from TOML (`config/cap_templates.toml`).
//!
//! The file is checked completely when loaded (every event type has every language, every status other than
//! `Actual` has a prefix and a note, every template's braces balance), so a broken file fails at start-up, not when
//! the first alert is raised. Placeholders are filled when a message is built; a placeholder with no value is an
//! error naming the event type, language, field and placeholder, never a silently blank text.
//!
//! Layout of the file (see the shipped file for a full example):
//! ```toml
//! languages = ["zh-TW", "en-US"]          # order of the <info> blocks; zh-TW first in Taiwan
//! [status_note]                            # alert <note> for every status other than Actual
//! Exercise = "…"
//! Test = "…"
//! Draft = "…"
//! System = "…"
//! [language.zh-TW]
//! sender_name = "…"
//! list_separator = "、"                    # joins area names for {area}
//! status_prefix = { Exercise = "[演練]", Test = "[測試]", Draft = "[草稿]", System = "[系統]" }
//! cancel = { headline = "…", description = "…", instruction = "…" }
//! [event.heavy_rain]
//! category = ["Met"]
//! response_type = ["Prepare", "Monitor"]
//! event_code = "rainfall"                  # value of eventCode profile:CAP-TWP:Event:1.0
//! [event.heavy_rain.zh-TW]
//! event = "豪大雨"
//! headline = "…{area}…"
//! description = "…{rain_24h_mm}…"
//! instruction = "…"
//! [event.debris_flow.level.yellow.zh-TW]  # optional per-level texts, chosen by a rule level's `template`
//! headline = "…"                           # event, headline, description, instruction as above; `event` may
//! description = "…"                        # be left out (the event type's own name is used)
//! instruction = "…"
//! ```
//! `{name}` is a placeholder; `{{` and `}}` are literal braces. Per-level texts exist because one event type can
//! have levels that must read differently: a debris-flow *yellow* alert must not say 紅色 (red).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::message::{Category, ResponseType, Status};

/// Why a templates file could not be loaded or a text could not be filled in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Not TOML, or a table has a missing or unknown key (the message names it).
    #[error("templates file: {0}")]
    Toml(String),
    /// The file lists no languages, or a language twice.
    #[error("templates file: `languages` must list each language once, at least one")]
    NoLanguages,
    /// A listed language has no `[language.X]` table.
    #[error("templates file: no [language.{language}] table")]
    MissingLanguageTable { language: String },
    /// A status other than Actual lacks a prefix or note, so a drill could look real.
    #[error("templates file: {table} has no entry for status {status}")]
    MissingStatusText { table: String, status: Status },
    /// A key in `status_prefix`/`status_note` that is not a non-Actual CAP status.
    #[error("templates file: {table} has key `{key}`, expected one of Exercise, System, Test, Draft")]
    BadStatusKey { table: String, key: String },
    /// Asked for an event type that the file does not define.
    #[error("no templates for event type `{event_type}`")]
    UnknownEventType { event_type: String },
    /// An event type lacks one of the file's languages.
    #[error("event `{event_type}`: no texts for language `{language}`")]
    MissingLanguage { event_type: String, language: String },
    /// A key under `[event.X]` that is neither a known field nor a listed language.
    #[error("event `{event_type}`: unknown key `{key}`")]
    UnknownKey { event_type: String, key: String },
    /// A field is missing or has the wrong type.
    #[error("event `{event_type}`: {message}")]
    BadField { event_type: String, message: String },
    /// A category or response type not spelled as CAP spells it.
    #[error("event `{event_type}`: `{value}` is not a CAP {field} value")]
    BadEnum { event_type: String, field: &'static str, value: String },
    /// A message asked for per-level texts the event type does not define.
    #[error("event `{event_type}`: no texts for level `{level}` ([event.{event_type}.level.{level}])")]
    UnknownLevel { event_type: String, level: String },
    /// `{` without `}` or a stray `}`.
    #[error("event `{event_type}` ({language}) {field}: unbalanced brace in template")]
    Unbalanced { event_type: String, language: String, field: &'static str },
    /// A placeholder with no value: the event type, language, field and placeholder are named.
    #[error("event `{event_type}` ({language}) {field}: no value for placeholder {{{placeholder}}}")]
    UnknownPlaceholder { event_type: String, language: String, field: &'static str, placeholder: String },
}

/// headline / description / instruction, for one event type (or for cancellations) in one language.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextSet {
    /// Short; phones and feeds show it first.
    pub headline: String,
    /// What is happening, with measured values.
    pub description: String,
    /// What people should do.
    pub instruction: String,
}

/// One event type's texts in one language.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventText {
    /// CAP `event`: the event's name in this language.
    pub event: String,
    /// Short; phones and feeds show it first.
    pub headline: String,
    /// What is happening, with measured values.
    pub description: String,
    /// What people should do.
    pub instruction: String,
}

/// Language-wide settings and texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageTexts {
    /// CAP `senderName` in this language.
    pub sender_name: String,
    /// Joins several area names into `{area}` ("、" in Chinese, ", " in English).
    pub list_separator: String,
    /// Put before headline and description of non-Actual messages (e.g. `[演練]`), so drills never look real.
    pub status_prefix: BTreeMap<Status, String>,
    /// Texts of a Cancel message; `{event}` is the cancelled event's name.
    pub cancel: TextSet,
}

/// One event type: what CAP needs besides texts, and the texts per language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTemplate {
    /// CAP `category` values (at least one).
    pub categories: Vec<Category>,
    /// CAP `responseType` values for Alert and Update (Cancel always uses AllClear).
    pub response_types: Vec<ResponseType>,
    /// Value of the `profile:CAP-TWP:Event:1.0` event code.
    pub event_code: String,
    /// Texts keyed by language tag.
    pub texts: BTreeMap<String, EventText>,
    /// Per-level texts (`[event.X.level.<key>.<language>]`), keyed by level key, then language tag; every
    /// language of the file is present.
    pub levels: BTreeMap<String, BTreeMap<String, EventText>>,
}

impl EventTemplate {
    /// The texts for `language`, of level `level` when given.
    pub fn texts_for(&self, level: Option<&str>, language: &str) -> Option<&EventText> {
        match level {
            Some(key) => self.levels.get(key)?.get(language),
            None => self.texts.get(language),
        }
    }
}

/// Per-level texts may leave out `event`: the level is still the same kind of event.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelText {
    #[serde(default)]
    event: Option<String>,
    headline: String,
    description: String,
    instruction: String,
}

/// All templates, checked. Build once at start-up and share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates {
    languages: Vec<String>,
    language: BTreeMap<String, LanguageTexts>,
    status_note: BTreeMap<Status, String>,
    events: BTreeMap<String, EventTemplate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    languages: Vec<String>,
    status_note: BTreeMap<String, String>,
    language: BTreeMap<String, RawLanguage>,
    event: BTreeMap<String, toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLanguage {
    sender_name: String,
    list_separator: String,
    status_prefix: BTreeMap<String, String>,
    cancel: TextSet,
}

const NON_ACTUAL: [Status; 4] = [Status::Exercise, Status::System, Status::Test, Status::Draft];

fn status_map(table: &str, raw: BTreeMap<String, String>) -> Result<BTreeMap<Status, String>, TemplateError> {
    let mut out = BTreeMap::new();
    for (key, text) in raw {
        match Status::parse(&key) {
            Some(s) if s != Status::Actual => {
                out.insert(s, text);
            }
            _ => return Err(TemplateError::BadStatusKey { table: table.to_string(), key }),
        }
    }
    for status in NON_ACTUAL {
        if !out.contains_key(&status) {
            return Err(TemplateError::MissingStatusText { table: table.to_string(), status });
        }
    }
    Ok(out)
}

fn enum_list<T>(
    event_type: &str,
    table: &mut toml::Table,
    key: &'static str,
    parse: fn(&str) -> Option<T>,
) -> Result<Vec<T>, TemplateError> {
    let bad_field = |message: String| TemplateError::BadField { event_type: event_type.to_string(), message };
    let Some(value) = table.remove(key) else {
        return Err(bad_field(format!("missing `{key}`")));
    };
    let items = value.as_array().ok_or_else(|| bad_field(format!("`{key}` must be a list of strings")))?;
    items
        .iter()
        .map(|item| {
            let s = item.as_str().ok_or_else(|| bad_field(format!("`{key}` must be a list of strings")))?;
            parse(s).ok_or_else(|| TemplateError::BadEnum {
                event_type: event_type.to_string(),
                field: key,
                value: s.to_string(),
            })
        })
        .collect()
}

impl Templates {
    /// Loads and checks a templates file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, TemplateError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| TemplateError::Toml(e.message().to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        if raw.languages.is_empty() || !raw.languages.iter().all(|l| seen.insert(l.clone())) {
            return Err(TemplateError::NoLanguages);
        }
        let status_note = status_map("[status_note]", raw.status_note)?;
        let mut language = BTreeMap::new();
        let mut raw_languages = raw.language;
        for lang in &raw.languages {
            let Some(r) = raw_languages.remove(lang) else {
                return Err(TemplateError::MissingLanguageTable { language: lang.clone() });
            };
            let status_prefix = status_map(&format!("[language.{lang}.status_prefix]"), r.status_prefix)?;
            for (field, t) in [
                ("cancel.headline", &r.cancel.headline),
                ("cancel.description", &r.cancel.description),
                ("cancel.instruction", &r.cancel.instruction),
            ] {
                check_braces(t).map_err(|()| TemplateError::Unbalanced {
                    event_type: "(cancel)".into(),
                    language: lang.clone(),
                    field,
                })?;
            }
            let texts = LanguageTexts {
                sender_name: r.sender_name,
                list_separator: r.list_separator,
                status_prefix,
                cancel: r.cancel,
            };
            language.insert(lang.clone(), texts);
        }
        if let Some(extra) = raw_languages.into_keys().next() {
            return Err(TemplateError::Toml(format!("[language.{extra}] is not listed in `languages`")));
        }

        let mut events = BTreeMap::new();
        for (event_type, mut table) in raw.event {
            let categories = enum_list(&event_type, &mut table, "category", Category::parse)?;
            if categories.is_empty() {
                return Err(TemplateError::BadField {
                    event_type: event_type.clone(),
                    message: "`category` needs at least one value".into(),
                });
            }
            let response_types = enum_list(&event_type, &mut table, "response_type", ResponseType::parse)?;
            let event_code = match table.remove("event_code") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(TemplateError::BadField {
                        event_type: event_type.clone(),
                        message: "`event_code` must be a non-empty string".into(),
                    })
                }
            };
            let mut texts = BTreeMap::new();
            for lang in &raw.languages {
                let Some(value) = table.remove(lang) else {
                    return Err(TemplateError::MissingLanguage {
                        event_type: event_type.clone(),
                        language: lang.clone(),
                    });
                };
                let text: EventText = value.try_into().map_err(|e: toml::de::Error| TemplateError::BadField {
                    event_type: event_type.clone(),
                    message: format!("[event.{event_type}.{lang}]: {}", e.message()),
                })?;
                for (field, t) in [
                    ("event", &text.event),
                    ("headline", &text.headline),
                    ("description", &text.description),
                    ("instruction", &text.instruction),
                ] {
                    check_braces(t).map_err(|()| TemplateError::Unbalanced {
                        event_type: event_type.clone(),
                        language: lang.clone(),
                        field,
                    })?;
                }
                texts.insert(lang.clone(), text);
            }
            let levels = match table.remove("level") {
                None => BTreeMap::new(),
                Some(value) => level_texts(&event_type, value, &raw.languages, &texts)?,
            };
            if let Some(key) = table.keys().next() {
                return Err(TemplateError::UnknownKey { event_type: event_type.clone(), key: key.clone() });
            }
            events.insert(event_type, EventTemplate { categories, response_types, event_code, texts, levels });
        }
        Ok(Templates { languages: raw.languages, language, status_note, events })
    }

    /// Languages in the order their `info` blocks are written.
    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    /// Event types the file defines.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.events.keys().map(String::as_str)
    }

    /// One event type's template.
    pub fn event(&self, event_type: &str) -> Result<&EventTemplate, TemplateError> {
        self.events
            .get(event_type)
            .ok_or_else(|| TemplateError::UnknownEventType { event_type: event_type.to_string() })
    }

    /// Language-wide texts for a listed language.
    pub fn language(&self, language: &str) -> Option<&LanguageTexts> {
        self.language.get(language)
    }

    /// The alert `note` for a non-Actual status (None for Actual).
    pub fn status_note(&self, status: Status) -> Option<&str> {
        self.status_note.get(&status).map(String::as_str)
    }
}

/// `[event.X.level]`: per-level texts, each level in every language, braces balanced.
fn level_texts(
    event_type: &str,
    value: toml::Value,
    languages: &[String],
    base: &BTreeMap<String, EventText>,
) -> Result<BTreeMap<String, BTreeMap<String, EventText>>, TemplateError> {
    let bad = |message: String| TemplateError::BadField { event_type: event_type.to_string(), message };
    let toml::Value::Table(levels) = value else {
        return Err(bad("`level` must be a table of level keys ([event.X.level.<key>.<language>])".into()));
    };
    let mut out = BTreeMap::new();
    for (key, value) in levels {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(bad(format!("level key `{key}`: lower-case ASCII letters, digits or '_'")));
        }
        let toml::Value::Table(mut by_lang) = value else {
            return Err(bad(format!("[event.{event_type}.level.{key}] must be a table of languages")));
        };
        let mut texts = BTreeMap::new();
        for lang in languages {
            let Some(value) = by_lang.remove(lang) else {
                return Err(TemplateError::MissingLanguage {
                    event_type: format!("{event_type}.level.{key}"),
                    language: lang.clone(),
                });
            };
            let raw: LevelText = value.try_into().map_err(|e: toml::de::Error| {
                bad(format!("[event.{event_type}.level.{key}.{lang}]: {}", e.message()))
            })?;
            let text = EventText {
                event: raw.event.or_else(|| base.get(lang).map(|t| t.event.clone())).unwrap_or_default(),
                headline: raw.headline,
                description: raw.description,
                instruction: raw.instruction,
            };
            for (field, t) in [
                ("event", &text.event),
                ("headline", &text.headline),
                ("description", &text.description),
                ("instruction", &text.instruction),
            ] {
                check_braces(t).map_err(|()| TemplateError::Unbalanced {
                    event_type: format!("{event_type}.level.{key}"),
                    language: lang.clone(),
                    field,
                })?;
            }
            texts.insert(lang.clone(), text);
        }
        if let Some(extra) = by_lang.keys().next() {
            return Err(TemplateError::UnknownKey {
                event_type: format!("{event_type}.level.{key}"),
                key: extra.clone(),
            });
        }
        out.insert(key, texts);
    }
    Ok(out)
}

/// `Ok` when every `{` is closed by a `}` before the next `{`, and `{{`/`}}` are the only other braces.
fn check_braces(template: &str) -> Result<(), ()> {
    fill(template, &mut |_| Some(String::new())).map(|_| ()).map_err(|e| match e {
        FillError::Unbalanced | FillError::Missing(_) => (),
    })
}

/// Why [`fill`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FillError {
    Unbalanced,
    Missing(String),
}

/// Replaces `{name}` with `lookup(name)`; `{{` and `}}` are literal braces.
pub(crate) fn fill(template: &str, lookup: &mut dyn FnMut(&str) -> Option<String>) -> Result<String, FillError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(FillError::Unbalanced);
        } else {
            let end = tail.find('}').ok_or(FillError::Unbalanced)?;
            let name = &tail[1..end];
            if name.is_empty() || name.contains('{') {
                return Err(FillError::Unbalanced);
            }
            out.push_str(&lookup(name).ok_or_else(|| FillError::Missing(name.to_string()))?);
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
languages = ["zh-TW", "en-US"]
[status_note]
Exercise = "演練 exercise"
Test = "測試 test"
Draft = "草稿 draft"
System = "系統 system"
[language.zh-TW]
sender_name = "測試單位"
list_separator = "、"
status_prefix = { Exercise = "[演練]", Test = "[測試]", Draft = "[草稿]", System = "[系統]" }
cancel = { headline = "{event}解除", description = "{area}解除", instruction = "無" }
[language.en-US]
sender_name = "Test unit"
list_separator = ", "
status_prefix = { Exercise = "[Drill] ", Test = "[Test] ", Draft = "[Draft] ", System = "[System] " }
cancel = { headline = "{event} cancelled", description = "{area}", instruction = "None" }
[event.heavy_rain]
category = ["Met"]
response_type = ["Prepare"]
event_code = "rainfall"
[event.heavy_rain.zh-TW]
event = "豪雨"
headline = "{area}豪雨"
description = "雨量{rain_24h_mm}毫米"
instruction = "注意"
[event.heavy_rain.en-US]
event = "Heavy rain"
headline = "Heavy rain in {area}"
description = "{rain_24h_mm} mm"
instruction = "Take care"
"#;

    #[test]
    fn loads_small_file() {
        let t = Templates::from_toml_str(SMALL).unwrap();
        assert_eq!(t.languages(), ["zh-TW", "en-US"]);
        assert_eq!(t.event("heavy_rain").unwrap().categories, [Category::Met]);
        assert_eq!(t.language("en-US").unwrap().status_prefix[&Status::Exercise], "[Drill] ");
        assert_eq!(t.event("tsunami"), Err(TemplateError::UnknownEventType { event_type: "tsunami".into() }));
    }

    #[test]
    fn missing_language_names_event() {
        let text = SMALL.replace("[event.heavy_rain.en-US]", "[event.heavy_rain.en-GB]");
        let err = Templates::from_toml_str(&text).unwrap_err();
        assert!(
            matches!(&err, TemplateError::MissingLanguage { event_type, language } if event_type == "heavy_rain" && language == "en-US"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = Templates::from_toml_str(&SMALL.replace("[\"Met\"]", "[\"Weather\"]")).unwrap_err();
        assert!(matches!(&err, TemplateError::BadEnum { value, field: "category", .. } if value == "Weather"), "{err}");
        let err = Templates::from_toml_str(&SMALL.replace("headline = \"{area}豪雨\"", "headline = \"{area豪雨\""))
            .unwrap_err();
        assert!(matches!(&err, TemplateError::Unbalanced { field: "headline", .. }), "{err}");
        let err =
            Templates::from_toml_str(&SMALL.replace("instruction = \"注意\"", "instruction = \"注意\"\nextra = 1"))
                .unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
        let err = Templates::from_toml_str(
            &SMALL.replace("event_code = \"rainfall\"", "event_code = \"rainfall\"\ncolour = 1"),
        )
        .unwrap_err();
        assert_eq!(err, TemplateError::UnknownKey { event_type: "heavy_rain".into(), key: "colour".into() });
        let err = Templates::from_toml_str(&SMALL.replace("Draft = \"草稿 draft\"\n", "")).unwrap_err();
        assert!(matches!(err, TemplateError::MissingStatusText { status: Status::Draft, .. }), "{err}");
    }

    #[test]
    fn fill_placeholders() {
        let mut values = |k: &str| (k == "zone").then(|| "信義鄉".to_string());
        assert_eq!(fill("{zone}：{{x}} }}", &mut values), Ok("信義鄉：{x} }".into()));
        assert_eq!(fill("{nope}", &mut values), Err(FillError::Missing("nope".into())));
        assert_eq!(fill("{zone", &mut values), Err(FillError::Unbalanced));
        assert_eq!(fill("zone}", &mut values), Err(FillError::Unbalanced));
        assert_eq!(fill("{}", &mut values), Err(FillError::Unbalanced));
    }
}
