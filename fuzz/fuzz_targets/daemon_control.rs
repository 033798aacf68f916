//! Daemon control bodies (remote spawn, capability query): never panic; whatever decodes
//! re-encodes and decodes to the same value; a decoded spawn's host settings convert to a
//! runtime host configuration or are refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::DaemonControlMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = DaemonControlMessage::decode(data) {
        let again = message.encode().expect("decoded messages encode");
        assert_eq!(
            DaemonControlMessage::decode(&again).expect("re-encoding decodes"),
            message
        );
        if let DaemonControlMessage::Spawn(request) = &message {
            if let Ok(config) = netrun_runtime::daemon::HostConfig::from_wire(&request.host) {
                assert!(config.validate().is_ok());
            }
        }
    }
});
