//! The MQTT discovery payload (announce / goodbye): never panic, whatever decodes
//! re-encodes to the same bytes, and verification is total.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::mqtt_announce::MqttAnnounce;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = MqttAnnounce::decode(data) {
        assert_eq!(msg.to_vec(), data);
        assert_eq!(msg.encoded_len(), data.len());
        // A random payload almost never verifies; the check must still be total.
        let _ = msg.verify();
    }
});
