//! Parsing PCR lists such as `0-7,11,32-35`.

use anyhow::{Context, Result, bail};
use vtpm::{PCR_COUNT, PcrSelection};

/// Parse a comma-separated list of PCR indices and inclusive ranges.
pub fn parse(s: &str) -> Result<PcrSelection> {
    let mut indices = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi {
            bail!("PCR range {part} is reversed");
        }
        indices.extend(lo..=hi);
    }
    if indices.is_empty() {
        bail!("empty PCR list");
    }
    PcrSelection::from_indices(indices).context("PCR index out of range")
}

fn num(s: &str) -> Result<u16> {
    let n: u16 = s
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a PCR index"))?;
    if n as usize >= PCR_COUNT {
        bail!("PCR {n} out of range (0-{})", PCR_COUNT - 1);
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let s = parse("0-2, 11,1023").unwrap();
        assert_eq!(
            s.iter().map(|p| p.get()).collect::<Vec<_>>(),
            vec![0, 1, 2, 11, 1023]
        );
        assert!(parse("5-3").is_err());
        assert!(parse("1024").is_err());
        assert!(parse("x").is_err());
        assert!(parse("").is_err());
    }
}
