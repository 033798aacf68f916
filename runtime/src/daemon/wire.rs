//! The wire form of a [`HostConfig`] ([`HostSettings`]), for spawns placed on another node.

use std::time::Duration;

use netrun_messages::daemon::{HostSettings, SigningSettings};

use super::config::{ChainSigning, ConfigError, ErrorPolicy, HostConfig};

impl HostConfig {
    /// The wire form. Fails only if a field does not fit its wire width (a log byte bound
    /// above `u64`, a batch byte bound above `u32`, a delay above `u32` microseconds), which
    /// a validated configuration never has.
    pub fn to_wire(&self) -> Result<HostSettings, ConfigError> {
        let narrow = |_| ConfigError::Invalid("host config does not fit its wire form");
        let signing = match self.signing {
            ChainSigning::PerEvent => SigningSettings::PerEvent,
            ChainSigning::Batch {
                max_events,
                max_bytes,
                max_delay,
            } => SigningSettings::Batch {
                max_events,
                max_bytes: u32::try_from(max_bytes).map_err(narrow)?,
                max_delay_micros: u32::try_from(max_delay.as_micros()).map_err(narrow)?,
            },
        };
        Ok(HostSettings {
            signing,
            snapshot_every: self.snapshot_every,
            log_events: u32::try_from(self.log_events).map_err(narrow)?,
            log_bytes: u64::try_from(self.log_bytes).map_err(narrow)?,
            continue_on_error: self.error_policy == ErrorPolicy::Continue,
        })
    }

    /// The configuration a peer asked for, validated against every bound.
    pub fn from_wire(settings: &HostSettings) -> Result<Self, ConfigError> {
        let too_big = |_| ConfigError::Invalid("host config exceeds this platform");
        let signing = match settings.signing {
            SigningSettings::PerEvent => ChainSigning::PerEvent,
            SigningSettings::Batch {
                max_events,
                max_bytes,
                max_delay_micros,
            } => ChainSigning::Batch {
                max_events,
                max_bytes: usize::try_from(max_bytes).map_err(too_big)?,
                max_delay: Duration::from_micros(u64::from(max_delay_micros)),
            },
        };
        let config = Self {
            signing,
            snapshot_every: settings.snapshot_every,
            log_events: usize::try_from(settings.log_events).map_err(too_big)?,
            log_bytes: usize::try_from(settings.log_bytes).map_err(too_big)?,
            error_policy: if settings.continue_on_error {
                ErrorPolicy::Continue
            } else {
                ErrorPolicy::Restart
            },
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_per_event_round_trip() {
        for config in [HostConfig::default(), HostConfig::default().per_event()] {
            let wire = config.to_wire().expect("fits");
            assert_eq!(HostConfig::from_wire(&wire).expect("valid"), config);
        }
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        let mut wire = HostConfig::default().to_wire().expect("fits");
        wire.log_events = 0;
        assert!(HostConfig::from_wire(&wire).is_err());
        let mut wire = HostConfig::default().to_wire().expect("fits");
        wire.signing = SigningSettings::Batch {
            max_events: 0,
            max_bytes: 1,
            max_delay_micros: 1,
        };
        assert!(HostConfig::from_wire(&wire).is_err());
        wire.signing = SigningSettings::Batch {
            max_events: 1,
            max_bytes: 1,
            max_delay_micros: 5_000_000,
        };
        assert!(HostConfig::from_wire(&wire).is_err());
    }
}
