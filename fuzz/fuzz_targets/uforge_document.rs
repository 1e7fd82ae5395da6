//! Request documents (XML or JSON) of the UForge face: never panic, whatever the bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use satchel_api_uforge::docs::{ContainerTemplateIn, ImageIn, MySoftwareIn, SoftwareArtifactIn};
use satchel_api_uforge::wire::parse_body;

fuzz_target!(|data: &[u8]| {
    for ct in ["application/xml", "application/json"] {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
        let _ = parse_body::<MySoftwareIn>(&h, data, "mySoftware");
        let _ = parse_body::<SoftwareArtifactIn>(&h, data, "softwareArtifact");
        let _ = parse_body::<ContainerTemplateIn>(&h, data, "containerTemplate");
        let _ = parse_body::<ImageIn>(&h, data, "image");
    }
});
