//! What a connected device may do: the topic rules the front door enforces on every PUBLISH, SUBSCRIBE and last will.
//!
//! The identity is the connection's (password login or client certificate), never a segment the device chose:
//! - publish only under its own id: `sensors/{id}/…`, or the tenant form `/tenants/{id}/sensors/{id}/…` kept for
//!   devices configured for rumqttd's TLS listeners. What follows `sensors/{id}/` is the pipeline's business (an unknown
//!   leaf is refused there as `bad_topic`, with a dead letter), so the rule here stays one comparison;
//! - subscribe only to its own command topics: filters whose first two levels are exactly `devices/{id}` (e.g.
//!   `devices/{id}/#`). `#`, `+/…`, `sensors/…`, `$SYS/…` and `$share/…` are refused: devices never receive other
//!   devices' data, on any listener.

/// Whether `device_id` may publish to `topic`.
pub fn may_publish(device_id: &str, topic: &str) -> bool {
    if let Some(rest) = topic.strip_prefix("sensors/") {
        return own_prefix(rest, device_id);
    }
    if let Some(rest) = topic.strip_prefix("/tenants/") {
        return rest
            .strip_prefix(device_id)
            .and_then(|r| r.strip_prefix("/sensors/"))
            .is_some_and(|r| own_prefix(r, device_id));
    }
    false
}

/// `rest` starts with `{device_id}/`.
fn own_prefix(rest: &str, device_id: &str) -> bool {
    rest.strip_prefix(device_id).is_some_and(|r| r.starts_with('/'))
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterVerdict {
    Allowed,
    /// Not a well-formed MQTT filter.
    Invalid,
    /// Well-formed, but not the device's own command topics.
    Forbidden,
}

/// Whether `device_id` may subscribe to `filter`.
pub fn may_subscribe(device_id: &str, filter: &str) -> FilterVerdict {
    if !rumqttd::protocol::valid_filter(filter) {
        return FilterVerdict::Invalid;
    }
    let mut levels = filter.split('/');
    match (levels.next(), levels.next()) {
        (Some("devices"), Some(id)) if id == device_id => FilterVerdict::Allowed,
        _ => FilterVerdict::Forbidden,
    }
}

/// The topic a command to `device_id` is published on must be one the device may subscribe to.
pub fn is_command_topic(device_id: &str, topic: &str) -> bool {
    rumqttd::protocol::valid_topic(topic)
        && topic.strip_prefix("devices/").is_some_and(|rest| own_prefix(rest, device_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishes_only_under_own_id() {
        for ok in [
            "sensors/RG0001/readings",
            "sensors/RG0001/status",
            "sensors/RG0001/anything/else",
            "/tenants/RG0001/sensors/RG0001/readings",
        ] {
            assert!(may_publish("RG0001", ok), "{ok}");
        }
        for bad in [
            "sensors/RG0002/readings",
            "sensors/RG00011/readings",
            "sensors/RG000/readings",
            "sensors/RG0001",
            "sensors//readings",
            "/tenants/RG0002/sensors/RG0001/readings",
            "/tenants/RG0001/sensors/RG0002/readings",
            "/tenants/RG0001/sensors/RG0001",
            "devices/RG0001/commands",
            "RG0001/readings",
            "",
        ] {
            assert!(!may_publish("RG0001", bad), "{bad}");
        }
    }

    #[test]
    fn subscribes_only_to_own_command_topics() {
        assert_eq!(may_subscribe("RG0001", "devices/RG0001/#"), FilterVerdict::Allowed);
        assert_eq!(may_subscribe("RG0001", "devices/RG0001/commands/+"), FilterVerdict::Allowed);
        assert_eq!(may_subscribe("RG0001", "devices/RG0001"), FilterVerdict::Allowed);
        for bad in [
            "#",
            "+/#",
            "sensors/#",
            "sensors/RG0001/readings",
            "devices/+/#",
            "devices/#",
            "devices/RG0002/#",
            "$SYS/#",
            "$share/g/devices/RG0001/#",
            "/tenants/RG0001/#",
        ] {
            assert_eq!(may_subscribe("RG0001", bad), FilterVerdict::Forbidden, "{bad}");
        }
        assert_eq!(may_subscribe("RG0001", "devices/RG0001/#/x"), FilterVerdict::Invalid);
        assert_eq!(may_subscribe("RG0001", ""), FilterVerdict::Invalid);
    }

    #[test]
    fn command_topics() {
        assert!(is_command_topic("RG0001", "devices/RG0001/commands/reboot"));
        assert!(!is_command_topic("RG0001", "devices/RG0002/commands"));
        assert!(!is_command_topic("RG0001", "devices/RG0001/+"));
    }
}
