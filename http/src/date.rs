//! Calendar dates for timestamps that are not HTTP dates: RFC 3339 in UTC
//! with milliseconds (`2026-11-21T20:27:42.555Z`), as Stoat's events and
//! policies and S3's XML write them. Proleptic Gregorian, Howard Hinnant's
//! algorithms; pure.

/// `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Appends `unix_ms` as RFC 3339 UTC with milliseconds.
pub fn write_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u64) {
    let seconds = unix_ms / 1000;
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let second_of_day = seconds % 86_400;
    let fields = [
        (year as u64, 4, b'-'),
        (u64::from(month), 2, b'-'),
        (u64::from(day), 2, b'T'),
        (second_of_day / 3600, 2, b':'),
        (second_of_day / 60 % 60, 2, b':'),
        (second_of_day % 60, 2, b'.'),
        (unix_ms % 1000, 3, b'Z'),
    ];
    for (value, width, separator) in fields {
        write_padded(out, value, width);
        out.push(separator);
    }
}

/// `value` in decimal, zero-padded to at least `width` digits.
fn write_padded(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut rest = value;
    let mut index = digits.len();
    while rest > 0 {
        index -= 1;
        digits[index] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    let used = digits.len() - index;
    out.extend_from_slice(&digits[digits.len() - used.max(width)..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc3339(unix_ms: u64) -> String {
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, unix_ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_292_862_555), "2026-11-21T20:27:42.555Z");
        assert_eq!(rfc3339(1_795_303_731_123), "2026-11-21T23:28:51.123Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn civil_dates_match_a_day_by_day_count() {
        // Walk 1970..2100 one day at a time against a simple calendar.
        let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
        for days in 0..47_482 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month as usize - 1];
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
    }
}
