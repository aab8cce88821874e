//! `byte_test` and `byte_jump`: read a number from the payload and compare it, or move the
//! cursor by it (Snort 2.9 semantics).

/// How the bytes are turned into a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Big,
    Little,
    /// ASCII digits in this base (`string, hex|dec|oct`).
    Text(u32),
}

/// The number-reading part shared by both options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extract {
    pub(crate) bytes: usize,
    pub(crate) offset: i32,
    pub(crate) relative: bool,
    pub(crate) encoding: Encoding,
    pub(crate) bitmask: Option<u32>,
}

impl Extract {
    /// Position of the first byte, and the value there, or `None` if out of bounds or (text)
    /// not a number.
    pub(crate) fn read(&self, buf: &[u8], cursor: usize) -> Option<(usize, u32)> {
        let base = if self.relative { cursor as i64 } else { 0 };
        let pos = base + i64::from(self.offset);
        if pos < 0 || pos as usize + self.bytes > buf.len() {
            return None;
        }
        let pos = pos as usize;
        let raw = &buf[pos..pos + self.bytes];
        let mut v: u32 = match self.encoding {
            Encoding::Big => raw.iter().fold(0u32, |a, &b| a << 8 | u32::from(b)),
            Encoding::Little => raw.iter().rev().fold(0u32, |a, &b| a << 8 | u32::from(b)),
            Encoding::Text(radix) => text_number(raw, radix)?,
        };
        if let Some(mask) = self.bitmask {
            v &= mask;
            if mask != 0 {
                v >>= mask.trailing_zeros();
            }
        }
        Some((pos, v))
    }
}

/// `strtoul`-like: leading whitespace, optional `+`, optional `0x` for base 16, then as many
/// digits as there are (at least one). The result is truncated to 32 bits, as in Snort.
fn text_number(raw: &[u8], radix: u32) -> Option<u32> {
    let mut s = raw;
    while let [c, rest @ ..] = s
        && c.is_ascii_whitespace()
    {
        s = rest;
    }
    if let [b'+', rest @ ..] = s {
        s = rest;
    }
    if radix == 16
        && let [b'0', b'x' | b'X', rest @ ..] = s
        && rest.first().is_some_and(u8::is_ascii_hexdigit)
    {
        s = rest;
    }
    let mut v: u64 = 0;
    let mut any = false;
    for &c in s {
        let Some(d) = (c as char).to_digit(radix) else {
            break;
        };
        any = true;
        v = v.wrapping_mul(u64::from(radix)).wrapping_add(u64::from(d));
    }
    any.then_some(v as u32)
}

/// Comparison operator of `byte_test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOp {
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    And,
    Xor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteTest {
    pub(crate) extract: Extract,
    pub(crate) op: ByteOp,
    pub(crate) negated: bool,
    pub(crate) value: u32,
}

impl ByteTest {
    pub(crate) fn test(&self, buf: &[u8], cursor: usize) -> bool {
        let Some((_, x)) = self.extract.read(buf, cursor) else {
            return false;
        };
        let v = self.value;
        let r = match self.op {
            ByteOp::Lt => x < v,
            ByteOp::Gt => x > v,
            ByteOp::Le => x <= v,
            ByteOp::Ge => x >= v,
            ByteOp::Eq => x == v,
            ByteOp::And => x & v != 0,
            ByteOp::Xor => x ^ v != 0,
        };
        r != self.negated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteJump {
    pub(crate) extract: Extract,
    pub(crate) multiplier: u32,
    pub(crate) align: bool,
    pub(crate) from_beginning: bool,
    pub(crate) from_end: bool,
    pub(crate) post_offset: i32,
}

impl ByteJump {
    /// The new cursor, or `None` when the jump leaves the buffer.
    pub(crate) fn jump(&self, buf: &[u8], cursor: usize) -> Option<usize> {
        let (pos, v) = self.extract.read(buf, cursor)?;
        let mut j = i64::from(v) * i64::from(self.multiplier);
        if self.align {
            j = (j + 3) & !3;
        }
        let base = if self.from_beginning {
            0
        } else if self.from_end {
            buf.len() as i64
        } else {
            (pos + self.extract.bytes) as i64
        };
        let to = base + j + i64::from(self.post_offset);
        (0..=buf.len() as i64).contains(&to).then_some(to as usize)
    }
}

/// Why `byte_test` / `byte_jump` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ByteError {
    Malformed(String),
    Unsupported(String),
}

fn int(s: &str, what: &str) -> Result<i64, ByteError> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()
    } else {
        None
    };
    match v {
        Some(v) if v <= i64::from(u32::MAX) => Ok(if neg { -v } else { v }),
        Some(_) => Err(ByteError::Malformed(format!("{what} `{s}` out of range"))),
        None if body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') =>
        {
            Err(ByteError::Unsupported(format!(
                "byte_extract variable `{s}` as {what}"
            )))
        }
        None => Err(ByteError::Malformed(format!(
            "{what} `{s}` is not a number"
        ))),
    }
}

