//! The MQTT topic schema: `sensors/{device_id}/readings` and `sensors/{device_id}/status`.
//!
//! On the TLS listeners rumqttd authenticates the tenant segment of `/tenants/{device_id}/sensors/{device_id}/…`; the
//! device id is taken from the *tenant* segment there, because only that one is proven by the certificate.

/// What a topic is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Readings,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorTopic<'a> {
    pub device_id: &'a str,
    pub kind: TopicKind,
}

/// Device ids double as certificate tenant ids, which rumqttd requires to be alphanumeric.
pub fn is_valid_device_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub fn parse(topic: &str) -> Option<SensorTopic<'_>> {
    let (tenant, rest) = match topic.strip_prefix("/tenants/") {
        Some(rest) => {
            let (tenant, rest) = rest.split_once('/')?;
            (Some(tenant), rest)
        }
        None => (None, topic),
    };
    let mut parts = rest.split('/');
    let (Some("sensors"), Some(device_id), Some(leaf), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let kind = match leaf {
        "readings" => TopicKind::Readings,
        "status" => TopicKind::Status,
        _ => return None,
    };
    let device_id = match tenant {
        // A tenant publishing under another device's name is refused: the tenant is the proven identity.
        Some(tenant) if tenant != device_id => return None,
        Some(tenant) => tenant,
        None => device_id,
    };
    is_valid_device_id(device_id).then_some(SensorTopic { device_id, kind })
}

pub fn readings_topic(device_id: &str) -> String {
    format!("sensors/{device_id}/readings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_tenant_topics() {
        assert_eq!(
            parse("sensors/RG0001/readings"),
            Some(SensorTopic { device_id: "RG0001", kind: TopicKind::Readings })
        );
        assert_eq!(
            parse("/tenants/RG0001/sensors/RG0001/status"),
            Some(SensorTopic { device_id: "RG0001", kind: TopicKind::Status })
        );
    }

    #[test]
    fn refuses_malformed_topics() {
        for bad in [
            "sensors/RG0001",
            "sensors//readings",
            "sensors/RG-1/readings",
            "sensors/RG0001/readings/extra",
            "sensors/RG0001/other",
            "/tenants/A/sensors/B/readings",
            "/tenants/A",
            "sensor/RG0001/readings",
            "sensors/0123456789012345678901234567890123/readings",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
