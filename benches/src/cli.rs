//! Shared pieces of the benchmarks' command lines (clap).

use std::str::FromStr;

/// Parses a count written with optional `_` separators (`20_000_000`), as the benchmarks' flags
/// and docs/PERFORMANCE.md write them.
pub fn count<T: FromStr>(s: &str) -> Result<T, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_accept_separators_and_refuse_junk() {
        assert_eq!(count::<u64>("20_000_000"), Ok(20_000_000));
        assert_eq!(count::<usize>("64"), Ok(64));
        assert!(count::<usize>("-1").is_err());
        assert!(count::<usize>("1e6").is_err());
        assert!(count::<u16>("70000").is_err());
    }
}
