//! The messages of the alerts stream `DC_ALERTS` on the NATS backbone (`dc.alerts.{region}.{id}`, one per version):
//! what a rule worker writes, what the region's next owner adopts and what fan-out nodes show.
//!
//! The body ([`Body`]) is JSON: `type` (`alert`: one alert of the worker's book, with the `record` a next owner
//! continues; `public_warning`: what the public hears, `W-{first alert id}`), `region`, `worker`, `worker_url`,
//! `public` (may citizens see it), `frame` (the operators' frame) and, for a warning, the `warning` a next owner
//! continues. A worker with a signing key sends it inside the
//! same Ed25519 envelope as on the MQTT cluster (`signing.rs`, `AlertSigner::seal`), the subject in place of the
//! topic in what is signed: so anyone who may publish on `dc.alerts.>` (a stolen NATS login, an admin tool, a
//! mis-scoped permission) cannot put an alert in front of citizens, nor into the book of a region's next owner,
//! nor move a real one to another region or id.

use alerting::publication::PublicWarning;
use alerting::AlertRecord;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::signing::{AlertSigner, Refusal, TrustedKeys};

/// `type` of one alert of a worker's book.
pub const ALERT: &str = "alert";
/// `type` of a public warning (`alerting::publication`).
pub const PUBLIC_WARNING: &str = "public_warning";

fn alert_kind() -> String {
    ALERT.into()
}

/// One message of `DC_ALERTS`, inside the envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Body {
    /// [`ALERT`] or [`PUBLIC_WARNING`]; absent in messages of workers that predate warnings on the stream (alerts).
    #[serde(rename = "type", default = "alert_kind")]
    pub kind: String,
    /// The county the message is for: must be the subject's (checked by every reader).
    pub region: String,
    /// The publishing worker's name on the cluster.
    pub worker: String,
    /// Where the worker's own API and CAP documents are (`http.public_url`), for operators of a fan-out node.
    #[serde(default)]
    pub worker_url: String,
    /// Whether citizens may see it (a public warning; alerts reach citizens only through their warnings).
    pub public: bool,
    /// The alert as the worker's book holds it (alerts only): what a next owner continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<AlertRecord>,
    /// The warning as the worker's publication holds it (public warnings only): what a next owner continues the
    /// warning's chain from (same id, next version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<PublicWarning>,
    /// The operators' frame (`type` `alert` or `public_warning`), as a single process sends it.
    pub frame: serde_json::Value,
}

impl Body {
    /// The frame a fan-out node applies: the operators' frame with the cluster's fields, as the MQTT cluster's
    /// workers publish it (`public` as a flag, `worker`, `worker_url`, `region`).
    pub fn fanout_frame(&self) -> serde_json::Value {
        let mut frame = self.frame.clone();
        if let Some(map) = frame.as_object_mut() {
            map.insert("public".into(), self.public.into());
            map.insert("worker".into(), self.worker.clone().into());
            map.insert("worker_url".into(), self.worker_url.clone().into());
            map.insert("region".into(), self.region.clone().into());
        }
        frame
    }
}

/// The message for `subject`: the body, sealed when the worker has a key (a worker without one writes the plain
/// body, which fan-out nodes refuse and workers that trust keys do not adopt).
pub fn seal(signer: Option<&AlertSigner>, subject: &str, body: &Body) -> Bytes {
    let text = serde_json::to_string(body).unwrap_or_default();
    Bytes::from(match signer {
        Some(signer) => signer.seal(subject, &text),
        None => text,
    })
}

/// A message read back: its body and who signed it (`None`: not verified, no keys trusted).
#[derive(Debug)]
pub struct Opened {
    pub body: Body,
    pub signer: Option<String>,
}

/// Reads a message stored under `subject` (of `region`). With trusted keys, nothing of it is read before its
/// signature verifies against one of them (for this subject and the key's regions); without any (a deployment that
/// has not configured signing), the plain body or an envelope's content is taken as is. The body must name the
/// subject's region.
pub fn open(trusted: &TrustedKeys, subject: &str, region: &str, payload: &[u8]) -> Result<Opened, Refusal> {
    let (text, signer) = if trusted.is_empty() {
        (unverified(payload)?, None)
    } else {
        let opened = trusted.open(subject, region, payload)?;
        (opened.alert.to_string(), Some(opened.signer))
    };
    let body: Body = serde_json::from_str(&text).map_err(|e| Refusal::Malformed(format!("body: {e}")))?;
    if body.region != region {
        return Err(Refusal::OutsideRegion(format!(
            "body names region `{}`, subject `{region}`",
            body.region.chars().take(20).collect::<String>()
        )));
    }
    Ok(Opened { body, signer })
}

/// The body's text of a message nobody verifies: an envelope's `alert`, or the payload itself.
fn unverified(payload: &[u8]) -> Result<String, Refusal> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        format: Option<&'a str>,
        #[serde(borrow)]
        alert: Option<&'a serde_json::value::RawValue>,
    }
    let text = std::str::from_utf8(payload).map_err(|_| Refusal::Malformed("not UTF-8".into()))?;
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(Envelope { format: Some(super::signing::FORMAT), alert: Some(alert) }) => Ok(alert.get().to_string()),
        _ => Ok(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scale_out::signing::TrustedKey;

    fn body(region: &str) -> Body {
        Body {
            kind: PUBLIC_WARNING.into(),
            region: region.into(),
            worker: "w-1".into(),
            worker_url: "http://w-1".into(),
            public: true,
            record: None,
            warning: None,
            frame: serde_json::json!({"type": "public_warning", "id": "W-A1", "version": 1}),
        }
    }

    #[test]
    fn a_sealed_message_opens_only_for_its_subject_and_a_trusted_key() {
        let signer = AlertSigner::generate();
        let subject = "dc.alerts.10008.W-A1";
        let sealed = seal(Some(&signer), subject, &body("10008"));
        let trusted =
            TrustedKeys::new(vec![TrustedKey::new("w-1", signer.public_key(), vec!["10008".into()]).unwrap()]);
        let opened = open(&trusted, subject, "10008", &sealed).unwrap();
        assert_eq!((opened.body.worker.as_str(), opened.signer.as_deref()), ("w-1", Some("w-1")));
        assert_eq!(opened.body.fanout_frame()["region"], "10008");
        // Moved to another id, unsigned, signed by a stranger, or for a region the key may not sign for: refused.
        let reason = |r: Result<Opened, Refusal>| r.unwrap_err().reason();
        assert_eq!(reason(open(&trusted, "dc.alerts.10008.W-A2", "10008", &sealed)), "bad_signature");
        assert_eq!(reason(open(&trusted, subject, "10008", &seal(None, subject, &body("10008")))), "unsigned");
        let stranger = AlertSigner::generate();
        assert_eq!(
            reason(open(&trusted, subject, "10008", &seal(Some(&stranger), subject, &body("10008")))),
            "unknown_key"
        );
        let kao = "dc.alerts.64000.W-A1";
        assert_eq!(reason(open(&trusted, kao, "64000", &seal(Some(&signer), kao, &body("64000")))), "outside_region");
        // A signed body naming another region than its subject.
        let moved = seal(Some(&signer), subject, &body("64000"));
        assert_eq!(reason(open(&trusted, subject, "10008", &moved)), "outside_region");
        // Without trusted keys both forms are read (a deployment without signing).
        let none = TrustedKeys::default();
        assert!(open(&none, subject, "10008", &sealed).unwrap().signer.is_none());
        assert_eq!(open(&none, subject, "10008", &seal(None, subject, &body("10008"))).unwrap().body.worker, "w-1");
    }
}
