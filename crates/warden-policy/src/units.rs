//! Amounts and durations as a policy file writes them: always with a unit, because a bare
//! `1000000` in a limit is an accident waiting for its victim (sat? msat? BTC?).

/// Millisatoshis per satoshi.
pub const MSAT_PER_SAT: u64 = 1_000;
/// Millisatoshis per bitcoin.
pub const MSAT_PER_BTC: u64 = 100_000_000_000;

/// Parse `"250_000 sat"`, `"0.01 btc"`, `"5000 msat"` into millisatoshis.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!("\"{text}\" is negative; amounts are zero or more"));
    }
    let (number, unit) = match t.rsplit_once(|c: char| c.is_whitespace()) {
        Some((n, u)) => (n.trim(), u.trim()),
        None => {
            return Err(format!(
                "\"{text}\" has no unit; write it as \"{t} sat\", \"{t} msat\" or \"{t} btc\""
            ))
        }
    };
    let (scale, max_decimals) = match unit.to_ascii_lowercase().as_str() {
        "msat" => (1u64, 0u32),
        "sat" | "sats" => (MSAT_PER_SAT, 3),
        "btc" => (MSAT_PER_BTC, 11),
        other => {
            return Err(format!(
                "\"{text}\": unknown unit \"{other}\"; use msat, sat or btc"
            ))
        }
    };
    let digits: String = number.chars().filter(|c| *c != '_').collect();
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((&digits, ""));
    let ok_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if int_part.is_empty()
        || !ok_digits(int_part)
        || !ok_digits(frac_part)
        || number.starts_with('_')
    {
        return Err(format!("\"{text}\": \"{number}\" is not a number"));
    }
    if frac_part.len() as u32 > max_decimals {
        return Err(format!(
            "\"{text}\" is more precise than a millisatoshi; {unit} takes at most {max_decimals} decimal places"
        ));
    }
    let too_large = || format!("\"{text}\" is too large");
    let int: u64 = int_part.parse().map_err(|_| too_large())?;
    let mut frac: u64 = if frac_part.is_empty() {
        0
    } else {
        frac_part.parse().map_err(|_| too_large())?
    };
    for _ in frac_part.len() as u32..max_decimals {
        frac = frac.checked_mul(10).ok_or_else(too_large)?;
    }
    int.checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(too_large)
}

/// Render millisatoshis as an operator reads them: `1,250,000 sat`, or `1,250,000.5 sat`.
/// Takes `u128` so that sums beyond `u64::MAX` (which the evaluator can form) print exactly.
pub fn format_msat(msat: impl Into<u128>) -> String {
    let msat: u128 = msat.into();
    let sat = msat / u128::from(MSAT_PER_SAT);
    let rem = msat % u128::from(MSAT_PER_SAT);
    let mut s = group_thousands(sat);
    if rem != 0 {
        let frac = format!("{rem:03}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" sat");
    s
}

/// `1234567` → `1,234,567`.
pub fn group_thousands(n: impl Into<u128>) -> String {
    let n: u128 = n.into();
    let raw = n.to_string();
    let mut out = String::with_capacity(raw.len() + raw.len() / 3);
    for (i, c) in raw.chars().enumerate() {
        if i > 0 && (raw.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A feerate as a policy writes it, `"<n> sat/vB"` or `"<n> sat/kw"` (whole numbers), in sat
/// per 1,000 weight units.
pub fn parse_feerate(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit) = t.rsplit_once(|c: char| c.is_whitespace()).ok_or_else(|| {
        format!("\"{text}\" has no unit; write e.g. \"100 sat/vB\" or \"25000 sat/kw\"")
    })?;
    let n: u64 = number.trim().replace('_', "").parse().map_err(|_| {
        format!("\"{text}\" is not a whole number with a unit, e.g. \"100 sat/vB\"")
    })?;
    match unit {
        "sat/vB" | "sat/vb" => n
            .checked_mul(250)
            .ok_or_else(|| format!("\"{text}\" is too large")),
        "sat/kw" => Ok(n),
        other => Err(format!(
            "unknown feerate unit \"{other}\" in \"{text}\"; use sat/vB or sat/kw"
        )),
    }
}

/// A feerate in sat/kw as the policy reference writes it, in sat/vB.
pub fn format_feerate(per_kw: u64) -> String {
    let (whole, rest) = (per_kw / 250, per_kw % 250);
    if rest == 0 {
        format!("{} sat/vB", group_thousands(whole))
    } else {
        // Hundredths, rounded up: a rate just over a bound never prints as the bound.
        let (whole, hundredths) = match (rest * 100).div_ceil(250) {
            100 => (whole + 1, 0),
            h => (whole, h),
        };
        format!("{}.{hundredths:02} sat/vB", group_thousands(whole))
    }
}

/// Parse `"15m"`, `"1h"`, `"24h"`, `"7d"`, `"90s"` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if t.starts_with('-') {
        return Err(format!("\"{text}\" is negative; durations are positive"));
    }
    if number.is_empty() {
        return Err(format!(
            "\"{text}\" is not a duration; write e.g. \"15m\", \"1h\", \"24h\", \"7d\""
        ));
    }
    let unit_secs = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "" => {
            return Err(format!(
                "\"{text}\" has no unit; write \"{number}s\", \"{number}m\", \"{number}h\" or \"{number}d\""
            ))
        }
        other => return Err(format!("\"{text}\": unknown unit \"{other}\"; use s, m, h or d")),
    };
    let n: u64 = number
        .replace('_', "")
        .parse()
        .map_err(|_| format!("\"{text}\" is too large"))?;
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("\"{text}\" is too large"))?;
    if secs == 0 {
        return Err(format!("\"{text}\" is zero; a duration must be positive"));
    }
    Ok(secs)
}

