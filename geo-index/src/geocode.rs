//! Taiwan_Geocode_103: the area codes Taiwan's CAP profile (CAP-TWP) puts in `<geocode>`.
//!
//! A county or city is 5 digits (`10008` Nantou County, `64000` Kaohsiung City); a township or district is those
//! 5 digits followed by a 2-digit number (`1000812` Xinyi Township, `6400033` Jiaxian District), i.e. the Ministry
//! of the Interior's 8-digit township code without its trailing zero.
//!
//! We check the county against the full list of 22 counties and the township number against that county's number
//! of townships. We do not carry the name of every township: a code that passes is *well-formed and in range*,
//! which catches typos and swapped digits, not a township renumbered after 2014.

use serde::Serialize;

/// The level of a geocode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GeocodeLevel {
    County,
    Township,
}

/// A checked Taiwan_Geocode_103 code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Geocode {
    /// The code as written (5 or 7 ASCII digits).
    pub code: String,
    /// County or township.
    pub level: GeocodeLevel,
    /// The county's English name, so an error or a log line can say where the code points.
    pub county: &'static str,
}

/// (5-digit county code, English name, number of townships/districts).
/// Counts are those of the 2014 ("103") revision, after Taoyuan became a special municipality (68000).
const COUNTIES: &[(&str, &str, u8)] = &[
    ("63000", "Taipei City", 12),
    ("64000", "Kaohsiung City", 38),
    ("65000", "New Taipei City", 29),
    ("66000", "Taichung City", 29),
    ("67000", "Tainan City", 37),
    ("68000", "Taoyuan City", 13),
    ("10002", "Yilan County", 12),
    ("10004", "Hsinchu County", 13),
    ("10005", "Miaoli County", 18),
    ("10007", "Changhua County", 26),
    ("10008", "Nantou County", 13),
    ("10009", "Yunlin County", 20),
    ("10010", "Chiayi County", 18),
    ("10013", "Pingtung County", 33),
    ("10014", "Taitung County", 16),
    ("10015", "Hualien County", 13),
    ("10016", "Penghu County", 6),
    ("10017", "Keelung City", 7),
    ("10018", "Hsinchu City", 3),
    ("10020", "Chiayi City", 2),
    ("09020", "Kinmen County", 6),
    ("09007", "Lienchiang County", 4),
];

/// Checks a geocode; the error is a short reason suitable for [`crate::ZoneProblem::BadGeocode`].
pub fn parse_geocode(code: &str) -> Result<Geocode, &'static str> {
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not all digits");
    }
    if code.len() != 5 && code.len() != 7 {
        return Err("must be 5 digits (county) or 7 digits (township)");
    }
    let (county_code, township) = code.split_at(5);
    let Some(&(_, county, townships)) = COUNTIES.iter().find(|(c, _, _)| *c == county_code) else {
        return Err("unknown county code");
    };
    if township.is_empty() {
        return Ok(Geocode { code: code.to_owned(), level: GeocodeLevel::County, county });
    }
    // Two ASCII digits, checked above, so the parse cannot fail; map it anyway rather than unwrap.
    let n: u8 = township.parse().map_err(|_| "township number is not a number")?;
    if n == 0 || n > townships {
        return Err("township number out of range for its county");
    }
    Ok(Geocode { code: code.to_owned(), level: GeocodeLevel::Township, county })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_parse() {
        let xinyi = parse_geocode("1000812").expect("Xinyi township");
        assert_eq!(xinyi.level, GeocodeLevel::Township);
        assert_eq!(xinyi.county, "Nantou County");
        assert_eq!(parse_geocode("64000").map(|g| g.level), Ok(GeocodeLevel::County));
        assert!(parse_geocode("6400038").is_ok(), "Namasia is Kaohsiung's 38th district");
    }

    #[test]
    fn bad_codes_say_why() {
        assert_eq!(parse_geocode("1000899"), Err("township number out of range for its county"));
        assert_eq!(parse_geocode("99999"), Err("unknown county code"));
        assert_eq!(parse_geocode("10008a"), Err("not all digits"));
        assert_eq!(parse_geocode("100081"), Err("must be 5 digits (county) or 7 digits (township)"));
        assert_eq!(parse_geocode("1000800"), Err("township number out of range for its county"));
    }
}
