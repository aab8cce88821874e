//! Framing for the software monitor's Unix socket.
//!
//! Request frame: `len: u32 LE` (bytes after this field), `function: u16 LE`, body.
//! Response frame: `len: u32 LE`, `status: i32 LE`, body (empty unless status is 0).

use crate::{AbiError, Function, MAX_REQUEST, MAX_RESPONSE};

/// Bytes of a request frame before the body.
pub const REQUEST_HEADER: usize = 6;
/// Bytes of a response frame before the body.
pub const RESPONSE_HEADER: usize = 8;

/// Write a request frame header for `body_len` bytes of body.
pub fn request_header(function: Function, body_len: usize) -> [u8; REQUEST_HEADER] {
    let mut h = [0u8; REQUEST_HEADER];
    h[..4].copy_from_slice(&((body_len + 2) as u32).to_le_bytes());
    h[4..].copy_from_slice(&(function as u16).to_le_bytes());
    h
}

/// Parse the length field of a request frame: the number of bytes that follow it.
pub fn request_len(prefix: [u8; 4]) -> Result<usize, AbiError> {
    let n = u32::from_le_bytes(prefix) as usize;
    if !(2..=MAX_REQUEST + 2).contains(&n) {
        return Err(AbiError::InvalidParameter);
    }
    Ok(n)
}

/// Split a request frame's payload (after the length) into the raw function number and body.
pub fn split_request(payload: &[u8]) -> Result<(u16, &[u8]), AbiError> {
    if payload.len() < 2 {
        return Err(AbiError::Malformed);
    }
    Ok((u16::from_le_bytes([payload[0], payload[1]]), &payload[2..]))
}

/// Write a response frame header.
pub fn response_header(status: Result<usize, AbiError>) -> [u8; RESPONSE_HEADER] {
    let (code, len) = match status {
        Ok(n) => (0i32, n),
        Err(e) => (e.code(), 0),
    };
    let mut h = [0u8; RESPONSE_HEADER];
    h[..4].copy_from_slice(&((len + 4) as u32).to_le_bytes());
    h[4..].copy_from_slice(&code.to_le_bytes());
    h
}

/// Parse a response header: body length, or the error the monitor returned.
pub fn parse_response_header(
    h: [u8; RESPONSE_HEADER],
) -> Result<Result<usize, AbiError>, AbiError> {
    let n = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let code = i32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if !(4..=MAX_RESPONSE + 4).contains(&n) {
        return Err(AbiError::Malformed);
    }
    if code < 0 {
        return Ok(Err(
            AbiError::from_code(code as i64).unwrap_or(AbiError::NotSupported)
        ));
    }
    Ok(Ok(n - 4))
}
