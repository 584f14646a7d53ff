//! The dated AWS Lambda price table: parsed, validated, exact.
//!
//! Consumes the YAML of `collector/prices/aws-lambda-prices.yaml` (embedded with `include_str!`)
//! or an override file with the same schema; produces a [`PriceTable`] whose prices are integer
//! picodollars ([`Price`]), so that the cost model can do exact integer arithmetic and round only
//! once, at the cent. Unknown keys, negative or non-finite prices, prices finer than a picodollar,
//! unordered tiers and a missing unbounded last tier are errors with the YAML line where serde
//! knows it. Nothing here does I/O except [`PriceTable::from_file`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// The table shipped in the binary.
pub const EMBEDDED_PRICES_YAML: &str = include_str!("../../prices/aws-lambda-prices.yaml");

/// Picodollars per US dollar.
pub const PICO_PER_USD: u64 = 1_000_000_000_000;

/// Lambda's free ephemeral storage per function, MB.
pub const FREE_EPHEMERAL_STORAGE_MB: u32 = 512;

/// Errors loading or using a price table.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("price table: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("price table {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("price table: {0}")]
    Invalid(String),
    #[error("region {region:?} is not in the price table (known: {known})")]
    UnknownRegion { region: String, known: String },
}

/// A non-negative price in integer picodollars (10⁻¹² USD) per unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "f64")]
pub struct Price(pub u64);

impl TryFrom<f64> for Price {
    type Error = String;
    fn try_from(usd: f64) -> Result<Self, Self::Error> {
        if !usd.is_finite() || usd < 0.0 {
            return Err(format!(
                "price {usd} must be a finite, non-negative number of USD"
            ));
        }
        let pico = usd * PICO_PER_USD as f64;
        if pico > u64::MAX as f64 / 2.0 {
            return Err(format!("price {usd} is too large"));
        }
        let rounded = pico.round();
        // f64 carries ~16 significant digits; anything further from an integer than this is a
        // price with more than 12 decimals, which we refuse rather than silently round.
        if (pico - rounded).abs() > 1e-3 * rounded.max(1.0) {
            return Err(format!(
                "price {usd} has more than 12 decimals (picodollar precision)"
            ));
        }
        Ok(Price(rounded as u64))
    }
}

impl Price {
    pub fn usd(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / PICO_PER_USD;
        let frac = self.0 % PICO_PER_USD;
        let frac = format!("{frac:012}");
        let frac = frac.trim_end_matches('0');
        let frac = if frac.len() < 2 {
            format!("{frac:0<2}")
        } else {
            frac.to_string()
        };
        write!(f, "${whole}.{frac}")
    }
}

/// Instruction set architecture of a function.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Arm64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "x86_64" | "x86" | "amd64" => Ok(Arch::X86_64),
            "arm64" | "arm" | "aarch64" | "graviton" => Ok(Arch::Arm64),
            other => Err(format!("unknown architecture {other:?} (x86_64 or arm64)")),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Monthly free tier (per account, all regions, shared by both architectures).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FreeTier {
    pub requests_per_month: u64,
    pub gb_seconds_per_month: u64,
}

/// One on-demand duration tier: applies to cumulative monthly GB-s up to `up_to_gb_seconds`
/// (per region and architecture); the last tier has no bound.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    #[serde(default)]
    pub up_to_gb_seconds: Option<u64>,
    pub gb_second: Price,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchPrices {
    pub duration_tiers: Vec<Tier>,
    /// Per GB-s of configured provisioned concurrency while it is enabled.
    pub provisioned_concurrency_gb_second: Price,
    /// Per GB-s of duration of invocations served by provisioned environments.
    pub provisioned_duration_gb_second: Price,
}

/// Price items that can be flagged as not verified for a region.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceItem {
    Requests,
    Duration,
    ProvisionedConcurrency,
    /// The arm64 provisioned-concurrency prices (sourced separately from the x86 ones).
    ProvisionedConcurrencyArm64,
    EphemeralStorage,
}