/// Parse the common flags; returns (encoding, relative, bitmask) and leaves other words to
/// `other`.
fn common<'a>(
    words: impl Iterator<Item = &'a str>,
    mut other: impl FnMut(&str, Option<&str>) -> Result<bool, ByteError>,
) -> Result<(Encoding, bool, Option<u32>), ByteError> {
    let mut endian = None;
    let mut string = false;
    let mut radix = None;
    let mut relative = false;
    let mut bitmask = None;
    for w in words.map(str::trim) {
        let (k, arg) = match w.split_once(char::is_whitespace) {
            Some((k, a)) => (k, Some(a.trim())),
            None => (w, None),
        };
        match k {
            "relative" => relative = true,
            "big" => endian = Some(Encoding::Big),
            "little" => endian = Some(Encoding::Little),
            "string" => string = true,
            "hex" => radix = Some(16),
            "dec" => radix = Some(10),
            "oct" => radix = Some(8),
            "dce" => return Err(ByteError::Unsupported("dce".into())),
            "bitmask" => {
                let a = arg.ok_or_else(|| ByteError::Malformed("bitmask without value".into()))?;
                let v = int(a, "bitmask")?;
                if !(0..=i64::from(u32::MAX)).contains(&v) {
                    return Err(ByteError::Malformed("bitmask out of range".into()));
                }
                bitmask = Some(v as u32);
            }
            _ => {
                if !other(k, arg)? {
                    return Err(ByteError::Malformed(format!("unknown argument `{w}`")));
                }
            }
        }
    }
    let encoding = match (string, radix, endian) {
        (true, Some(r), None) => Encoding::Text(r),
        // `string` without a base is decimal (as Snort 3 does).
        (true, None, None) => Encoding::Text(10),
        (true, _, Some(_)) => {
            return Err(ByteError::Malformed("string with big / little".into()));
        }
        (false, Some(_), _) => {
            return Err(ByteError::Malformed("hex/dec/oct without string".into()));
        }
        (false, None, e) => e.unwrap_or(Encoding::Big),
    };
    Ok((encoding, relative, bitmask))
}

fn check_bytes(bytes: i64, encoding: Encoding) -> Result<usize, ByteError> {
    let max = if matches!(encoding, Encoding::Text(_)) {
        10
    } else {
        4
    };
    if !(1..=max).contains(&bytes) {
        return Err(ByteError::Malformed(format!(
            "number of bytes must be 1..{max}"
        )));
    }
    Ok(bytes as usize)
}

fn offset(v: i64) -> Result<i32, ByteError> {
    if (-65535..=65535).contains(&v) {
        Ok(v as i32)
    } else {
        Err(ByteError::Malformed("offset out of range".into()))
    }
}

/// `byte_test:bytes, [!]op, value, offset [, relative] [, big|little] [, string, hex|dec|oct]
/// [, bitmask v] [, dce]`.
pub(crate) fn parse_byte_test(v: &str) -> Result<ByteTest, ByteError> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 4 {
        return Err(ByteError::Malformed(
            "expected bytes, operator, value, offset".into(),
        ));
    }
    let bytes = int(parts[0], "bytes")?;
    let op_text = parts[1];
    let (negated, op_text) = match op_text.strip_prefix('!') {
        Some(r) => (true, r.trim()),
        None => (false, op_text),
    };
    let op = match op_text {
        "<" => ByteOp::Lt,
        ">" => ByteOp::Gt,
        "<=" => ByteOp::Le,
        ">=" => ByteOp::Ge,
        "=" => ByteOp::Eq,
        // `!` alone: not equal.
        "" if negated => ByteOp::Eq,
        "&" => ByteOp::And,
        "^" => ByteOp::Xor,
        other => return Err(ByteError::Malformed(format!("unknown operator `{other}`"))),
    };
    let value = int(parts[2], "value")?;
    if !(0..=i64::from(u32::MAX)).contains(&value) {
        return Err(ByteError::Malformed("value out of range".into()));
    }
    let off = offset(int(parts[3], "offset")?)?;
    let (encoding, relative, bitmask) = common(parts[4..].iter().copied(), |_, _| Ok(false))?;
    Ok(ByteTest {
        extract: Extract {
            bytes: check_bytes(bytes, encoding)?,
            offset: off,
            relative,
            encoding,
            bitmask,
        },
        op,
        negated,
        value: value as u32,
    })
}

