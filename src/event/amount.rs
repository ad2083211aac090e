//! Exact amounts: a JSON number's decimal text or a decimal string, never
//! through binary floating point (`2.675` stays `2.675` and rounds to `2.68`).

use rust_decimal::Decimal;

/// The largest number of significant integer digits an amount may have.
pub const MAX_INTEGER_DIGITS: usize = 15;
/// The largest number of significant fraction digits an amount may have.
pub const MAX_FRACTION_DIGITS: usize = 6;

/// Why a value is not an acceptable amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Below zero.
    #[error("must be at least 0")]
    Negative,
    /// More digits than the contract allows (this includes `1e999`).
    #[error("must have at most 15 integer and 6 fraction digits")]
    TooManyDigits,
    /// A string that is not `[0-9]+(\.[0-9]+)?`.
    #[error("must be a decimal string such as \"12.50\" (digits, optionally a point and digits)")]
    NotADecimal,
}

/// A decimal number as significant digits times a power of ten: the form in
/// which digit limits can be checked whatever the notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecimalText {
    pub negative: bool,
    /// Significant digits, without leading or trailing zeros; empty for zero.
    pub digits: String,
    /// The power of ten the digits are multiplied by.
    pub exponent: i64,
}

impl DecimalText {
    /// Splits a JSON number (already known to be valid JSON) into its parts.
    pub fn from_json_number(text: &str) -> Option<DecimalText> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exp_text) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() || !is_digits(int_part) || !is_digits(frac_part) {
            return None;
        }
        let mut exponent: i64 = 0;
        if let Some(exp_text) = exp_text {
            let (sign, digits) = match exp_text.as_bytes().first()? {
                b'+' => (1, &exp_text[1..]),
                b'-' => (-1, &exp_text[1..]),
                _ => (1, exp_text),
            };
            if digits.is_empty() || !is_digits(digits) {
                return None;
            }
            // Beyond a billion the value is out of every range we accept
            // (unless it is zero, which the digits decide below).
            let digits = digits.trim_start_matches('0');
            exponent = if digits.len() > 9 {
                sign * 1_000_000_000
            } else {
                sign * digits.parse::<i64>().unwrap_or(0)
            };
        }
        Some(Self::normalise(negative, int_part, frac_part, exponent))
    }

    /// Splits a decimal string `[0-9]+(\.[0-9]+)?`; anything else is `None`.
    pub fn from_decimal_string(text: &str) -> Option<DecimalText> {
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) if !f.is_empty() => (i, f),
            Some(_) => return None,
            None => (text, ""),
        };
        if int_part.is_empty() || !is_digits(int_part) || !is_digits(frac_part) {
            return None;
        }
        Some(Self::normalise(false, int_part, frac_part, 0))
    }

    fn normalise(negative: bool, int_part: &str, frac_part: &str, exponent: i64) -> DecimalText {
        let mut digits = String::with_capacity(int_part.len() + frac_part.len());
        digits.push_str(int_part);
        digits.push_str(frac_part);
        let mut exponent = exponent - frac_part.len() as i64;
        let trimmed = digits.trim_end_matches('0');
        exponent += (digits.len() - trimmed.len()) as i64;
        let trimmed = trimmed.trim_start_matches('0');
        if trimmed.is_empty() {
            return DecimalText {
                negative: false,
                digits: String::new(),
                exponent: 0,
            };
        }
        DecimalText {
            negative,
            digits: trimmed.to_owned(),
            exponent,
        }
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Significant digits left of the point.
    pub fn integer_digits(&self) -> i64 {
        (self.digits.len() as i64 + self.exponent).max(0)
    }

    /// Significant digits right of the point.
    pub fn fraction_digits(&self) -> i64 {
        (-self.exponent).max(0)
    }

    /// The value as an integer, when it is one and fits in an `i64`.
    pub fn to_integer(&self) -> Option<i64> {
        if self.is_zero() {
            return Some(0);
        }
        if self.exponent < 0 || self.integer_digits() > 18 {
            return None;
        }
        let mut value: i64 = self.digits.parse().ok()?;
        for _ in 0..self.exponent {
            value = value.checked_mul(10)?;
        }
        Some(if self.negative { -value } else { value })
    }

    /// Whether the value has no fraction.
    pub fn is_integer(&self) -> bool {
        self.exponent >= 0 || self.is_zero()
    }

    fn to_amount(&self) -> Result<Decimal, AmountError> {
        if self.is_zero() {
            return Ok(Decimal::ZERO);
        }
        if self.negative {
            return Err(AmountError::Negative);
        }
        if self.integer_digits() > MAX_INTEGER_DIGITS as i64
            || self.fraction_digits() > MAX_FRACTION_DIGITS as i64
        {
            return Err(AmountError::TooManyDigits);
        }
        // At most 21 significant digits: always fits an i128 and a Decimal.
        let mut mantissa: i128 = self
            .digits
            .parse()
            .map_err(|_| AmountError::TooManyDigits)?;
        for _ in 0..self.exponent.max(0) {
            mantissa *= 10;
        }
        let scale = self.fraction_digits() as u32;
        Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|_| AmountError::TooManyDigits)
    }
}

