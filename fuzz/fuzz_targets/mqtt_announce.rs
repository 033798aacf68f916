//! MQTT discovery input: the signed payload (announce / goodbye) never panics, whatever
//! decodes re-encodes to the same bytes, and verification is total; the mesh fingerprint
//! read from a topic or TXT record parses only from its exact hex form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::MeshFingerprint;
use netrun_messages::mqtt_announce::MqttAnnounce;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = MqttAnnounce::decode(data) {
        assert_eq!(msg.to_vec(), data);
        assert_eq!(msg.encoded_len(), data.len());
        // A random payload almost never verifies; the check must still be total.
        let _ = msg.verify();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(fp) = MeshFingerprint::from_hex(text) {
            assert_eq!(fp.to_hex(), text.to_ascii_lowercase());
        }
    }
});