impl PriceItem {
    pub fn as_str(self) -> &'static str {
        match self {
            PriceItem::Requests => "requests",
            PriceItem::Duration => "duration",
            PriceItem::ProvisionedConcurrency => "provisioned_concurrency",
            PriceItem::ProvisionedConcurrencyArm64 => "provisioned_concurrency_arm64",
            PriceItem::EphemeralStorage => "ephemeral_storage",
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegionPrices {
    pub request_per_million: Price,
    /// Per GB-s of ephemeral storage beyond the free 512 MB, over execution duration.
    pub ephemeral_storage_gb_second: Price,
    #[serde(default)]
    pub unverified: Vec<PriceItem>,
    pub x86_64: ArchPrices,
    pub arm64: ArchPrices,
}

impl RegionPrices {
    pub fn arch(&self, arch: Arch) -> &ArchPrices {
        match arch {
            Arch::X86_64 => &self.x86_64,
            Arch::Arm64 => &self.arm64,
        }
    }

    pub fn is_unverified(&self, item: PriceItem) -> bool {
        self.unverified.contains(&item)
    }
}

/// The whole table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    /// Date the figures were checked, `YYYY-MM-DD`.
    pub as_of: String,
    pub currency: String,
    pub free_tier: FreeTier,
    pub regions: BTreeMap<String, RegionPrices>,
}

impl PriceTable {
    /// The table compiled into the binary.
    pub fn embedded() -> Result<Self, PriceError> {
        Self::from_yaml(EMBEDDED_PRICES_YAML)
    }

    pub fn from_yaml(text: &str) -> Result<Self, PriceError> {
        let table: PriceTable = serde_yaml::from_str(text)?;
        table.validate()?;
        Ok(table)
    }

