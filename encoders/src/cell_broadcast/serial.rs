//! The CBS serial number (3GPP TS 23.041 §9.4.1.2.1): 16 bits that tell a handset whether a
//! page is a new message, an update of one it has shown, or a repeat it should ignore.
//!
//! ```text
//!  15 14 | 13 ............ 4 | 3 .. 0
//!   GS   |   message code    | update number
//! ```

use super::CbsError;

/// Geographic scope (2 bits): the area over which the message code is unique, and for
/// cell-wide scope whether the handset shows the message at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeoScope {
    /// 0: cell-wide, displayed immediately.
    CellImmediate = 0,
    /// 1: PLMN-wide, normal display. A phone that moves between cells of the carrier does not
    /// show the same message twice: the right default for area warnings.
    Plmn = 1,
    /// 2: location area (GSM), service area (UMTS) or tracking area (LTE) wide.
    Area = 2,
    /// 3: cell-wide, normal display.
    CellNormal = 3,
}

impl GeoScope {
    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0 => GeoScope::CellImmediate,
            1 => GeoScope::Plmn,
            2 => GeoScope::Area,
            _ => GeoScope::CellNormal,
        }
    }
}

/// A serial number. Fields are private so that every value is in range: the constructor
/// checks the 10-bit message code and the 4-bit update number once, and encoders cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SerialNumber {
    /// Scope over which `message_code` identifies one alert.
    geo_scope: GeoScope,
    /// 0..=1023, unique per alert within the scope (the caller allocates it).
    message_code: u16,
    /// 0..=15, bumped on every update of the alert so handsets show the new text.
    update_number: u8,
}

impl SerialNumber {
    /// Largest message code (10 bits).
    pub const MAX_MESSAGE_CODE: u16 = 0x3FF;
    /// Largest update number (4 bits).
    pub const MAX_UPDATE_NUMBER: u8 = 0xF;

    /// A serial number, or an error naming the field that does not fit its bits.
    pub fn new(geo_scope: GeoScope, message_code: u16, update_number: u8) -> Result<Self, CbsError> {
        if message_code > Self::MAX_MESSAGE_CODE {
            return Err(CbsError::MessageCode(message_code));
        }
        if update_number > Self::MAX_UPDATE_NUMBER {
            return Err(CbsError::UpdateNumber(update_number));
        }
        Ok(SerialNumber { geo_scope, message_code, update_number })
    }

    pub fn geo_scope(self) -> GeoScope {
        self.geo_scope
    }

    pub fn message_code(self) -> u16 {
        self.message_code
    }

    pub fn update_number(self) -> u8 {
        self.update_number
    }

    /// The same alert, one update later. The update number wraps 15 → 0 as TS 23.041 allows:
    /// handsets compare for inequality, so 0 after 15 still reads as new.
    pub fn next_update(self) -> Self {
        SerialNumber { update_number: (self.update_number + 1) & 0xF, ..self }
    }

    /// The 16-bit wire value.
    pub fn to_u16(self) -> u16 {
        (self.geo_scope as u16) << 14 | self.message_code << 4 | u16::from(self.update_number)
    }

    /// Decode a wire value; every 16-bit value is a valid serial number.
    pub fn from_u16(v: u16) -> Self {
        SerialNumber {
            geo_scope: GeoScope::from_bits(v >> 14),
            message_code: (v >> 4) & 0x3FF,
            update_number: (v & 0xF) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_serial() {
        // README vector: 0x4170 = GS 01, message code 23, update 0.
        let s = SerialNumber::new(GeoScope::Plmn, 23, 0).unwrap();
        assert_eq!(s.to_u16(), 0x4170);
        assert_eq!(SerialNumber::from_u16(0x4170), s);
    }

    #[test]
    fn out_of_range_fields_are_errors() {
        assert_eq!(SerialNumber::new(GeoScope::Plmn, 1024, 0), Err(CbsError::MessageCode(1024)));
        assert_eq!(SerialNumber::new(GeoScope::Plmn, 0, 16), Err(CbsError::UpdateNumber(16)));
        assert!(SerialNumber::new(GeoScope::CellNormal, 1023, 15).is_ok());
    }

    #[test]
    fn update_number_wraps() {
        let mut s = SerialNumber::new(GeoScope::Area, 1023, 14).unwrap();
        s = s.next_update();
        assert_eq!(s.update_number(), 15);
        s = s.next_update();
        assert_eq!(s.update_number(), 0);
        assert_eq!(s.message_code(), 1023);
        assert_eq!(s.geo_scope(), GeoScope::Area);
        assert_eq!(s.to_u16(), (0b10 << 14) | (1023 << 4));
    }
}
