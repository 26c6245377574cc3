//! Compile-time parsing of `ttl` values such as `"30s"`, `"15m"`, `"24h"`, `"7d"` or `"1h30m"`.

/// Why a duration literal was refused; the message says what is allowed.
#[derive(Debug, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    MissingNumber(String),
    MissingUnit(u64),
    UnknownUnit(String),
    /// A unit written as a word (`hours`): the letter it stands for.
    UnitWord {
        word: String,
        unit: char,
    },
    /// Spaces inside (`"24 hours"`), with the compact form when there is one.
    Spaces {
        compact: Option<String>,
    },
    Zero,
    TooLong,
}

const ALLOWED: &str = "expected a number followed by `s`, `m`, `h` or `d`, e.g. `\"30s\"`, `\"24h\"` or `\"1h30m\"`";

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => write!(f, "empty duration; {ALLOWED}"),
            Self::MissingNumber(unit) => {
                write!(f, "unit `{unit}` has no number before it; {ALLOWED}")
            }
            Self::MissingUnit(n) => {
                write!(f, "`{n}` has no unit; expected e.g. `\"{n}s\"` or `\"{n}m\"`")
            }
            Self::UnknownUnit(unit) => write!(f, "unknown unit `{unit}`; {ALLOWED}"),
            Self::UnitWord { word, unit } => write!(f, "write the unit `{word}` as `{unit}`; {ALLOWED}"),
            Self::Spaces { compact: Some(compact) } => {
                write!(f, "a duration has no spaces: write `\"{compact}\"`")
            }
            Self::Spaces { compact: None } => write!(f, "a duration has no spaces; {ALLOWED}"),
            Self::Zero => write!(f, "duration must be greater than zero, e.g. `\"30s\"`"),
            Self::TooLong => write!(f, "duration must be at most 365 days (`\"365d\"`)"),
        }
    }
}

const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// The seconds of a unit letter.
fn unit_seconds(unit: &str) -> Option<u64> {
    match unit {
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(60 * 60),
        "d" => Some(24 * 60 * 60),
        _ => None,
    }
}

/// The letter a unit written as a word stands for (`hours` → `h`).
fn unit_letter(word: &str) -> Option<char> {
    match word.to_ascii_lowercase().as_str() {
        "sec" | "secs" | "second" | "seconds" => Some('s'),
        "min" | "mins" | "minute" | "minutes" => Some('m'),
        "hr" | "hrs" | "hour" | "hours" => Some('h'),
        "day" | "days" => Some('d'),
        _ => None,
    }
}

/// Parses a sequence of `<number><unit>` parts into whole seconds.
pub fn parse_seconds(text: &str) -> Result<u64, DurationError> {
    if text.trim().is_empty() {
        return Err(DurationError::Empty);
    }
    if text.contains(char::is_whitespace) {
        return Err(DurationError::Spaces { compact: compact(text) });
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits > 0 {
            number = Some(rest[..digits].parse().map_err(|_| DurationError::TooLong)?);
            rest = &rest[digits..];
            continue;
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(seconds) = unit_seconds(unit) else {
            return Err(match unit_letter(unit) {
                Some(letter) => DurationError::UnitWord {
                    word: unit.to_owned(),
                    unit: letter,
                },
                None => DurationError::UnknownUnit(unit.to_owned()),
            });
        };
        let n = number
            .take()
            .ok_or_else(|| DurationError::MissingNumber(unit.to_owned()))?;
        total = n
            .checked_mul(seconds)
            .and_then(|part| total.checked_add(part))
            .ok_or(DurationError::TooLong)?;
    }
    if let Some(n) = number {
        return Err(DurationError::MissingUnit(n));
    }
    match total {
        0 => Err(DurationError::Zero),
        t if t > MAX_SECONDS => Err(DurationError::TooLong),
        t => Ok(t),
    }
}

/// `"24 hours"` as it should be written (`"24h"`), when that form is valid.
fn compact(text: &str) -> Option<String> {
    let mut out = String::new();
    for part in text.split_whitespace() {
        let digits = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(part.len());
        let (number, unit) = part.split_at(digits);
        out.push_str(number);
        match unit_letter(unit) {
            Some(letter) => out.push(letter),
            None => out.push_str(unit),
        }
    }
    parse_seconds(&out).is_ok().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("15m"), Ok(900));
        assert_eq!(parse_seconds("24h"), Ok(86_400));
        assert_eq!(parse_seconds("7d"), Ok(604_800));
        assert_eq!(parse_seconds("1h30m"), Ok(5_400));
    }

    #[test]
    fn refuses_zero_missing_parts_and_unknown_units() {
        assert_eq!(parse_seconds(""), Err(DurationError::Empty));
        assert_eq!(parse_seconds("0s"), Err(DurationError::Zero));
        assert_eq!(parse_seconds("0h0m"), Err(DurationError::Zero));
        assert_eq!(parse_seconds("10"), Err(DurationError::MissingUnit(10)));
        assert_eq!(parse_seconds("h"), Err(DurationError::MissingNumber("h".into())));
        assert_eq!(parse_seconds("5w"), Err(DurationError::UnknownUnit("w".into())));
    }

    #[test]
    fn units_written_as_words_or_with_spaces_get_the_compact_form() {
        let spaced = parse_seconds("24 hours").unwrap_err();
        assert_eq!(spaced.to_string(), "a duration has no spaces: write `\"24h\"`");
        assert_eq!(
            parse_seconds("1 h 30 min").unwrap_err(),
            DurationError::Spaces {
                compact: Some("1h30m".into())
            }
        );
        assert_eq!(
            parse_seconds("2days").unwrap_err(),
            DurationError::UnitWord {
                word: "days".into(),
                unit: 'd'
            }
        );
        assert_eq!(parse_seconds("5 weeks"), Err(DurationError::Spaces { compact: None }));
    }

    #[test]
    fn refuses_overflow_and_more_than_a_year() {
        assert_eq!(parse_seconds("366d"), Err(DurationError::TooLong));
        assert_eq!(parse_seconds("99999999999999999999s"), Err(DurationError::TooLong));
    }
}