/// Render seconds in the largest exact unit, as people write windows: `3600` → `1h`,
/// `86400` → `24h`, `172800` → `2d`.
pub fn format_duration(secs: u64) -> String {
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs % size == 0 && !(unit == "d" && secs < 2 * 86_400) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// `2026-11-25 12:00:00 UTC` for a Unix time: approval texts show it to humans.
pub fn format_utc(t: u64) -> String {
    // Civil-from-days (Howard Hinnant), valid for any date after 1970.
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_795_435_200), "2026-11-23 12:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn amounts_in_every_unit() {
        assert_eq!(parse_amount("250_000 sat"), Ok(250_000_000));
        assert_eq!(parse_amount("0.01 btc"), Ok(1_000_000_000));
        assert_eq!(parse_amount("5000 msat"), Ok(5_000));
        assert_eq!(parse_amount("1.5 sat"), Ok(1_500));
        assert_eq!(parse_amount("21000000 BTC"), Ok(21_000_000 * MSAT_PER_BTC));
        assert_eq!(parse_amount("0 sat"), Ok(0));
        assert_eq!(parse_amount("0.00000000001 btc"), Ok(1));
    }

    #[test]
    fn bad_amounts_say_what_is_wrong() {
        assert!(parse_amount("1000").unwrap_err().contains("has no unit"));
        assert!(parse_amount("-5 sat").unwrap_err().contains("is negative"));
        assert!(parse_amount("5 sats!")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_amount("1.2345 sat")
            .unwrap_err()
            .contains("more precise than a millisatoshi"));
        assert!(parse_amount("1.5 msat")
            .unwrap_err()
            .contains("at most 0 decimal places"));
        assert!(parse_amount("abc sat")
            .unwrap_err()
            .contains("is not a number"));
        assert!(parse_amount("1..2 sat")
            .unwrap_err()
            .contains("is not a number"));
    }

    #[test]
    fn amounts_at_the_extremes_do_not_overflow() {
        assert_eq!(parse_amount(&format!("{} msat", u64::MAX)), Ok(u64::MAX));
        assert!(parse_amount(&format!("{} sat", u64::MAX))
            .unwrap_err()
            .contains("too large"));
        assert!(parse_amount("184467440737095516160 msat")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_amount("184467441 btc")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn formats_msat_for_people() {
        assert_eq!(format_msat(1_250_000_000u64), "1,250,000 sat");
        assert_eq!(format_msat(1_500u64), "1.5 sat");
        assert_eq!(format_msat(7u64), "0.007 sat");
        assert_eq!(format_msat(0u64), "0 sat");
        assert_eq!(format_msat(u64::MAX), "18,446,744,073,709,551.615 sat");
        assert_eq!(
            format_msat(u128::from(u64::MAX) + 1),
            "18,446,744,073,709,551.616 sat"
        );
    }

    #[test]
    fn feerates_are_parsed_with_their_unit_and_printed_in_sat_per_vbyte() {
        assert_eq!(parse_feerate("100 sat/vB"), Ok(25_000));
        assert_eq!(parse_feerate("25_000 sat/kw"), Ok(25_000));
        assert_eq!(
            parse_feerate("100"),
            Err("\"100\" has no unit; write e.g. \"100 sat/vB\" or \"25000 sat/kw\"".into())
        );
        assert!(parse_feerate("100 sat/byte")
            .unwrap_err()
            .contains("unknown feerate unit \"sat/byte\""));
        assert!(parse_feerate("1.5 sat/vB")
            .unwrap_err()
            .contains("not a whole number"));
        assert_eq!(format_feerate(25_000), "100 sat/vB");
        assert_eq!(format_feerate(4_337_900), "17,351.60 sat/vB");
        assert_eq!(
            format_feerate(25_001),
            "100.01 sat/vB",
            "rounded up, never to the bound"
        );
        assert_eq!(format_feerate(249), "1.00 sat/vB");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3_600));
        assert_eq!(parse_duration("24h"), Ok(86_400));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("60").unwrap_err().contains("has no unit"));
        assert!(parse_duration("0h").unwrap_err().contains("is zero"));
        assert!(parse_duration("1w")
            .unwrap_err()
            .contains("unknown unit \"w\""));
        assert!(parse_duration("-1h").unwrap_err().contains("negative"));
        assert!(parse_duration("99999999999999999999h")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(format_duration(3_600), "1h");
        assert_eq!(format_duration(86_400), "24h");
        assert_eq!(format_duration(172_800), "2d");
        assert_eq!(format_duration(90), "90s");
    }
}
