//! The CUDA devices the engine serves from (`serve --gpu-device 0,1,...`): each gets a VRAM tier
//! of its own per table, under its own `--gpu-budget`. A list is valid by construction: at least
//! one device, none twice. Parsed from the command line (`"0"`, `"0,1,2,3"`) and from the TOML
//! config (`gpu_device = 0` or `gpu_device = [0, 1]`), with an error naming the bad value.

use std::fmt;
use std::str::FromStr;

/// Why a device list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuDevicesError {
    /// No device at all.
    #[error("no GPU device listed (give one or more ordinals, e.g. 0 or 0,1)")]
    Empty,
    /// An empty item, as in `0,,1` or `0,`.
    #[error("GPU device list {list:?} has an empty item (ordinals separated by commas, e.g. 0,1)")]
    EmptyItem {
        /// The list given.
        list: String,
    },
    /// An item that is not a device ordinal.
    #[error("GPU device {item:?} in {list:?} is not a device ordinal (a number such as 0 or 1)")]
    NotANumber {
        /// The item.
        item: String,
        /// The list given.
        list: String,
    },
    /// A device listed more than once.
    #[error("GPU device {device} is listed twice in {list:?}")]
    Duplicate {
        /// The device.
        device: usize,
        /// The list given.
        list: String,
    },
}

/// The devices served, in the order given; the first also serves host requests (see
/// [`crate::engine::ServedTable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevices(Vec<usize>);

impl GpuDevices {
    /// One device.
    pub fn single(device: usize) -> Self {
        Self(vec![device])
    }

    /// `devices`, if there is at least one and none is listed twice.
    pub fn new(devices: Vec<usize>) -> Result<Self, GpuDevicesError> {
        if devices.is_empty() {
            return Err(GpuDevicesError::Empty);
        }
        for (k, d) in devices.iter().enumerate() {
            if devices[..k].contains(d) {
                return Err(GpuDevicesError::Duplicate {
                    device: *d,
                    list: join(&devices),
                });
            }
        }
        Ok(Self(devices))
    }

    /// The devices, in the order given.
    pub fn as_slice(&self) -> &[usize] {
        &self.0
    }

    /// The first device: the one host requests use.
    pub fn first(&self) -> usize {
        self.0[0]
    }

    /// True if `device` is served.
    pub fn contains(&self, device: usize) -> bool {
        self.0.contains(&device)
    }
}

impl Default for GpuDevices {
    /// Device 0.
    fn default() -> Self {
        Self::single(0)
    }
}

fn join(devices: &[usize]) -> String {
    devices
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for GpuDevices {
    /// `0,1`: the form `--gpu-device` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&join(&self.0))
    }
}

impl FromStr for GpuDevices {
    type Err = GpuDevicesError;

    /// `"0"` or `"0,1,2,3"` (spaces around items are allowed).
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.trim().is_empty() {
            return Err(GpuDevicesError::Empty);
        }
        let mut devices = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(GpuDevicesError::EmptyItem { list: list.into() });
            }
            let device = item.parse().map_err(|_| GpuDevicesError::NotANumber {
                item: item.into(),
                list: list.into(),
            })?;
            devices.push(device);
        }
        Self::new(devices).map_err(|e| match e {
            // Name the list as it was written.
            GpuDevicesError::Duplicate { device, .. } => GpuDevicesError::Duplicate {
                device,
                list: list.into(),
            },
            e => e,
        })
    }
}

impl<'de> serde::Deserialize<'de> for GpuDevices {
    /// A number (`gpu_device = 0`) or a list of numbers (`gpu_device = [0, 1]`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(usize),
            Many(Vec<usize>),
        }
        let devices = match OneOrMany::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "gpu_device: expected a device ordinal (0) or a list of them ([0, 1])",
            )
        })? {
            OneOrMany::One(device) => vec![device],
            OneOrMany::Many(devices) => devices,
        };
        Self::new(devices).map_err(|e| serde::de::Error::custom(format!("gpu_device: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order() {
        let d: GpuDevices = "0".parse().expect("one device");
        assert_eq!(d.as_slice(), &[0]);
        assert_eq!(d, GpuDevices::default());
        let d: GpuDevices = "0,1".parse().expect("two devices");
        assert_eq!(d.as_slice(), &[0, 1]);
        let d: GpuDevices = "3, 1,2 ,0".parse().expect("spaces are allowed");
        assert_eq!(d.as_slice(), &[3, 1, 2, 0]);
        assert_eq!(d.first(), 3);
        assert!(d.contains(2) && !d.contains(4));
        assert_eq!(d.to_string(), "3,1,2,0");
    }

    #[test]
    fn bad_lists_name_the_bad_value() {
        let err = |s: &str| s.parse::<GpuDevices>().expect_err(s);
        assert_eq!(
            err("0,0"),
            GpuDevicesError::Duplicate {
                device: 0,
                list: "0,0".into()
            }
        );
        assert!(
            err("0,1,1")
                .to_string()
                .contains("GPU device 1 is listed twice")
        );
        let e = err("x");
        assert!(matches!(&e, GpuDevicesError::NotANumber { item, .. } if item == "x"));
        assert!(e.to_string().contains("\"x\""), "{e}");
        assert!(matches!(err("0,-1"), GpuDevicesError::NotANumber { item, .. } if item == "-1"));
        assert!(matches!(err("0,,1"), GpuDevicesError::EmptyItem { .. }));
        assert!(matches!(err("0,"), GpuDevicesError::EmptyItem { .. }));
        assert_eq!(err(""), GpuDevicesError::Empty);
        assert_eq!(err(" "), GpuDevicesError::Empty);
        assert_eq!(GpuDevices::new(vec![]), Err(GpuDevicesError::Empty));
    }

    #[test]
    fn toml_takes_a_number_or_a_list() {
        #[derive(serde::Deserialize)]
        struct C {
            gpu_device: GpuDevices,
        }
        let c: C = toml::from_str("gpu_device = 0").expect("a number");
        assert_eq!(c.gpu_device.as_slice(), &[0]);
        let c: C = toml::from_str("gpu_device = [1, 0]").expect("a list");
        assert_eq!(c.gpu_device.as_slice(), &[1, 0]);
        for bad in [
            "gpu_device = [0, 0]",
            "gpu_device = []",
            "gpu_device = \"x\"",
        ] {
            let e = toml::from_str::<C>(bad).err().expect(bad).to_string();
            assert!(e.contains("gpu_device"), "{bad}: {e}");
        }
    }
}
