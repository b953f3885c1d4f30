//! MQTT framing for the front door, on rumqttd's public codecs (`protocol::v4::V4`, `protocol::v5::V5`).
//!
//! Two things the codecs do not give us are done here on the raw frame: which protocol a CONNECT speaks (so one
//! listener can answer MQTT 3.1 with return code 1 instead of a silent close), and a PUBLISH's QoS and packet id
//! (crate-private fields of rumqttd's `Publish`, needed to acknowledge it).

use bytes::{BufMut, Bytes, BytesMut};
use rumqttd::protocol::v4::{self, V4};
use rumqttd::protocol::v5::V5;
use rumqttd::protocol::{
    ConnAck, ConnAckProperties, ConnectReturnCode, Error, Packet, PingResp, Protocol, PubAck, PubAckReason, PubComp,
    PubCompReason, PubRec, PubRecReason, Publish, SubAck, SubscribeReasonCode, UnsubAck, UnsubAckReason,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.
    V5,
}

impl Version {
    pub fn label(self) -> &'static str {
        match self {
            Version::V4 => "3.1.1",
            Version::V5 => "5",
        }
    }
}

/// What the first frame of a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The frame is not complete yet.
    NeedMore,
    Connect(Version),
    /// A CONNECT of a protocol level we do not speak (3 = MQTT 3.1): answered with return code 1.
    UnsupportedLevel(u8),
    /// Not an MQTT CONNECT at all, or larger than allowed: closed without an answer.
    NotMqtt,
}

/// Looks at the first frame without consuming it.
pub fn sniff_connect(buf: &[u8], max_packet: usize) -> Sniff {
    // Decide on the first byte when we can: a TLS ClientHello or an HTTP request should not wait for "more".
    match buf.first() {
        None => return Sniff::NeedMore,
        Some(0x10) => {}
        Some(_) => return Sniff::NotMqtt,
    }
    let header = match v4::check(buf.iter(), max_packet) {
        Ok(h) => h,
        Err(Error::InsufficientBytes(_)) => return Sniff::NeedMore,
        Err(_) => return Sniff::NotMqtt,
    };
    let body = &buf[header.fixed_header_len..header.frame_length()];
    let Some(name_len) = body.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
        return Sniff::NotMqtt;
    };
    let (Some(name), Some(&level)) = (body.get(2..2 + name_len), body.get(2 + name_len)) else {
        return Sniff::NotMqtt;
    };
    match (name, level) {
        (b"MQTT", 4) => Sniff::Connect(Version::V4),
        (b"MQTT", 5) => Sniff::Connect(Version::V5),
        (b"MQTT" | b"MQIsdp", level) => Sniff::UnsupportedLevel(level),
        _ => Sniff::NotMqtt,
    }
}

/// The fixed header of the next complete frame, with a PUBLISH's QoS and packet id read from the raw bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub packet_type: u8,
    pub qos: u8,
    pub pkid: u16,
}

/// `Ok(None)` when the buffer holds no complete frame yet (and reserves room for it).
pub fn peek(buf: &mut BytesMut, max_packet: usize) -> Result<Option<FrameInfo>, Error> {
    let header = match v4::check(buf.iter(), max_packet) {
        Ok(h) => h,
        Err(Error::InsufficientBytes(more)) => {
            buf.reserve(more);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let byte1 = buf[0];
    let packet_type = byte1 >> 4;
    let qos = (byte1 >> 1) & 0b11;
    let mut pkid = 0;
    if packet_type == 3 && qos > 0 {
        let at = header.fixed_header_len;
        if let Some(len) = buf.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) {
            if let Some(id) = buf.get(at + 2 + len..at + 4 + len) {
                pkid = u16::from_be_bytes([id[0], id[1]]);
            }
        }
    }
    Ok(Some(FrameInfo { packet_type, qos, pkid }))
}

/// How a CONNECT is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnackCode {
    Accepted,
    UnsupportedVersion,
    ClientIdRejected,
    ServerUnavailable,
    BadCredentials,
    NotAuthorized,
    BadAuthMethod,
    /// Try again later: v4 3 ("server unavailable", its nearest), v5 0x89 ("server busy").
    ServerBusy,
    /// Too many failed logins from the client's address: v4 5 ("not authorized", v4 has no rate code), v5 0x9F
    /// ("connection rate exceeded").
    RateExceeded,
}

