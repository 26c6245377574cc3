//! Compile-time parsing of `ttl` values such as `"30s"`, `"15m"`, `"24h"`, `"7d"` or `"1h30m"`.

/// Why a duration literal was refused; the message says what is allowed.
#[derive(Debug, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    MissingNumber(char),
    MissingUnit(u64),
    UnknownUnit(char),
    Zero,
    TooLong,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const ALLOWED: &str = "expected a number followed by `s`, `m`, `h` or `d`, \
                               e.g. `\"30s\"`, `\"24h\"` or `\"1h30m\"`";
        match self {
            Self::Empty => write!(f, "empty duration; {ALLOWED}"),
            Self::MissingNumber(unit) => {
                write!(f, "unit `{unit}` has no number before it; {ALLOWED}")
            }
            Self::MissingUnit(n) => {
                write!(f, "`{n}` has no unit; expected e.g. `\"{n}s\"` or `\"{n}m\"`")
            }
            Self::UnknownUnit(unit) => write!(f, "unknown unit `{unit}`; {ALLOWED}"),
            Self::Zero => write!(f, "duration must be greater than zero, e.g. `\"30s\"`"),
            Self::TooLong => write!(f, "duration must be at most 365 days (`\"365d\"`)"),
        }
    }
}

const MAX_SECONDS: u64 = 365 * 24 * 60 * 60;

/// Parses a sequence of `<number><unit>` parts into whole seconds.
pub fn parse_seconds(text: &str) -> Result<u64, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(digit)))
                    .ok_or(DurationError::TooLong)?,
            );
            continue;
        }
        let unit_seconds = match c {
            's' => 1,
            'm' => 60,
            'h' => 60 * 60,
            'd' => 24 * 60 * 60,
            other => return Err(DurationError::UnknownUnit(other)),
        };
        let n = number.take().ok_or(DurationError::MissingNumber(c))?;
        total = n
            .checked_mul(unit_seconds)
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
        assert_eq!(parse_seconds("h"), Err(DurationError::MissingNumber('h')));
        assert_eq!(parse_seconds("5w"), Err(DurationError::UnknownUnit('w')));
        assert_eq!(parse_seconds("1 h"), Err(DurationError::UnknownUnit(' ')));
    }

    #[test]
    fn refuses_overflow_and_more_than_a_year() {
        assert_eq!(parse_seconds("366d"), Err(DurationError::TooLong));
        assert_eq!(parse_seconds("99999999999999999999s"), Err(DurationError::TooLong));
    }
}
