//! The controller's monitor config: `{"devices": ["aa:bb:cc:dd:ee:ff", …]}`.

use gw_packet::{Mac, mac_string, parse_mac};
use serde::Deserialize;

use crate::MonitorError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    devices: Vec<String>,
}

/// Parse and check the config; the devices in the order given.
pub(crate) fn parse(json: &str) -> Result<Vec<Mac>, MonitorError> {
    let file: ConfigFile = serde_json::from_str(json).map_err(MonitorError::Config)?;
    file.devices
        .iter()
        .enumerate()
        .map(|(index, value)| {
            parse_mac(value).ok_or_else(|| MonitorError::InvalidMac {
                index,
                value: value.clone(),
            })
        })
        .collect()
}

/// A device MAC must be unicast (group bit clear) and not all zeros.
pub(crate) fn check_mac(mac: &Mac) -> Result<(), MonitorError> {
    if mac[0] & 1 != 0 || *mac == [0; 6] {
        return Err(MonitorError::NotDeviceMac(mac_string(mac)));
    }
    Ok(())
}