impl ConnackCode {
    /// v4's CONNACK writer panics on codes outside MQTT 3.1.1's six: map onto those for v4.
    fn return_code(self, version: Version) -> ConnectReturnCode {
        use ConnectReturnCode as R;
        match (self, version) {
            (ConnackCode::Accepted, _) => R::Success,
            (ConnackCode::UnsupportedVersion, Version::V4) => R::RefusedProtocolVersion,
            (ConnackCode::UnsupportedVersion, Version::V5) => R::UnsupportedProtocolVersion,
            (ConnackCode::ClientIdRejected, _) => R::ClientIdentifierNotValid,
            (ConnackCode::ServerUnavailable, Version::V4) => R::ServiceUnavailable,
            (ConnackCode::ServerUnavailable, Version::V5) => R::ServerUnavailable,
            (ConnackCode::BadCredentials, _) => R::BadUserNamePassword,
            (ConnackCode::NotAuthorized, _) => R::NotAuthorized,
            (ConnackCode::BadAuthMethod, Version::V4) => R::NotAuthorized,
            (ConnackCode::BadAuthMethod, Version::V5) => R::BadAuthenticationMethod,
            (ConnackCode::ServerBusy, Version::V4) => R::ServiceUnavailable,
            (ConnackCode::ServerBusy, Version::V5) => R::ServerBusy,
            (ConnackCode::RateExceeded, Version::V4) => R::NotAuthorized,
            (ConnackCode::RateExceeded, Version::V5) => R::ConnectionRateExceeded,
        }
    }

    /// The byte on the wire (what clients and tests see).
    pub fn wire(self, version: Version) -> u8 {
        match (self, version) {
            (ConnackCode::Accepted, _) => 0,
            (ConnackCode::UnsupportedVersion, Version::V4) => 1,
            (ConnackCode::ClientIdRejected, Version::V4) => 2,
            (ConnackCode::ServerUnavailable | ConnackCode::ServerBusy, Version::V4) => 3,
            (ConnackCode::BadCredentials, Version::V4) => 4,
            (ConnackCode::NotAuthorized | ConnackCode::BadAuthMethod | ConnackCode::RateExceeded, Version::V4) => 5,
            (ConnackCode::UnsupportedVersion, Version::V5) => 0x84,
            (ConnackCode::ClientIdRejected, Version::V5) => 0x85,
            (ConnackCode::ServerUnavailable, Version::V5) => 0x88,
            (ConnackCode::BadCredentials, Version::V5) => 0x86,
            (ConnackCode::NotAuthorized, Version::V5) => 0x87,
            (ConnackCode::BadAuthMethod, Version::V5) => 0x8C,
            (ConnackCode::ServerBusy, Version::V5) => 0x89,
            (ConnackCode::RateExceeded, Version::V5) => 0x9F,
        }
    }
}

/// The MQTT 3.1 style CONNACK "unacceptable protocol version", for clients whose version we cannot speak.
pub const CONNACK_UNSUPPORTED_LEVEL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];

/// Reads and writes packets of one connection's protocol version.
pub enum Codec {
    V4(V4),
    V5(V5),
}

impl Codec {
    pub fn new(version: Version) -> Codec {
        match version {
            Version::V4 => Codec::V4(V4),
            Version::V5 => Codec::V5(V5),
        }
    }

    pub fn version(&self) -> Version {
        match self {
            Codec::V4(_) => Version::V4,
            Codec::V5(_) => Version::V5,
        }
    }

    pub fn read(&mut self, buf: &mut BytesMut, max_packet: usize) -> Result<Packet, Error> {
        match self {
            Codec::V4(c) => c.read_mut(buf, max_packet),
            Codec::V5(c) => c.read_mut(buf, max_packet),
        }
    }

    fn write(&self, packet: Packet, buf: &mut BytesMut) {
        let result = match self {
            Codec::V4(c) => c.write(packet, buf),
            Codec::V5(c) => c.write(packet, buf),
        };
        // Our own acks never exceed the protocol's limits; a failure here is a bug worth a log line, not a crash.
        if let Err(e) = result {
            tracing::error!(error = %e, "could not encode an MQTT packet");
        }
    }

    pub fn connack(&self, code: ConnackCode, properties: Option<ConnAckProperties>, buf: &mut BytesMut) {
        let ack = ConnAck { session_present: false, code: code.return_code(self.version()) };
        let properties = match self {
            Codec::V4(_) => None,
            Codec::V5(_) => properties,
        };
        self.write(Packet::ConnAck(ack, properties), buf);
    }

    /// PUBACK; v5 says "not authorized" for a dropped publish, v4 has no way to say it.
    pub fn puback(&self, pkid: u16, authorized: bool, buf: &mut BytesMut) {
        let reason = if authorized || self.version() == Version::V4 {
            PubAckReason::Success
        } else {
            PubAckReason::NotAuthorized
        };
        self.write(Packet::PubAck(PubAck { pkid, reason }, None), buf);
    }

    pub fn pubrec(&self, pkid: u16, authorized: bool, buf: &mut BytesMut) {
        let reason = if authorized || self.version() == Version::V4 {
            PubRecReason::Success
        } else {
            PubRecReason::NotAuthorized
        };
        self.write(Packet::PubRec(PubRec { pkid, reason }, None), buf);
    }

    pub fn pubcomp(&self, pkid: u16, buf: &mut BytesMut) {
        self.write(Packet::PubComp(PubComp { pkid, reason: PubCompReason::Success }, None), buf);
    }

    pub fn suback(&self, pkid: u16, return_codes: Vec<SubscribeReasonCode>, buf: &mut BytesMut) {
        self.write(Packet::SubAck(SubAck { pkid, return_codes }, None), buf);
    }

