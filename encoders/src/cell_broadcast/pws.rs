//! Taiwan PWS classes and their 3GPP message identifiers (TS 23.041 §9.4.1.2.2, CMAS range).
//!
//! Every class has a Chinese channel and an English ("additional language") channel; a
//! handset subscribed to both shows both, so an alert goes out once on each.
//!
//! | class | 中文 | English |
//! |---|---|---|
//! | Presidential 國家級警報 | 4370 | 4383 |
//! | Emergency 緊急警報 (level 0–8) | 4371–4379 | 4384–4392 |
//! | Alert 警訊通知 | 911 | 919 |
//! | Monthly test | 4380 | 4393 |

use super::CbsError;

/// Which of a class's two channels a broadcast goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    /// The primary channel (Traditional Chinese text).
    Chinese,
    /// The additional-language channel (English text).
    English,
}

impl Language {
    /// ISO 639-1 code, as DCS 0x11 carries it.
    pub fn iso639(self) -> [u8; 2] {
        match self {
            Language::Chinese => *b"zh",
            Language::English => *b"en",
        }
    }
}

/// A Taiwan PWS class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PwsClass {
    /// 國家級警報: handsets cannot opt out.
    Presidential,
    /// 緊急警報, with its channel offset 0..=8 (identifiers 4371 + n / 4384 + n). The
    /// offsets follow the CMAS severity/urgency/certainty order; which hazard uses which is
    /// configuration, not this module's choice.
    Emergency(u8),
    /// 警訊通知.
    Alert,
    /// The required monthly test; handsets hide it unless set to show tests.
    MonthlyTest,
}

/// Highest emergency channel offset (4371 + 8 = 4379).
pub const MAX_EMERGENCY: u8 = 8;

impl PwsClass {
    /// The message identifier for this class on `language`'s channel.
    pub fn message_id(self, language: Language) -> Result<u16, CbsError> {
        let (zh, en) = match self {
            PwsClass::Presidential => (4370, 4383),
            PwsClass::Emergency(n) if n <= MAX_EMERGENCY => (4371 + u16::from(n), 4384 + u16::from(n)),
            PwsClass::Emergency(n) => return Err(CbsError::EmergencyLevel(n)),
            PwsClass::Alert => (911, 919),
            PwsClass::MonthlyTest => (4380, 4393),
        };
        Ok(match language {
            Language::Chinese => zh,
            Language::English => en,
        })
    }

    /// The class and channel language of a Taiwan PWS message identifier.
    pub fn from_message_id(id: u16) -> Option<(PwsClass, Language)> {
        use Language::*;
        Some(match id {
            4370 => (PwsClass::Presidential, Chinese),
            4383 => (PwsClass::Presidential, English),
            4371..=4379 => (PwsClass::Emergency((id - 4371) as u8), Chinese),
            4384..=4392 => (PwsClass::Emergency((id - 4384) as u8), English),
            911 => (PwsClass::Alert, Chinese),
            919 => (PwsClass::Alert, English),
            4380 => (PwsClass::MonthlyTest, Chinese),
            4393 => (PwsClass::MonthlyTest, English),
            _ => return None,
        })
    }
}

/// The other-language channel of the same class: 4370 ↔ 4383, 4371+n ↔ 4384+n, 911 ↔ 919,
/// 4380 ↔ 4393. `None` for identifiers outside Taiwan PWS.
pub fn paired_message_id(id: u16) -> Option<u16> {
    let (class, language) = PwsClass::from_message_id(id)?;
    let other = match language {
        Language::Chinese => Language::English,
        Language::English => Language::Chinese,
    };
    class.message_id(other).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_match_the_taiwan_table() {
        use Language::*;
        assert_eq!(PwsClass::Presidential.message_id(Chinese), Ok(4370));
        assert_eq!(PwsClass::Presidential.message_id(English), Ok(4383));
        assert_eq!(PwsClass::Emergency(0).message_id(Chinese), Ok(4371));
        assert_eq!(PwsClass::Emergency(8).message_id(Chinese), Ok(4379));
        assert_eq!(PwsClass::Emergency(0).message_id(English), Ok(4384));
        assert_eq!(PwsClass::Emergency(8).message_id(English), Ok(4392));
        assert_eq!(PwsClass::Emergency(9).message_id(Chinese), Err(CbsError::EmergencyLevel(9)));
        assert_eq!(PwsClass::Alert.message_id(Chinese), Ok(911));
        assert_eq!(PwsClass::Alert.message_id(English), Ok(919));
        assert_eq!(PwsClass::MonthlyTest.message_id(Chinese), Ok(4380));
        assert_eq!(PwsClass::MonthlyTest.message_id(English), Ok(4393));
    }

    #[test]
    fn every_identifier_round_trips_and_pairs() {
        let ids = [4370u16, 4383, 911, 919, 4380, 4393].into_iter().chain(4371..=4379).chain(4384..=4392);
        for id in ids {
            let (class, lang) = PwsClass::from_message_id(id).unwrap();
            assert_eq!(class.message_id(lang), Ok(id));
            let pair = paired_message_id(id).unwrap();
            assert_ne!(pair, id);
            assert_eq!(paired_message_id(pair), Some(id));
        }
        assert_eq!(paired_message_id(4370), Some(4383));
        assert_eq!(paired_message_id(4375), Some(4388));
        assert_eq!(paired_message_id(911), Some(919));
        assert_eq!(paired_message_id(4381), None);
        assert_eq!(PwsClass::from_message_id(4352), None);
    }
}