    pub fn from_file(path: &Path) -> Result<Self, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    pub fn region(&self, region: &str) -> Result<&RegionPrices, PriceError> {
        self.regions
            .get(region)
            .ok_or_else(|| PriceError::UnknownRegion {
                region: region.to_string(),
                known: self.regions.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    fn validate(&self) -> Result<(), PriceError> {
        let invalid = |m: String| Err(PriceError::Invalid(m));
        let date = self.as_of.as_bytes();
        let date_ok = date.len() == 10
            && date[4] == b'-'
            && date[7] == b'-'
            && date
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !date_ok {
            return invalid(format!("as_of {:?} is not a YYYY-MM-DD date", self.as_of));
        }
        if self.currency != "USD" {
            return invalid(format!(
                "currency {:?}: only USD is supported",
                self.currency
            ));
        }
        if self.regions.is_empty() {
            return invalid("no regions".into());
        }
        for (name, region) in &self.regions {
            for arch in Arch::ALL {
                let tiers = &region.arch(arch).duration_tiers;
                let Some((last, bounded)) = tiers.split_last() else {
                    return invalid(format!("{name}.{arch}: duration_tiers is empty"));
                };
                if last.up_to_gb_seconds.is_some() {
                    return invalid(format!(
                        "{name}.{arch}: the last duration tier must have no up_to_gb_seconds"
                    ));
                }
                let mut previous = 0u64;
                for tier in bounded {
                    match tier.up_to_gb_seconds {
                        Some(bound) if bound > previous => previous = bound,
                        Some(bound) => {
                            return invalid(format!(
                                "{name}.{arch}: tier bound {bound} GB-s is not above the previous one ({previous})"
                            ));
                        }
                        None => {
                            return invalid(format!(
                                "{name}.{arch}: only the last duration tier may be unbounded"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses_with_the_published_us_east_1_figures() {
        let t = PriceTable::embedded().unwrap();
        assert_eq!(t.free_tier.requests_per_month, 1_000_000);
        assert_eq!(t.free_tier.gb_seconds_per_month, 400_000);
        let r = t.region("us-east-1").unwrap();
        assert_eq!(r.request_per_million, Price(200_000_000_000));
        assert_eq!(r.ephemeral_storage_gb_second, Price(30_900));
        let x = &r.x86_64;
        assert_eq!(
            x.duration_tiers
                .iter()
                .map(|t| (t.up_to_gb_seconds, t.gb_second.0))
                .collect::<Vec<_>>(),
            vec![
                (Some(6_000_000_000), 16_666_700),
                (Some(15_000_000_000), 15_000_000),
                (None, 13_333_400)
            ]
        );
        assert_eq!(x.provisioned_concurrency_gb_second, Price(4_166_700));
        let a = &r.arm64;
        assert_eq!(a.duration_tiers[0].gb_second, Price(13_333_400));
        assert_eq!(a.duration_tiers[0].up_to_gb_seconds, Some(7_500_000_000));
        assert!(r.unverified.is_empty());
        for region in [
            "us-east-1",
            "us-west-2",
            "eu-west-1",
            "eu-central-1",
            "ap-southeast-1",
            "ap-northeast-1",
        ] {
            t.region(region).unwrap();
        }
        // Regional x86 provisioned concurrency and storage prices from AWS's calculator price
        // map; the arm64 provisioned-concurrency ones could not be sourced.
        let fra = t.region("eu-central-1").unwrap();
        assert!(fra.is_unverified(PriceItem::ProvisionedConcurrencyArm64));
        assert!(!fra.is_unverified(PriceItem::ProvisionedConcurrency));
        assert!(!fra.is_unverified(PriceItem::EphemeralStorage));
        assert_eq!(
            fra.x86_64.provisioned_concurrency_gb_second,
            Price(5_014_700)
        );
        assert_eq!(fra.x86_64.provisioned_duration_gb_second, Price(11_701_100));
        assert_eq!(fra.ephemeral_storage_gb_second, Price(36_700));
    }

    #[test]
    fn unknown_region_names_the_known_ones() {
        let t = PriceTable::embedded().unwrap();
        let e = t.region("mars-north-1").unwrap_err().to_string();
        assert!(e.contains("mars-north-1") && e.contains("us-east-1"), "{e}");
    }

    fn mutate(from: &str, to: &str) -> Result<PriceTable, PriceError> {
        assert!(EMBEDDED_PRICES_YAML.contains(from), "{from}");
        PriceTable::from_yaml(&EMBEDDED_PRICES_YAML.replacen(from, to, 1))
    }

    #[test]
    fn bad_tables_are_refused_with_a_reason() {
        let cases = [
            ("as_of: 2026-11-29", "as_of: yesterday", "YYYY-MM-DD"),
            ("currency: USD", "currency: EUR", "only USD"),
            (
                "request_per_million: 0.20",
                "request_per_million: -0.20",
                "non-negative",
            ),
            (
                "request_per_million: 0.20",
                "request_per_million: 0.0000000000001",
                "12 decimals",
            ),
            (
                "{ gb_second: 0.0000133334 }",
                "{ up_to_gb_seconds: 1, gb_second: 0.0000133334 }",
                "last duration tier",
            ),
            (
                "up_to_gb_seconds: 15000000000",
                "up_to_gb_seconds: 5000000000",
                "not above",
            ),
            (
                "request_per_million: 0.20",
                "request_per_milion: 0.20",
                "unknown field",
            ),
        ];
        for (from, to, why) in cases {
            let e = mutate(from, to).unwrap_err().to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
    }

    #[test]
    fn yaml_errors_carry_a_line_number() {
        let e = mutate("request_per_million: 0.20", "request_per_milion: 0.20")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn price_display_is_exact() {
        assert_eq!(Price(16_666_700).to_string(), "$0.0000166667");
        assert_eq!(Price(200_000_000_000).to_string(), "$0.20");
        assert_eq!(Price(30_900).to_string(), "$0.0000000309");
    }
}