    pub fn unsuback(&self, pkid: u16, reasons: Vec<UnsubAckReason>, buf: &mut BytesMut) {
        self.write(Packet::UnsubAck(UnsubAck { pkid, reasons }, None), buf);
    }

    pub fn pingresp(&self, buf: &mut BytesMut) {
        self.write(Packet::PingResp(PingResp), buf);
    }

    /// A QoS 0 publish to the device (commands).
    pub fn publish(&self, topic: Bytes, payload: Bytes, buf: &mut BytesMut) {
        self.write(Packet::Publish(Publish::new(topic, payload, false), None), buf);
    }

    /// Granted / refused subscription codes for this version: v4 knows only 0x80 for a refusal.
    pub fn sub_refused(&self, invalid: bool) -> SubscribeReasonCode {
        match (self.version(), invalid) {
            (Version::V4, _) => SubscribeReasonCode::Failure,
            (Version::V5, true) => SubscribeReasonCode::TopicFilterInvalid,
            (Version::V5, false) => SubscribeReasonCode::NotAuthorized,
        }
    }

    /// A v5 DISCONNECT with a reason code (v4 has no server DISCONNECT: the socket is just closed).
    pub fn disconnect(&self, reason: u8, buf: &mut BytesMut) {
        if self.version() == Version::V5 {
            // rumqttd's v5 DISCONNECT writer mis-frames the short form; it is three bytes.
            buf.put_slice(&[0xE0, 0x01, reason]);
        }
    }
}

/// v5 DISCONNECT reason codes we send.
pub mod reason {
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    pub const PROTOCOL_ERROR: u8 = 0x82;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const SERVER_BUSY: u8 = 0x89;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(name: &str, level: u8) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(&[level, 0x02, 0, 0, 0, 1, b'c']);
        let mut frame = vec![0x10, body.len() as u8];
        frame.extend(body);
        frame
    }

    #[test]
    fn sniffs_versions() {
        assert_eq!(sniff_connect(&connect("MQTT", 4), 1024), Sniff::Connect(Version::V4));
        assert_eq!(sniff_connect(&connect("MQTT", 5), 1024), Sniff::Connect(Version::V5));
        assert_eq!(sniff_connect(&connect("MQIsdp", 3), 1024), Sniff::UnsupportedLevel(3));
        assert_eq!(sniff_connect(&connect("HTTP", 4), 1024), Sniff::NotMqtt);
        assert_eq!(sniff_connect(&connect("MQTT", 4)[..5], 1024), Sniff::NeedMore);
        assert_eq!(sniff_connect(b"GET / HTTP/1.1\r\n\r\n", 1024), Sniff::NotMqtt);
        assert_eq!(sniff_connect(&[0x10], 1024), Sniff::NeedMore);
        assert_eq!(sniff_connect(&connect("MQTT", 4), 4), Sniff::NotMqtt, "over the size limit");
    }

    #[test]
    fn peeks_publish_qos_and_packet_id() {
        // QoS 1 publish to "a/b", pkid 0x1234, payload "x".
        let mut buf = BytesMut::from(&[0x32, 8, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'x'][..]);
        let info = peek(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(info, FrameInfo { packet_type: 3, qos: 1, pkid: 0x1234 });
        let mut partial = BytesMut::from(&[0x32, 8, 0, 3][..]);
        assert_eq!(peek(&mut partial, 1024).unwrap(), None);
        // A truncated variable header yields pkid 0; the codec then refuses the frame.
        let mut short = BytesMut::from(&[0x32, 2, 0, 9][..]);
        assert_eq!(peek(&mut short, 1024).unwrap().unwrap().pkid, 0);
    }

    #[test]
    fn connack_codes_on_the_wire() {
        for (code, v4, v5) in [
            (ConnackCode::BadCredentials, 4, 0x86),
            (ConnackCode::NotAuthorized, 5, 0x87),
            (ConnackCode::UnsupportedVersion, 1, 0x84),
            (ConnackCode::ServerBusy, 3, 0x89),
            (ConnackCode::RateExceeded, 5, 0x9F),
        ] {
            let mut buf = BytesMut::new();
            Codec::new(Version::V4).connack(code, None, &mut buf);
            assert_eq!(buf[3], v4);
            assert_eq!(code.wire(Version::V4), v4);
            let mut buf = BytesMut::new();
            Codec::new(Version::V5).connack(code, None, &mut buf);
            assert_eq!(buf[3], v5);
            assert_eq!(code.wire(Version::V5), v5);
        }
    }

    #[test]
    fn refused_suback_is_0x80_on_v4() {
        let mut buf = BytesMut::new();
        let codec = Codec::new(Version::V4);
        codec.suback(
            7,
            vec![codec.sub_refused(false), SubscribeReasonCode::Success(rumqttd::protocol::QoS::AtMostOnce)],
            &mut buf,
        );
        assert_eq!(&buf[..], &[0x90, 4, 0, 7, 0x80, 0x00]);
    }
}
