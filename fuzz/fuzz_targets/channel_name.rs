//! Channel name validation: never panics; the canonical form is a fixed point and hashes
//! the same as the input it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::ChannelName;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = ChannelName::new(text) {
        assert_eq!(name.as_str(), text.to_ascii_lowercase());
        let again = ChannelName::new(name.as_str()).expect("canonical form is valid");
        assert_eq!(again, name);
        assert_eq!(again.hash(), name.hash());
    }
});
