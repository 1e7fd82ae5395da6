//! Import descriptors (bundle/template YAML or JSON, manifest.json) checked against a fixed set of
//! members: never panic, whatever the document says.
#![no_main]
use libfuzzer_sys::fuzz_target;
use satchel_archive::reader::{MemberKind, ReadMember, ReadSummary};
use satchel_domain::import::{
    check_bundle, check_template, parse_bundle, parse_manifest, parse_template, plan_import,
};

fn member(path: &str, kind: MemberKind, size: u64) -> ReadMember {
    ReadMember {
        path: path.into(),
        kind,
        size,
        sha256: [size as u8; 32],
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, doc)) = data.split_first() else {
        return;
    };
    let members = vec![
        member("bundles/b/1/a.sh", MemberKind::File, 3),
        member("bundles/b/1/conf", MemberKind::Dir, 0),
        member("bundles/b/1/conf/x.cfg", MemberKind::File, 5),
        member("bundles/b/LICENSE", MemberKind::File, 7),
        member("config/boot.sh", MemberKind::File, 2),
        member("logo/l.png", MemberKind::File, 1),
    ];
    let name = [
        "bundle.yml",
        "bundle.json",
        "template.yml",
        "template.json",
        "manifest.json",
    ][mode as usize % 5];
    let manifest = parse_manifest(doc).ok();
    match name {
        "bundle.yml" | "bundle.json" => {
            if let Ok(d) = parse_bundle(name, doc) {
                let _ = check_bundle(&d, &members, manifest.as_ref());
            }
        }
        "template.yml" | "template.json" => {
            if let Ok(d) = parse_template(name, doc) {
                let _ = check_template(&d, &members, manifest.as_ref());
            }
        }
        _ => {}
    }
    let mut summary = ReadSummary {
        members,
        ..Default::default()
    };
    summary.docs.insert(name.to_string(), doc.to_vec());
    let _ = plan_import(&summary);
});