fn is_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit())
}

/// An amount written as a JSON number (its exact decimal text).
pub fn parse_amount_number(text: &str) -> Result<Decimal, AmountError> {
    DecimalText::from_json_number(text)
        .ok_or(AmountError::NotADecimal)?
        .to_amount()
}

/// An amount written as a decimal string.
pub fn parse_amount_string(text: &str) -> Result<Decimal, AmountError> {
    DecimalText::from_decimal_string(text)
        .ok_or(AmountError::NotADecimal)?
        .to_amount()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn numbers_keep_their_decimal_text() {
        assert_eq!(parse_amount_number("2.675"), Ok(dec("2.675")));
        assert_eq!(parse_amount_number("0.1"), Ok(dec("0.1")));
        assert_eq!(parse_amount_number("1e2"), Ok(dec("100")));
        assert_eq!(parse_amount_number("1.5E-3"), Ok(dec("0.0015")));
        assert_eq!(parse_amount_number("0"), Ok(Decimal::ZERO));
        assert_eq!(parse_amount_number("-0"), Ok(Decimal::ZERO));
        assert_eq!(parse_amount_number("-0.0e5"), Ok(Decimal::ZERO));
        assert_eq!(parse_amount_number("0e999999999999"), Ok(Decimal::ZERO));
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(parse_amount_number("-0.01"), Err(AmountError::Negative));
        assert_eq!(parse_amount_number("-1e-9"), Err(AmountError::Negative));
    }

    #[test]
    fn digit_limits_ignore_leading_and_trailing_zeros() {
        assert_eq!(
            parse_amount_string("000999999999999999.999999000"),
            Ok(dec("999999999999999.999999"))
        );
        assert_eq!(
            parse_amount_string("1000000000000000"),
            Err(AmountError::TooManyDigits)
        );
        assert_eq!(
            parse_amount_string("0.0000001"),
            Err(AmountError::TooManyDigits)
        );
        assert_eq!(
            parse_amount_number("1e999"),
            Err(AmountError::TooManyDigits)
        );
        assert_eq!(
            parse_amount_number("1e-999"),
            Err(AmountError::TooManyDigits)
        );
        assert_eq!(parse_amount_number("1e15"), Err(AmountError::TooManyDigits));
        assert_eq!(parse_amount_number("1e14"), Ok(dec("100000000000000")));
        assert_eq!(parse_amount_number("12345e-6"), Ok(dec("0.012345")));
    }

    #[test]
    fn decimal_strings_are_digits_and_one_point() {
        assert_eq!(parse_amount_string("12.50"), Ok(dec("12.50")));
        assert_eq!(parse_amount_string("007"), Ok(dec("7")));
        for bad in [
            "", ".5", "5.", "-1", "+1", "1e2", " 1", "1 ", "1,5", "１", "0x10", "NaN",
        ] {
            assert_eq!(
                parse_amount_string(bad),
                Err(AmountError::NotADecimal),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn integers_are_recognised_in_any_notation() {
        let int = |s: &str| DecimalText::from_json_number(s).unwrap().to_integer();
        assert_eq!(int("2.0"), Some(2));
        assert_eq!(int("1e2"), Some(100));
        assert_eq!(int("1.5e1"), Some(15));
        assert_eq!(int("-3"), Some(-3));
        assert_eq!(int("1.5"), None);
        assert_eq!(int("1e400"), None);
        assert!(DecimalText::from_json_number("1e400").unwrap().is_integer());
    }
}