/// `byte_jump:bytes, offset [, relative] [, multiplier n] [, big|little] [, string,
/// hex|dec|oct] [, align] [, from_beginning | from_end] [, post_offset n] [, bitmask v]
/// [, dce]`.
pub(crate) fn parse_byte_jump(v: &str) -> Result<ByteJump, ByteError> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    if parts.len() < 2 {
        return Err(ByteError::Malformed("expected bytes, offset".into()));
    }
    let bytes = int(parts[0], "bytes")?;
    let off = offset(int(parts[1], "offset")?)?;
    let mut multiplier = 1u32;
    let mut align = false;
    let mut from_beginning = false;
    let mut from_end = false;
    let mut post_offset = 0i32;
    let (encoding, relative, bitmask) = common(parts[2..].iter().copied(), |k, arg| {
        match k {
            "multiplier" => {
                let m = int(arg.unwrap_or(""), "multiplier")?;
                if !(1..=65535).contains(&m) {
                    return Err(ByteError::Malformed("multiplier must be 1..65535".into()));
                }
                multiplier = m as u32;
            }
            "align" => align = true,
            "from_beginning" => from_beginning = true,
            "from_end" => from_end = true,
            "post_offset" => post_offset = offset(int(arg.unwrap_or(""), "post_offset")?)?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if from_beginning && from_end {
        return Err(ByteError::Malformed("from_beginning with from_end".into()));
    }
    Ok(ByteJump {
        extract: Extract {
            bytes: check_bytes(bytes, encoding)?,
            offset: off,
            relative,
            encoding,
            bitmask,
        },
        multiplier,
        align,
        from_beginning,
        from_end,
        post_offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_test_semantics() {
        let t = parse_byte_test("2, >, 0x100, 1").unwrap();
        assert!(t.test(&[0, 0x01, 0x01], 0));
        assert!(!t.test(&[0, 0x01, 0x00], 0));
        assert!(!t.test(&[0, 0x01], 0));
        let t = parse_byte_test("2,>,256,1,little").unwrap();
        assert!(t.test(&[0, 0x02, 0x01], 0) && !t.test(&[0, 0x00, 0x01], 0));
        let t = parse_byte_test("4,=,1234,0,string,dec,relative").unwrap();
        assert!(t.test(b"xx1234", 2) && !t.test(b"xx1235", 2));
        // strtoul-like: leading space skipped, " 123" is 123.
        assert!(!t.test(b"xx 1234", 2));
        let t = parse_byte_test("3,!=,12,0,string,dec").unwrap();
        assert!(t.test(b"013", 0) && !t.test(b"012", 0) && !t.test(b"ab", 0));
        let t = parse_byte_test("1,!,5,0").unwrap();
        assert!(t.test(&[4], 0) && !t.test(&[5], 0));
        let t = parse_byte_test("1,&,0x80,0").unwrap();
        assert!(t.test(&[0x81], 0) && !t.test(&[0x7f], 0));
        let t = parse_byte_test("2,=,3,0,bitmask 0x0ff0").unwrap();
        assert!(t.test(&[0x00, 0x30], 0) && !t.test(&[0x00, 0x03], 0));
        let t = parse_byte_test("3,>,99,0,string").unwrap();
        assert!(t.test(b"100", 0) && !t.test(b"099", 0));
        let t = parse_byte_test("2,=,255,0,string,hex").unwrap();
        assert!(t.test(b"ffz", 0) && !t.test(b"zz", 0));
        assert!(matches!(
            parse_byte_test("4,>,len,0"),
            Err(ByteError::Unsupported(_))
        ));
        assert!(matches!(
            parse_byte_test("4,>,1,0,dce"),
            Err(ByteError::Unsupported(_))
        ));
        for bad in [
            "5,>,1,0",
            "0,>,1,0",
            "2,~,1,0",
            "2,>,1",
            "2,>,1,0,string,big",
            "2,>,1,0,hex",
        ] {
            assert!(
                matches!(parse_byte_test(bad), Err(ByteError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn byte_jump_semantics() {
        let j = parse_byte_jump("1, 0").unwrap();
        assert_eq!(j.jump(&[2, 9, 9, 9], 0), Some(3));
        assert_eq!(j.jump(&[3, 9, 9], 0), None);
        let j = parse_byte_jump("1,0,relative,multiplier 2,post_offset -1").unwrap();
        assert_eq!(j.jump(&[7, 2, 0, 0, 0, 0], 1), Some(5));
        let j = parse_byte_jump("1,0,align").unwrap();
        assert_eq!(j.jump(&[1, 0, 0, 0, 0, 0, 0], 0), Some(5));
        let j = parse_byte_jump("1,0,from_beginning").unwrap();
        assert_eq!(j.jump(&[2, 0, 0], 0), Some(2));
        let j = parse_byte_jump("2,0,string,dec,from_end,post_offset -3").unwrap();
        assert_eq!(j.jump(b"00abc", 0), Some(2));
    }
}
